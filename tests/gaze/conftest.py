"""Fixtures of the gaze tests."""

from __future__ import annotations

import pytest

from app.synth.generate import generate_one


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    """Two generated faces (syn_a, syn_c): the cases the fixation files point at."""
    return [generate_one(seed=777 + i, class_id=cls, index=0, severity=1.0).jpeg
            for i, cls in enumerate(["syn_a", "syn_c"])]
