"""What the gaze domain registers with the cases domain: an erasure cancels the pending imports that name the
case and removes their stored files (:func:`app.gaze.import_jobs.purge_pending_imports`); once it has
committed, this process forgets the gaze results computed with the case's fixations (other processes' entries
expire, results_cache.TTL_S)."""

from __future__ import annotations

from app.cases.erasure import register_erasure
from app.gaze.import_jobs import purge_pending_imports
from app.gaze.results_cache import forget

register_erasure("gaze", purge=purge_pending_imports, after_commit=forget)
