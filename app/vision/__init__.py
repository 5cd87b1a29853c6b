"""Photo intake, face detection and alignment.

Pure numpy / OpenCV / Pillow: nothing here knows about the web layer or the database, so the CLI, the
workers and the web app share it. Entry point: :func:`app.vision.pipeline.process_photo`.

Modules: ``errors`` (IntakeError and the contract's codes), ``sniff`` (file type from content),
``intake`` (decode, orient, colour-manage, de-identify), ``detect`` (YuNet and roll correction),
``align`` (similarity fit onto the ArcFace template), ``geometry`` and ``warp`` (shared 2-D helpers).
"""
