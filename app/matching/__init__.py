"""Matching (issue 22): confirmed cases shared for matching, case embeddings per model version, similar
patients and matches between unsolved cases, and the measured meaning of the match threshold."""
