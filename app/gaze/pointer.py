"""Pseudo-fixations from a restricted-focus viewer (no tracker): pointer dwell and clicks.

BubbleView (Kim et al., ACM TOCHI 2017) showed that where people move a sharp window over a blurred image,
or click to reveal bubbles, approximates where they fixate. Two recordings:

* ``window`` — the viewer samples the sharp window's centre (pointer or arrow keys) every ~50 ms. Samples
  are grouped into dwells by the dispersion-threshold rule (I-DT, Salvucci & Goldberg 2000): a run of samples
  whose x-extent plus y-extent stays within ``dispersion`` photo pixels for at least ``min_ms`` is one
  pseudo-fixation at the run's mean, lasting the run's time.
* ``bubbles`` — each click (or Enter/Space) reveals a bubble: one pseudo-fixation at the click, lasting until
  the next click or the end of the viewing (a bubble stays open while the participant looks at it).

Pure functions on plain lists; positions are photo pixels, times ms from the start of the viewing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Sample = tuple[float, float, float]  # t_ms, x, y


@dataclass(frozen=True)
class PseudoFixation:
    x: float
    y: float
    onset_ms: float
    duration_ms: float


def dwell_fixations(samples: Sequence[Sample], *, dispersion: float, min_ms: float = 100.0,
                    end_ms: float | None = None) -> list[PseudoFixation]:
    """I-DT on window samples (sorted by time). A run lasts until the next sample after it (the window stayed
    there), or ``end_ms`` for the last run."""
    points = sorted(samples)
    out: list[PseudoFixation] = []
    i = 0
    while i < len(points):
        j = i
        xs, ys = [points[i][1]], [points[i][2]]
        while j + 1 < len(points):
            nx, ny = points[j + 1][1], points[j + 1][2]
            if (max(*xs, nx) - min(*xs, nx)) + (max(*ys, ny) - min(*ys, ny)) > dispersion:
                break
            xs.append(nx)
            ys.append(ny)
            j += 1
        stop = points[j + 1][0] if j + 1 < len(points) else (end_ms if end_ms is not None else points[j][0])
        duration = stop - points[i][0]
        if duration >= min_ms:
            out.append(PseudoFixation(sum(xs) / len(xs), sum(ys) / len(ys), points[i][0], duration))
            i = j + 1
        else:
            i += 1
    return out


def click_fixations(clicks: Sequence[Sample], *, end_ms: float) -> list[PseudoFixation]:
    points = sorted(clicks)
    out = []
    for k, (t, x, y) in enumerate(points):
        stop = points[k + 1][0] if k + 1 < len(points) else end_ms
        out.append(PseudoFixation(x, y, t, max(0.0, stop - t)))
    return out
