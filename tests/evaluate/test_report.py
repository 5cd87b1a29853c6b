"""The scorecard's plots draw their reference lines: a number is never read alone."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from app.evaluate import report, sanity


def _maps(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(112, 112)) for _ in range(n)]


def test_sanity_plot_draws_the_between_faces_reference_and_the_zero_margin() -> None:
    original = _maps(4, 1)
    cascade = {stage: _maps(4, 10 + i) for i, (stage, _) in enumerate(sanity.CASCADE)}
    card = {"sanity": {"noise": sanity.summarise_sanity("noise", original, cascade,
                                                        random_logit=_maps(4, 99)).to_dict()}}
    reference = card["sanity"]["noise"]["reference"]["spearman"]
    fig = report.sanity_plot(card)
    try:
        cascade_axes, verdict_axes = fig.axes
        (band,) = cascade_axes.patches  # axhspan: the reference's 95 % interval
        assert (band.get_y(), band.get_y() + band.get_height()) == (pytest.approx(reference["low"]),
                                                                    pytest.approx(reference["high"]))
        dotted = [line for line in cascade_axes.lines if line.get_linestyle() == ":"]
        assert [line.get_ydata()[0] for line in dotted] == [pytest.approx(reference["mean"])]
        zero = [line for line in verdict_axes.lines if line.get_linestyle() == "--"]
        assert len(zero) == 1 and list(zero[0].get_xdata()) == [0.0, 0.0]
        assert "reference (another face's map)" in [t.get_text() for t in verdict_axes.get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert report.sanity_figure(card)[:4] == b"\x89PNG"
