"""Per-image random streams, keyed so that any single image can be regenerated on its own.

Every image draws from ``default_rng(SeedSequence([seed, class_key, index, stream]))``. Keying by a hash
of the class *id* (not its index) means that adding a class, or changing counts, imbalance or worker
count, leaves every other image byte-identical. Separate ``stream`` numbers keep decisions that are not
part of the face (the shortcut cue, the train/test split) from shifting the face's random draws: the
same person is drawn whether or not a shortcut is configured.
"""

from __future__ import annotations

import zlib

import numpy as np

STREAM_FACE = 0
STREAM_SHORTCUT = 1
STREAM_SPLIT = 2


def class_key(class_id: str) -> int:
    """A stable 32-bit number for a class id (crc32: the same in every process and Python version)."""
    return zlib.crc32(class_id.encode("utf-8"))


def image_rng(seed: int, class_id: str, index: int, stream: int = STREAM_FACE) -> np.random.Generator:
    """The random generator of one image's ``stream``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), class_key(class_id), int(index), stream]))


def class_rng(seed: int, class_id: str, stream: int) -> np.random.Generator:
    """A generator for per-class decisions (the train/test split)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), class_key(class_id), stream]))
