"""Clinical evaluation of attribution maps: rating studies (blinded by default), ad-hoc ratings, statistics."""
