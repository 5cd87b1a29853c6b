"""The study framework shared by rating and attention studies (membership, orders, progress, closing, blinding,
exports): one set of code, so the two kinds of study cannot drift apart in their access rules."""
