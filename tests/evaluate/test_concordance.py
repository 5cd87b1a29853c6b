"""Region concordance: share of a map's positive relevance in the entered terms' regions vs their area share."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluate.concordance import Accumulator, class_regions, region_concordance, regions_for_terms
from app.synth.regions import region_mask


def test_an_even_map_sits_exactly_at_chance() -> None:
    result = region_concordance(np.ones((112, 112)), ["eyes"])
    assert result is not None
    assert result.share == pytest.approx(region_mask("eyes").mean()) == pytest.approx(result.area_share)
    assert result.lift == pytest.approx(1.0)


def test_a_map_inside_the_regions_has_all_its_mass_there() -> None:
    values = np.where(region_mask("eyes"), 2.0, -1.0)  # negative relevance elsewhere does not count
    result = region_concordance(values, ["eyes", "mouth"])
    union = region_mask("eyes") | region_mask("mouth")
    assert result is not None and result.share == pytest.approx(1.0)
    assert result.area_share == pytest.approx(union.mean()) and result.lift == pytest.approx(1 / union.mean())
    outside = region_concordance(np.where(region_mask("eyes"), 0.0, 1.0), ["eyes"])
    assert outside is not None and outside.share == 0.0


def test_undefined_without_regions_or_positive_relevance() -> None:
    assert region_concordance(np.ones((112, 112)), []) is None
    assert region_concordance(-np.ones((112, 112)), ["eyes"]) is None
    with pytest.raises(ValueError):
        region_concordance(np.ones((10, 20)), ["eyes"])


def test_terms_and_classes_name_their_regions() -> None:
    assert regions_for_terms(["HP:0000316", "HP:0000347", "HP:0001249"]) == ["eyes", "chin_jaw"]
    assert class_regions("syn_h") == ["eyes", "mouth"] and class_regions("syn_c") == ["philtrum_upper_lip"]


def test_accumulator_summarises_per_method_with_chance() -> None:
    acc = Accumulator(seed=0)
    eyes = np.where(region_mask("eyes"), 1.0, 0.0)
    acc.add("good", eyes, "syn_a")
    acc.add("good", eyes, "syn_b")
    acc.add("even", np.ones((112, 112)), "syn_a")
    summary = acc.summary()
    assert summary["good"]["n"] == 2 and summary["good"]["share"]["mean"] == pytest.approx(1.0)
    assert summary["even"]["lift"]["mean"] == pytest.approx(1.0)
    assert summary["good"]["chance"] == pytest.approx(region_mask("eyes").mean(), abs=1e-6)
