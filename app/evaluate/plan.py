"""What a scorecard run costs, phase by phase: the progress weights and the expected duration.

Why: the run's phases differ by orders of magnitude (a sanity cascade recomputes every map 14 times on a few
faces; the per-face pass computes each once on every face), so a fixed share per phase makes the progress bar
lie. Costs are counted in *passes* (one forward + backward of one image, the explanation methods' own cost
unit, :attr:`app.explain.methods.base.Method.passes`; a forward-only image counts ``FORWARD`` of a pass), and
turned into seconds by :data:`COST_MODEL`, fitted by ``bench/bench_evaluate.py --fit`` on the machine it
ran on (seconds per pass at 1 and 2 threads, and the per-map seconds of the metrics that are not passes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COST_MODEL", "Phases", "expected_seconds", "map_passes", "phase_costs"]

#: Cost of a forward-only image relative to one forward + backward pass.
FORWARD = 1 / 3
#: Forward images per map: deletion + insertion (4 curves × 17 fractions), ROAD (2 × 6), and the signed order's
#: deletion (2 × 17) for signed methods.
CURVE_IMAGES = 68
SIGNED_IMAGES = 34
ROAD_IMAGES = 12
#: Faithfulness correlation: 100 subsets + the image, per face, shared by every method.
CORRELATION_IMAGES = 101
#: Where the bench writes the fitted cost model.
COST_MODEL_PATH = Path(__file__).with_name("cost_model.json")


def _load_cost_model() -> dict[str, Any]:
    try:
        return json.loads(COST_MODEL_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


#: Fitted by the bench (``seconds_per_pass``, ``metric_seconds_per_map``, machine and load); empty if never fitted.
COST_MODEL: dict[str, Any] = _load_cost_model()


def map_passes(methods: Sequence[str]) -> float:
    """Passes to compute the maps of ``methods`` for one face in one call (shared passes counted once)."""
    from app.explain.registry import get_method, normalise_params

    keys: dict[str, float] = {}
    for method in methods:
        keys.update(get_method(method).passes(normalise_params(method, None)))
    return float(sum(keys.values()))


def phase_costs(methods: Sequence[str], *, n_faces: int, sanity_faces: int, sanity_methods: Sequence[str],
                independent: bool, random_logit: bool, robustness_samples: int, similarity_methods: Sequence[str],
                step_rule: bool, independent_methods: Sequence[str] | None = None) -> dict[str, float]:
    """Expected passes of each phase of :func:`app.evaluate.scorecard.evaluate_model`."""
    from app.explain.registry import METHODS

    signed = sum(1 for m in methods if METHODS[m].signed)
    per_face = (map_passes(methods) + FORWARD * (CURVE_IMAGES * len(methods) + SIGNED_IMAGES * signed
                                                 + ROAD_IMAGES * len(methods) + CORRELATION_IMAGES))
    costs = {"faces": n_faces * per_face}
    if step_rule:  # 100 + 200 + 400 + 800 steps in the worst case; measured runs stop at 400 or 800
        costs["step_rule"] = 1500.0
    if similarity_methods:
        costs["similarity"] = 2 * n_faces * map_passes(similarity_methods)
    if sanity_faces:
        networks = 7 + (1 if random_logit else 0)
        costs["sanity"] = networks * sanity_faces * map_passes(sanity_methods)
        indep = sanity_methods if independent_methods is None else independent_methods
        if independent and indep:
            costs["sanity"] += 6 * sanity_faces * map_passes(indep)
    if robustness_samples:
        costs["robustness"] = robustness_samples * sanity_faces * map_passes(methods)
    return costs


def expected_seconds(costs: Mapping[str, float], threads: int = 2) -> float | None:
    """Seconds the phases should take on the bench's machine when idle (None until the bench has fitted it)."""
    per_pass = COST_MODEL.get("seconds_per_pass", {}).get(str(threads))
    if per_pass is None:
        return None
    return float(sum(costs.values()) * per_pass)


class Phases:
    """Shares one progress bar out over phases by their expected cost, and times each phase."""

    def __init__(self, costs: Mapping[str, float], progress: Callable[[float, str], None] | None) -> None:
        total = sum(costs.values()) or 1.0
        self._start: dict[str, float] = {}
        self._width: dict[str, float] = {}
        at = 0.0
        for name, cost in costs.items():
            self._start[name], self._width[name] = at, cost / total
            at += cost / total
        self._report = progress or (lambda fraction, message: None)
        self._began: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._last: str | None = None

    def _enter(self, name: str) -> None:
        now = time.perf_counter()
        if name not in self._began:
            if self._last is not None and self._last not in self._ended:
                self._ended[self._last] = now
            self._began[name] = now
            self._last = name

    def reporter(self, name: str) -> Callable[[float, str], None]:
        """``(fraction of the phase, message)`` → the run's progress."""
        self._enter(name)

        def report(fraction: float, message: str) -> None:
            self._enter(name)
            self._report(self._start.get(name, 1.0) + self._width.get(name, 0.0) * min(1.0, fraction), message)
        return report

    def fraction(self, name: str, message: str) -> Callable[[float], None]:
        reporter = self.reporter(name)
        self._enter(name)
        return lambda f: reporter(f, message)

    def done(self) -> None:
        if self._last is not None and self._last not in self._ended:
            self._ended[self._last] = time.perf_counter()
        self._report(1.0, "done")

    def seconds(self) -> dict[str, float]:
        return {name: round(self._ended.get(name, time.perf_counter()) - began, 3)
                for name, began in self._began.items()}
