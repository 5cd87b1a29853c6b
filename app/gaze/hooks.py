"""What the gaze domain registers with the cases domain: once an erasure has committed, this process forgets
the gaze results computed with the case's fixations (other processes' entries expire, results_cache.TTL_S)."""

from __future__ import annotations

from app.cases.erasure import register_erasure
from app.gaze.results_cache import forget

register_erasure("gaze", after_commit=forget)
