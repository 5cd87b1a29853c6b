"""What other domains add to a case's ranking, by registration (predictions imports no higher domain).

* *reference sources* give faces beyond the model's gallery file — the matching domain gives the confirmed
  cases shared for matching — as a second :class:`~app.nets.gallery.Gallery` and the syndromes it needs.
  They are read *before* the forward pass (no request holds a connection while it computes).
* *run hooks* see every stored ranking with its result — matching stores the case's embeddings per model
  version from it, so a case never has to be encoded twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.nets.card import Label
from app.nets.gallery import Gallery
from app.nets.registry import LoadedModel

if TYPE_CHECKING:
    from app.cases.models import Case
    from app.nets.predict import PredictionResult


@dataclass(frozen=True, eq=False)
class References:
    """A second gallery whose label indices index ``syndromes`` (the model's syndromes first)."""

    gallery: Gallery | None
    syndromes: tuple[Label, ...]


ReferenceSource = Callable[[Session, LoadedModel, "str | None"], References | None]
RunHook = Callable[[Session, "Case", LoadedModel, "PredictionResult"], None]

_sources: list[ReferenceSource] = []
_hooks: list[RunHook] = []


def register_reference_source(source: ReferenceSource) -> ReferenceSource:
    if source not in _sources:
        _sources.append(source)
    return source


def register_run_hook(hook: RunHook) -> RunHook:
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def references_for(session: Session, model: LoadedModel, *, exclude_case: str | None = None) -> References | None:
    """The registered sources' faces for ranking (one source today; a second one would be merged here).
    ``exclude_case``: the case being ranked never matches itself."""
    found = [r for r in (source(session, model, exclude_case) for source in _sources) if r is not None]
    if len(found) > 1:
        raise RuntimeError("several reference sources are registered; merge them before ranking")
    return found[0] if found else None


def run_hooks(session: Session, case: Case, model: LoadedModel, result: PredictionResult) -> None:
    for hook in _hooks:
        hook(session, case, model, result)
