"""Quantitative evaluation of explanation maps (ML core: no web layer, no database)."""
