"""A small run of the imbalance experiment: the same pipeline that made reports/imbalance, on a tiny data set.

It checks what the committed report's numbers rest on: the rare class loses exactly the stated share of its
training images (and nothing else changes), the shortcut condition re-renders exactly the images the
generator's cue stream marks, every condition is trained and scored, and the Markdown report shows the
numbers of report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.evaluate.imbalance import derive_dataset, run_experiment
from app.synth.dataset import read_manifest, write_dataset
from app.synth.generate import ShortcutSpec


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("imbalance") / "data"
    write_dataset(out, seed=0, count_per_class=5, test_fraction=0.2, workers=1)
    return out


def test_derived_data_sets_change_only_the_studied_factor(tiny_data: Path, tmp_path: Path) -> None:
    base = read_manifest(tiny_data)
    counts = derive_dataset(tiny_data, tmp_path / "rare", rare_class="syn_a", keep_fraction=0.25)
    derived = read_manifest(tmp_path / "rare")
    assert counts["syn_a"] == 1 and counts["syn_b"] == 4
    rare_train = [r["id"] for r in base if r["label"] == "syn_a" and r["split"] == "train"]
    assert {r["id"] for r in derived} == {r["id"] for r in base} - set(rare_train[1:])
    assert [r for r in derived if r["split"] == "test"] == [
        {**r, **{k: str(tiny_data.resolve() / r[k]) for k in ("image", "mask", "aligned", "aligned_mask") if r.get(k)}}
        for r in base if r["split"] == "test"]

    derive_dataset(tiny_data, tmp_path / "cue", rare_class="syn_a", shortcut=True)
    spec = ShortcutSpec(class_id="syn_a")
    cued = {r["id"]: r for r in read_manifest(tmp_path / "cue")}
    for record in base:
        index = int(record["id"].rsplit("-", 1)[1])
        assert cued[record["id"]]["shortcut"] is spec.present(0, record["label"], index)


def test_small_experiment_writes_the_report_of_its_numbers(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    experiment = run_experiment(tiny_data, out, rare_class="syn_a", ratios=(4,), epochs=1, methods=("gradcam",),
                                faces_per_other=1, road_percentages=(0.5,), threads=1, seeds=2,
                                log=lambda m: None)
    assert list(experiment["conditions"]) == ["balanced", "rare_1to4", "shortcut"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["conditions"]["rare_1to4"]["train_counts"]["syn_a"] == 1
    report = (out / "report.md").read_text()
    for name, condition in on_disk["conditions"].items():
        assert f"| {name} | " in report
        assert f"{condition['per_class_top1']['syn_a']:.3f}" in report
        mass = condition["summary"]["gradcam"]["rare"]["mass"]
        assert f"{mass:.3f}" in report
        card = condition["scorecard"]
        assert card["scores"]["gradcam"]["localisation"]["mass"]["n"] == card["benchmark"]["n_faces"]
    assert (out / "mass_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "context_share.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "work").exists()
    rare = on_disk["conditions"]["balanced"]
    assert rare["seeds"] == 2 and len(rare["top1_by_seed"]) == 2
    # the context column is the rare class's own faces, not the mean over every face
    rows = [r for c in [rare["scorecard"]] for r in c["per_image"] if r["label"] == "syn_a"]
    assert rows and "hair_background" in rows[0]["methods"]["gradcam"]

    # a resumed run keeps every condition written with the same settings and trains nothing again
    said: list[str] = []
    again = run_experiment(tiny_data, out, rare_class="syn_a", ratios=(4,), epochs=1, methods=("gradcam",),
                           faces_per_other=1, road_percentages=(0.5,), threads=1, seeds=2, log=said.append,
                           resume=True)
    assert said == ["[balanced] kept from " + str(out / "report.json"), "[rare_1to4] kept from "
                    + str(out / "report.json"), "[shortcut] kept from " + str(out / "report.json")]
    assert again["conditions"] == on_disk["conditions"] and again["complete"] is True

    # ... but not those of another data set, even at the same path (a folder regenerated with another seed)
    from app.evaluate.imbalance import _kept_conditions

    settings = {key: on_disk[key] for key in ("rare_class", "epochs", "methods", "seeds", "threads",
                                              "road_percentages", "n_eval_faces", "faces_per_other", "data_sha256")}
    assert settings["data_sha256"] and settings["faces_per_other"] == 1
    assert set(_kept_conditions(out, list(on_disk["conditions"]), said.append, settings)) == set(on_disk["conditions"])
    said.clear()
    other = {**settings, "data_sha256": "0" * 64}
    assert _kept_conditions(out, list(on_disk["conditions"]), said.append, other) == {}
    assert "data_sha256" in said[0] and "starting afresh" in said[0]
