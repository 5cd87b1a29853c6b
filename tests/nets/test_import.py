"""`gestaltlens model import`: real round trips through torch's ONNX exporter and ONNX Runtime, a whole
module pickled the way GestaltMatcher-Arc's training code pickles it, and pickles that would run code."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from app.nets.errors import ModelFolderError
from app.nets.import_command import import_checkpoint
from app.nets.importer import verification_batch
from app.nets.iresnet import iresnet50
from app.nets.registry import load_model, read_model_folder
from app.settings import PROJECT_ROOT

DEMO = load_model(PROJECT_ROOT / "models", "demo")


def _export(network: nn.Module, path: Path) -> Path:
    torch.onnx.export(network.eval(), (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits", "embedding"], opset_version=17)
    return path


def _ort_embeddings(path: Path, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["embedding"], {"input": batch[k:k + 1]})[0] for k in range(len(batch))])


def _embed(network: nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network.eval().embed(torch.from_numpy(batch)).numpy()


def _trained_like(network: nn.Module, seed: int) -> nn.Module:
    """Random weights at trained-network scales (He-scaled convolutions, BatchNorm statistics that are not
    the identity), so the BatchNorm folding the exporter does is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.3)
    return network.eval()


def test_onnx_round_trip_of_the_demo_iresnet18(tmp_path: Path) -> None:
    source = _export(DEMO.network, tmp_path / "demo.onnx")
    report = import_checkpoint(source, tmp_path / "models" / "imported18", arch="iresnet18", width=0.25,
                               labels=DEMO.folder / "labels.json")
    assert report.source_format == "onnx" and report.has_head and report.num_classes == len(DEMO.labels)
    imported = read_model_folder(report.folder)
    batch = verification_batch(count=6, seed=11)
    ours, theirs = _embed(imported.network, batch), _ort_embeddings(source, batch)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    # and the network is the demo network again, head included
    np.testing.assert_allclose(ours, _embed(DEMO.network, batch), rtol=0, atol=1e-4)
    with torch.no_grad():
        logits = imported.network(torch.from_numpy(batch))[0]
        np.testing.assert_allclose(logits.numpy(), DEMO.network(torch.from_numpy(batch))[0].numpy(), atol=1e-4)
    assert [label.id for label in imported.labels] == [label.id for label in DEMO.labels]
    assert "ONNX Runtime" in imported.card.metrics["import"]["check"]


def test_onnx_round_trip_of_iresnet50_without_a_head(tmp_path: Path) -> None:
    class Embedding(nn.Module):  # a glint360k-style file: one 512-d output, no syndrome head
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.embed(x)

    original = _trained_like(iresnet50(num_classes=3), seed=5)
    source = tmp_path / "r50.onnx"
    torch.onnx.export(Embedding(original).eval(), (torch.zeros(1, 3, 112, 112),), str(source), dynamo=False,
                      input_names=["input"], output_names=["embedding"], opset_version=17)
    report = import_checkpoint(source, tmp_path / "models" / "r50", arch="iresnet50")
    assert not report.has_head
    imported = read_model_folder(report.folder)
    batch = verification_batch(count=2, seed=12)
    theirs = _ort_embeddings(source, batch)
    difference = np.abs(_embed(imported.network, batch) - theirs).max() / np.abs(theirs).max()
    assert difference <= 1e-4, difference
    assert imported.card.extra["has_head"] is False


def test_a_wrong_architecture_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    source = _export(DEMO.network, tmp_path / "demo.onnx")
    with pytest.raises(ModelFolderError, match=r"iresnet|arch|shape"):
        import_checkpoint(source, tmp_path / "models" / "wrong", arch="iresnet34", width=0.25)
    assert not (tmp_path / "models" / "wrong").exists()
    assert not [p for p in (tmp_path / "models").iterdir()] if (tmp_path / "models").exists() else True


@pytest.fixture
def gm_training_module() -> Iterator[type[nn.Module]]:
    """GestaltMatcher-Arc's ``lib.models.my_arcface.MyArcFace`` shape: an fx graph module as ``base`` (it
    is an onnx2torch conversion there), ``features`` = Sequential(Gemm_0, BatchNormalization_N) and
    ``classifier`` = Sequential(Dropout, Linear). Registered under its real module path so that pickle
    records it as the training code does."""

    class MyArcFace(nn.Module):
        def __init__(self, network: nn.Module) -> None:
            super().__init__()

            class Base(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    for name in ("conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2"):
                        setattr(self, name, getattr(network, name))

                def forward(self, x):  # no annotations: fx would record the postponed ones as str globals
                    x = self.prelu(self.bn1(self.conv1(x)))
                    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
                    return torch.flatten(self.bn2(x), 1)

            self.base = torch.fx.symbolic_trace(Base())
            self.features = nn.Sequential()
            self.features.add_module("Gemm_0", network.fc)
            self.features.add_module("BatchNormalization_8", network.features)
            self.classifier = nn.Sequential(nn.Dropout(), network.head)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            representations = self.features(self.base(x))
            return self.classifier(representations), representations

    names = ["lib", "lib.models", "lib.models.my_arcface"]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    MyArcFace.__module__ = "lib.models.my_arcface"
    MyArcFace.__qualname__ = "MyArcFace"
    sys.modules["lib.models.my_arcface"].MyArcFace = MyArcFace  # type: ignore[attr-defined]
    yield MyArcFace
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def test_a_whole_module_pickled_like_the_training_code_imports(tmp_path: Path, gm_training_module) -> None:
    original = _trained_like(DEMO.network.__class__((2, 2, 2, 2), num_classes=len(DEMO.labels), width=0.25,
                                                     name="iresnet18"), seed=3)
    model = gm_training_module(original).eval()
    path = tmp_path / "s107_glint360k_r18_512d_gmdb_last_model.pth"
    torch.save(model, path)  # what train_gm_arc.py does
    report = import_checkpoint(path, tmp_path / "models" / "from-pickle", arch="iresnet18", width=0.25,
                               labels=DEMO.folder / "labels.json")
    assert report.source_format == "pickle" and report.has_head and "tensors" in report.check
    imported = read_model_folder(report.folder)
    batch = torch.from_numpy(verification_batch(count=3, seed=13))
    with torch.no_grad():
        want_logits, want_embedding = model(batch)
        got_logits, got_embedding = imported.network(batch)
    np.testing.assert_allclose(got_embedding.numpy(), want_embedding.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_logits.numpy(), want_logits.numpy(), rtol=1e-5, atol=1e-5)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint carries
        return (os.system, (f"touch {self.marker}",))


class _GraphCode:
    """Pickles like an fx GraphModule whose saved forward source runs a command when exec'd."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        code = f"import os\nos.system('touch {self.marker}')\ndef forward(self, x):\n    return x\n"
        body = {"_code": code, "_modules": {}, "_parameters": {}, "_buffers": {}}
        return (torch.fx.graph_module.reduce_graph_module, (body, ""))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": DEMO.network.state_dict(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFolderError, match=r"refus.*(posix|os)\.system"):
        import_checkpoint(path, tmp_path / "models" / "evil", arch="iresnet18", width=0.25)
    assert not marker.exists() and not (tmp_path / "models" / "evil").exists()
    with open(path, "rb"), pytest.raises(pickle.UnpicklingError):  # torch's own safe loader agrees
        torch.load(path, weights_only=True)


def test_a_graph_module_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-by-graph"
    path = tmp_path / "graph.pth"
    torch.save(_GraphCode(marker), path)
    with pytest.raises(ModelFolderError):  # nothing to import, but above all: nothing ran
        import_checkpoint(path, tmp_path / "models" / "graph", arch="iresnet18", width=0.25)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the unsafe way runs it: this test can fail
    assert marker.exists()


def test_the_cli_refuses_with_a_clear_message(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    path = tmp_path / "evil.pth"
    torch.save({"payload": _RunsCode(tmp_path / "pwned")}, path)
    result = CliRunner().invoke(cli, ["model", "import", str(path), "--out", str(tmp_path / "m" / "x"),
                                      "--arch", "iresnet18", "--width", "0.25"])
    assert result.exit_code == 2 and "refusing to load" in result.output and "could run code" in result.output
    assert not (tmp_path / "pwned").exists()
