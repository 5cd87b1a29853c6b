"""A member's progress through a study, and where to resume.

The same shape serves every kind of study: per case, how many of its items the member has done and how many
can be done now (a rating study's computed maps; an attention study's one viewing per case), plus the cases
still being prepared. Resume goes to the first case with something left to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.studies.models import StudyCase


@dataclass
class Progress:
    rated: int  # items of the study this member has done at least once (available items only)
    total: int  # items that can be done: e.g. computed maps; failed and unavailable maps do not count
    pending: int = 0  # items still being prepared: once ready they count too
    per_case: dict[str, int] = field(default_factory=dict)  # case id → items done
    done_per_case: dict[str, int] = field(default_factory=dict)  # case id → items that can be done
    pending_cases: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.rated >= self.total and self.pending == 0

    def case_total(self, case_id: str) -> int:
        return self.done_per_case.get(case_id, 0)

    def first_open(self, cases: Sequence[StudyCase]) -> StudyCase | None:
        """The first case with an available item this member has not done; else the first still being prepared."""
        for case in cases:
            if self.per_case.get(case.case_id, 0) < self.done_per_case.get(case.case_id, 0):
                return case
        return next((case for case in cases if case.case_id in self.pending_cases), None)

    def first_open_position(self, cases: Sequence[StudyCase]) -> int | None:
        case = self.first_open(cases)
        return case.position if case else None

    def to_dict(self) -> dict[str, Any]:
        return {"rated": self.rated, "total": self.total, "pending": self.pending, "complete": self.complete}


def all_complete(member_ids: Sequence[int], progress_of: Callable[[int], Progress]) -> bool:
    """True when the study has members and every one of them is complete."""
    return bool(member_ids) and all(progress_of(member_id).complete for member_id in member_ids)
