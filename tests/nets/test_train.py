"""The trainer on a tiny data set folder in the generator's format (coloured shapes, not faces)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from app.nets import load_model, predict, read_model_folder
from app.nets.command import train_command
from app.nets.data import DatasetError, load_split, read_dataset_info, read_manifest
from app.nets.train import TrainProgress, TrainReport, train_model
from tests.nets.helpers import write_synth_dataset

FAST = {"epochs": 3, "batch_size": 8, "width": 0.25, "threads": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_dataset(tmp_path_factory.mktemp("synth") / "data")


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainReport, list[TrainProgress]]:
    events: list[TrainProgress] = []
    out = tmp_path_factory.mktemp("run") / "models" / "demo"
    report = train_model(dataset, out, seed=0, progress=events.append, **FAST)
    return report, events


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)


def test_writes_a_folder_the_registry_loads(trained) -> None:
    report, _ = trained
    folder = report.model_dir
    assert sorted(p.name for p in folder.iterdir()) == ["gallery.npz", "labels.json", "model.json", "weights.pt"]
    assert not list(folder.parent.glob(".demo*")), "staging folders must be cleaned up"
    model = load_model(folder.parent, "demo")
    assert model.version == report.version == "demo@1.0.0"
    assert [label.id for label in model.labels] == ["syn_a", "syn_b", "syn_c"]
    assert model.labels[0].hpo[0].id == "HP:0000316"
    assert model.card.architecture.name == "iresnet18" and model.card.architecture.width == 0.25
    assert set(model.card.sha256) == {"weights.pt", "labels.json", "gallery.npz"}
    # the gallery is the detected training images, nothing from the test split
    assert model.gallery is not None and len(model.gallery) == report.n_train == 29
    assert all(i.startswith("train_") for i in model.gallery.image_ids)
    state = _weights(folder)
    assert state["fc.weight"].dtype == torch.float16 and "head.weight" in state
    assert all(v.is_contiguous() for v in state.values())  # trained channels-last, stored plain
    assert (folder / "weights.pt").stat().st_size < 15 * 2**20


def test_card_carries_measured_metrics_and_plain_intended_use(trained) -> None:
    report, _ = trained
    card = json.loads((report.model_dir / "model.json").read_text())
    metrics = card["metrics"]
    assert metrics == report.metrics
    assert metrics["n_train"] == 29 and metrics["n_test"] == 11 and metrics["n_test_undetected"] == 1
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["softmax_top1"] is not None
    assert metrics["per_class"]["syn_b"]["n"] == 3 and metrics["per_class"]["syn_a"]["n"] == 4
    matrix = np.array(metrics["confusion"]["matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 11
    assert np.trace(matrix) / 11 == pytest.approx(metrics["top1"])
    assert metrics["top1"] >= 2 / 3  # three easy colour classes: far above chance (1/3)
    assert card["training"]["seed"] == 0 and card["training"]["epochs"] == 3 and card["training"]["train_seconds"] > 0
    assert card["training"]["augmentation"]["hflip"] is True  # all classes are bilateral
    dataset_facts = card["training_data"]["dataset"]
    assert dataset_facts["format"] == "gestaltlens-synth/1" and dataset_facts["seed"] == 0
    assert dataset_facts["detection_rate"] == pytest.approx(40 / 42)
    assert "synthetic" in card["intended_use"] and "not a diagnostic device" in card["intended_use"]
    assert card["licence"]
    # the out-of-range threshold is calibrated on the held-out split, half sets it, the other half measures it
    ood = card["out_of_distribution"]
    assert ood["statistic"] == "nearest_gallery_mahalanobis" and ood["threshold"] > 0
    assert ood["n_calibration"] + ood["n_evaluation"] == metrics["n_test"] and 0 <= ood["false_flag_rate"] <= 1


def test_reloaded_folder_reproduces_the_reported_top1(trained, dataset: Path) -> None:
    report, _ = trained
    assert report.reload_top1 == report.metrics["top1"]
    # and independently of the trainer's own check: predict() on each test crop agrees with the card
    info = read_dataset_info(dataset)
    test = load_split(info, read_manifest(dataset), "test")
    model = read_model_folder(report.model_dir)
    hits = [predict(model, image).ranked[0].syndrome_id == info.labels[t].id
            for image, t in zip(test.images, test.targets, strict=True)]
    assert np.mean(hits) == pytest.approx(report.metrics["top1"])


def test_progress_reports_every_batch_and_phase(trained) -> None:
    _, events = trained
    phases = [e.phase for e in events]
    assert phases[0] == "load" and phases[-3:] == ["evaluate", "write", "verify"]
    train_events = [e for e in events if e.phase == "train"]
    assert len(train_events) == 3 * (29 // 8)
    assert train_events[-1].epoch == 3 and train_events[-1].batch == train_events[-1].batches == 3
    assert all(e.loss is not None and 0 <= e.accuracy <= 1 for e in train_events)


def test_same_seed_gives_identical_weights_and_other_seed_differs(dataset: Path, tmp_path: Path, trained) -> None:
    report, _ = trained
    torch.set_num_threads(2)  # the trainer sets its own thread count (1 here) and restores the caller's
    try:
        again = train_model(dataset, tmp_path / "a" / "demo", seed=0, **FAST)
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(1)
    first, second = _weights(report.model_dir), _weights(again.model_dir)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _weights(train_model(dataset, tmp_path / "b" / "demo", seed=1, **FAST).model_dir)
    assert not torch.equal(first["layer1.0.conv1.weight"], other["layer1.0.conv1.weight"])


def test_retraining_replaces_the_folder(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "demo"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old model")
    train_model(dataset, out, version="2.0.0", **{**FAST, "epochs": 1})
    assert not (out / "stale.txt").exists() and read_model_folder(out).version == "demo@2.0.0"
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo"]


def test_bad_arguments_and_data_are_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be the model id 'demo'"):
        train_model(dataset, tmp_path / "elsewhere", **FAST)
    with pytest.raises(ValueError, match="unknown architecture"):
        train_model(dataset, tmp_path / "demo", arch="vgg", **FAST)
    broken = tmp_path / "broken"
    write_synth_dataset(broken, train_per_class=2, test_per_class=1)
    lines = (broken / "manifest.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    entry["label"] = "syn_b"
    (broken / "manifest.jsonl").write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match="label_index 0 is 'syn_a'"):
        train_model(broken, tmp_path / "demo", **FAST)
    info = json.loads((broken / "dataset.json").read_text())
    (broken / "dataset.json").write_text(json.dumps({**info, "format": "other/2"}))
    with pytest.raises(DatasetError, match="expected 'gestaltlens-synth/1'"):
        train_model(broken, tmp_path / "demo", **FAST)
    assert not (tmp_path / "demo").exists()


def test_train_command(dataset: Path, tmp_path: Path) -> None:
    cli = typer.Typer()
    cli.command()(train_command)
    out = tmp_path / "models" / "demo"
    runner = CliRunner()
    result = runner.invoke(cli, [str(dataset), "--out", str(out), "--epochs", "1", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "demo@1.0.0 written to" in result.stdout and "test top-1" in result.stdout
    assert "epoch 1/1" in result.stderr and "[verify]" in result.stderr
    assert read_model_folder(out).card.metrics["n_test"] == 11
    failed = runner.invoke(cli, [str(tmp_path / "nothing"), "--out", str(out)])
    assert failed.exit_code == 2 and "dataset.json is missing" in failed.stderr
