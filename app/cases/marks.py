"""Facts about cases that domains above the cases domain know: which cases are *rated* (the case list's
filter). The ratings domain registers its query (:mod:`app.ratings.hooks`); without it nothing is rated."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Select

RatedCases = Callable[[], Select[tuple[str]]]
_rated: list[RatedCases] = []


def register_rated_cases(query: RatedCases) -> None:
    """``query()`` selects the ids of rated cases (one registration; a re-import replaces it)."""
    _rated[:] = [query]


def rated_case_ids() -> Select[tuple[str]] | None:
    return _rated[0]() if _rated else None
