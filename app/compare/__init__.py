"""Comparing two faces: similarity maps of a case against another case, a gallery image or a centroid."""
