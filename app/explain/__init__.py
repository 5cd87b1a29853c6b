"""Attribution maps for one aligned face: methods, the engine that computes a panel, and rendering.

Pure torch / numpy (and matplotlib for figures): nothing here imports the web layer or the database.
Maps are float32 arrays in aligned 112x112 coordinates, signed where the method is signed; rendering
(colormaps, overlays, the warp back onto the full photo, figures) is separate from computing.

Computing: :mod:`.registry` lists the methods (ids, labels, reductions, parameters and their validation),
:mod:`.methods` holds one small module per method or family, :mod:`.rules` teaches Captum's guided
backprop, deconvolution and DeepLIFT about PReLU, and :mod:`.engine` (:class:`~.engine.Explainer`) runs a
panel on a private copy of the network, sharing passes between methods and streaming maps as they finish.
"""
