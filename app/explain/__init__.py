"""Attribution maps for one aligned face: methods, the engine that computes a panel, and rendering.

Pure torch / numpy (and matplotlib for figures): nothing here imports the web layer or the database.
Maps are float32 arrays in aligned 112x112 coordinates, signed where the method is signed; rendering
(colormaps, overlays, the warp back onto the full photo, figures) is separate from computing.
"""
