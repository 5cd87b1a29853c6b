"""Synthetic dysmorphology faces with ground-truth landmarks and masks.

No public syndrome-face data exists, so the demo model is trained on faces whose dysmorphic features we
control; knowing which pixels a feature changed also gives explanation maps a ground truth.

Modules, from data to disk:
``regions`` (the facial region vocabulary, on the aligned template; numpy only), ``classes`` (synthetic
syndromes, their features and HPO terms), ``seeding`` (per-image random streams), ``params`` (a person,
pose and scene drawn from a stream), ``geometry`` (contours and landmarks), ``paint``/``frame``/``face``/
``hair``/``accessories``/``scene`` (the renderer), ``render`` (one photo + ground truth), ``generate``
(``generate_one``), ``dataset`` (``write_dataset``), ``command`` (the CLI entry).

The public names below are imported lazily, so ``import app.synth.regions`` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "generate_one": "app.synth.generate",
    "SynthFace": "app.synth.generate",
    "ShortcutSpec": "app.synth.generate",
    "write_dataset": "app.synth.dataset",
    "CLASSES": "app.synth.classes",
    "REGIONS": "app.synth.regions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'app.synth' has no attribute {name!r}")
