"""Confirmed diagnoses of cases: an append-only history; the newest row is the current diagnosis."""
