"""Region concordance: does a map put its mass where the clinician saw the anomaly?

For one attribution map and the facial regions whose HPO terms the clinician entered (the shared region
vocabulary, :mod:`app.synth.regions`: "Hypertelorism" → eyes), the **share** of the map's positive relevance
inside the union of those regions, against the union's **area share** of the aligned crop — the share a map
spreading its relevance evenly would get, i.e. the chance level. ``lift = share / area share``: 1 is chance,
above 1 the map looks where the clinician did. Positive relevance, as the relevance-mass accuracy of
:mod:`app.evaluate.localisation` (the part of a signed map that speaks *for* the target).

Over the synthetic benchmark the entered terms are the face's true facial terms (its syndrome's features),
so :class:`Accumulator` gives, per method, the mean share with its bootstrap interval beside the mean area
share: the metric with its chance level. Arrays in, plain results out (no web, no database).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from app.synth.regions import REGION_IDS, region_mask, regions_for_hpo

__all__ = ["Accumulator", "Concordance", "class_regions", "region_concordance", "regions_for_terms"]


@dataclass(frozen=True)
class Concordance:
    regions: tuple[str, ...]
    share: float  # positive relevance in the regions / all positive relevance
    area_share: float  # the regions' share of the crop: the chance level
    lift: float  # share / area_share

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["regions"] = list(self.regions)
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in data.items()}


def regions_for_terms(term_ids: Iterable[str]) -> list[str]:
    """Region ids listing any of these HPO terms directly (the caller resolves ancestors when it can:
    the web app passes the regions :func:`app.phenotypes.ontology.region_ids_for_terms` chose)."""
    found = {r for t in term_ids for r in regions_for_hpo(t)}
    return [r for r in REGION_IDS if r in found]


def class_regions(class_id: str) -> list[str]:
    """The regions of a synthetic class's true facial terms (what a perfect clinician would enter)."""
    from app.synth.classes import get_class

    return regions_for_terms(term.id for term in get_class(class_id).hpo)


def region_concordance(attribution: np.ndarray, regions: Sequence[str]) -> Concordance | None:
    """The concordance of one map (None without regions or without positive relevance: undefined)."""
    values = np.asarray(attribution, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"expected a square 2-D map, got shape {values.shape}")
    regions = tuple(dict.fromkeys(regions))
    if not regions:
        return None
    union = np.zeros(values.shape, dtype=bool)
    for region in regions:
        union |= region_mask(region, values.shape[0])
    positive = np.clip(values, 0.0, None)
    total = positive.sum()
    if total <= 0 or not union.any():
        return None
    share = float(positive[union].sum() / total)
    area = float(union.mean())
    return Concordance(regions=regions, share=share, area_share=area, lift=share / area)


class Accumulator:
    """Collects one method's concordances over benchmark faces; ``summary()`` gives mean share with its
    95% bootstrap interval, the mean area share (chance) and the mean lift with its interval."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.values: dict[str, list[Concordance]] = defaultdict(list)

    def add(self, method: str, attribution: np.ndarray, class_id: str) -> Concordance | None:
        result = region_concordance(attribution, class_regions(class_id))
        if result is not None:
            self.values[method].append(result)
        return result

    def summary(self) -> dict[str, Any]:
        from app.evaluate.localisation import bootstrap_ci

        out = {}
        for method, items in self.values.items():
            share = bootstrap_ci([c.share for c in items], seed=self.seed)
            lift = bootstrap_ci([c.lift for c in items], seed=self.seed)
            out[method] = {"n": len(items), "share": _rounded(share.to_dict()),
                           "chance": round(float(np.mean([c.area_share for c in items])), 6),
                           "lift": _rounded(lift.to_dict())}
        return out


def _rounded(data: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in data.items()}
