"""The gaze results, computed once per state of the data (the results page and CSV read them on every view).

Why: the comparison behind the results page (every method against every group, the leave-one-participant-out
ceiling, group against group, bootstrap intervals) takes seconds — about 6 s for 40 cases x 20 participants x
10 methods on 2 cores (bench/bench_gaze.py) — and the page, the JSON and the CSV all ask for it. The numbers change
only when the data do, so they are kept per selection and *fingerprint* of the data: the fixations and imports
(count, newest), the participants and their groups, and the stored maps of the cases with fixations (count,
newest). A changed fingerprint drops every entry (nothing stale is ever served, and nothing derived from erased
data stays behind longer than the next look-up); erasure clears the cache of its own process at once
(:func:`forget`), and entries expire after :data:`TTL_S` in any process, so other workers let go of it too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cases.storage import PhotoStore
from app.explanations.models import Explanation
from app.gaze import results
from app.gaze.models import Fixation, GazeImport, Participant
from app.jobs.models import DONE

__all__ = ["MAX_ENTRIES", "TTL_S", "cached_results", "fingerprint", "forget", "stats"]

#: Selections kept at once (study x angle x q a researcher flips between).
MAX_ENTRIES = 16
#: Seconds an entry lives, whatever happens: bounds how long another process holds numbers of erased cases.
TTL_S = 600.0

_lock = threading.Lock()
_entries: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any]]] = OrderedDict()
_fingerprint: str | None = None
_stats = {"hits": 0, "computed": 0}


def fingerprint(session: Session) -> str:
    """A digest of everything the results read; any import, erasure, group change or new map changes it."""
    fixations = session.execute(select(func.count(Fixation.id), func.max(Fixation.id))).one()
    imports = session.execute(select(func.count(GazeImport.id), func.max(GazeImport.created_at))).one()
    people = session.execute(select(Participant.id, Participant.group).order_by(Participant.id)).all()
    with_gaze = select(Fixation.case_id).distinct()
    maps = session.execute(select(func.count(Explanation.id), func.max(Explanation.finished_at))
                           .where(Explanation.case_id.in_(with_gaze), Explanation.state == DONE)).one()
    database = session.get_bind().url.render_as_string(hide_password=True)  # two apps in one process never mix
    text = repr((database, tuple(fixations), tuple(imports), [tuple(p) for p in people], tuple(maps)))
    return hashlib.sha256(text.encode()).hexdigest()


def cached_results(session: Session, *, store: PhotoStore, selection: results.Selection) -> dict[str, Any]:
    """:func:`app.gaze.results.compute` for ``selection``, reused while the data's fingerprint is unchanged.

    Callers must treat the answer as read-only (it is shared between requests)."""
    global _fingerprint
    current = fingerprint(session)
    key = (selection.study_id, selection.angle_deg, selection.q)
    now = time.monotonic()
    with _lock:
        if current != _fingerprint:
            _entries.clear()
            _fingerprint = current
        for stale in [k for k, (at, _) in _entries.items() if now - at > TTL_S]:
            del _entries[stale]
        hit = _entries.get(key)
        if hit is not None:
            _entries.move_to_end(key)
            _stats["hits"] += 1
            return hit[1]
    result = results.compute(session, store=store, selection=selection)  # outside the lock: seconds of work
    with _lock:
        _stats["computed"] += 1
        if current == _fingerprint:  # the data did not change meanwhile
            _entries[key] = (now, result)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
    return result


def forget() -> None:
    """Drop every cached result (erasure: a case's gaze numbers must not outlive it)."""
    global _fingerprint
    with _lock:
        _entries.clear()
        _fingerprint = None


def stats() -> dict[str, int]:
    """Hits and computations so far in this process (tests and the operator's curiosity)."""
    with _lock:
        return dict(_stats)
