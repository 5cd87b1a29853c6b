"""``gestaltlens model import``: an ONNX iResNet or a whole pickled module → a checked model folder.

The folder is written only after the imported network has been verified against its source (see
:mod:`app.nets.importer`), into a temporary sibling that is renamed into place, so a failed import
never leaves a half-written folder that the registry might later serve.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ImportReport", "import_checkpoint", "import_command"]


@dataclass(frozen=True)
class ImportReport:
    folder: Path
    source_format: str
    has_head: bool
    num_classes: int
    check: str  # what the verification compared, with the number


def _format(source: Path) -> str:
    head = source.read_bytes()[:4]
    if head.startswith(b"PK"):
        return "pickle"
    if source.suffix.lower() == ".onnx":
        return "onnx"
    raise ValueError(f"{source.name} is neither an ONNX file nor a torch.save archive")


def import_checkpoint(
    source: Path, out: Path, *, arch: str, width: float = 1.0, labels: Path | None = None,
    version: str = "1.0.0", tolerance: float = 1e-4, intended_use: str = "", licence: str = "",
) -> ImportReport:
    """Import, verify and write the model folder ``out`` (named after the model id). Raises ModelFolderError."""
    from app.nets.card import Architecture, Label, ModelCard, read_labels, write_card, write_labels
    from app.nets.checkpoint import export_state_dict, load_weights_into
    from app.nets.errors import ModelFolderError
    from app.nets.importer import map_layers, onnx_layers, pickle_layers, verification_batch, verify_against_onnx
    from app.nets.iresnet import EMBEDDING_DIM, build_network
    from app.nets.registry import read_model_folder, sha256_file
    from app.nets.safe_pickle import UnsafePickle

    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelFolderError(f"{out} exists and is not empty; choose a new folder")
    try:
        kind = _format(source)
        layers = onnx_layers(source) if kind == "onnx" else pickle_layers(source)
    except UnsafePickle as exc:
        raise ModelFolderError(f"refused {source.name}: {exc}") from exc
    except (ValueError, OSError) as exc:
        raise ModelFolderError(str(exc)) from exc
    given = read_labels(labels) if labels else None
    last = layers[-1] if layers else None
    head_classes = int(last.tensors["weight"].shape[0]) if last is not None and last.kind == "linear" and \
        last.tensors["weight"].shape[1] == EMBEDDING_DIM and sum(x.kind == "linear" for x in layers) > 1 else None
    num_classes = head_classes or (len(given) if given else 1)
    if given is not None and len(given) != num_classes:
        raise ModelFolderError(f"{labels} lists {len(given)} labels but the source's head has {num_classes} outputs")
    try:
        network = build_network(arch, num_classes=num_classes, width=width)
    except ValueError as exc:
        raise ModelFolderError(str(exc)) from exc
    result = map_layers(layers, network)
    load_weights_into(network, result.state_dict)
    network.eval()
    batch = verification_batch()
    if kind == "onnx":
        diff, relative = verify_against_onnx(network, source, batch)
        if not relative <= tolerance:
            raise ModelFolderError(f"the imported network's embeddings differ from ONNX Runtime's by up to {diff:.2e} "
                                   f"({relative:.2e} of their largest value; tolerance {tolerance:g}); "
                                   "nothing was written")
        check = (f"ONNX Runtime embeddings on {batch.shape[0]} inputs: max |difference| {diff:.2e}, "
                 f"{relative:.2e} of the largest value (tolerance {tolerance:g})")
    else:
        if result.used_tensors != result.source_tensors:
            raise ModelFolderError(f"only {result.used_tensors} of the pickle's {result.source_tensors} tensors found "
                                   "a place in the network; nothing was written")
        check = f"all {result.source_tensors} tensors of the pickle placed, shapes checked"
    import torch

    with torch.no_grad():
        logits, embedding = network(torch.from_numpy(batch))
    if not (torch.isfinite(logits).all() and torch.isfinite(embedding).all()):
        raise ModelFolderError("the imported network gives non-finite outputs; nothing was written")

    label_list: tuple[Label, ...] = given or tuple(
        Label(id=f"class_{k}", name=f"class {k} (unnamed; give --labels)") for k in range(num_classes))
    model_id = out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=out.parent))
    try:
        torch.save(export_state_dict(network, torch.float32), staging / "weights.pt")
        write_labels(label_list, staging / "labels.json")
        card = ModelCard(
            id=model_id, version=version,
            architecture=Architecture(name=arch, width=float(width), num_classes=num_classes),
            intended_use=intended_use or "Imported checkpoint; set the intended use before serving it.",
            training_data=f"imported from {source.name}",
            metrics={"import": {"source": source.name, "format": kind, "check": check}},
            licence=licence,
            extra={"has_head": result.has_head},
        )
        card = replace(card, sha256={name: sha256_file(staging / name) for name in ("weights.pt", "labels.json")})
        write_card(card, staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    read_model_folder(out)  # the registry accepts it as written
    return ImportReport(folder=out, source_format=kind, has_head=result.has_head, num_classes=num_classes,
                        check=check)


def import_command(
    source: Annotated[Path, typer.Argument(help="An ONNX iResNet (.onnx) or a whole pickled module (.pth).")],
    out: Annotated[Path, typer.Option("--out", help="New model folder; its name is the model id.")],
    arch: Annotated[str, typer.Option(help="iresnet18, iresnet34, iresnet50 or iresnet100.")] = "iresnet100",
    width: Annotated[float, typer.Option(help="Width multiplier (1.0 for GestaltMatcher-Arc).")] = 1.0,
    labels: Annotated[Path | None, typer.Option(help="labels.json for the head's classes, in order.")] = None,
    version: Annotated[str, typer.Option(help="Version recorded in model.json.")] = "1.0.0",
    tolerance: Annotated[float, typer.Option(help="Largest embedding difference accepted (ONNX), relative.")] = 1e-4,
    intended_use: Annotated[str, typer.Option(help="Shown wherever the model's output is shown.")] = "",
    licence: Annotated[str, typer.Option(help="The checkpoint's licence.")] = "",
) -> None:
    """Import a GestaltMatcher-Arc checkpoint without executing code from it, verify it, write the folder."""
    from app.nets.errors import ModelFolderError

    try:
        report = import_checkpoint(source, out, arch=arch, width=width, labels=labels, version=version,
                                   tolerance=tolerance, intended_use=intended_use, licence=licence)
    except ModelFolderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:  # a file this reader did not foresee: one line, never a traceback (nothing written)
        typer.echo(f"error: cannot import {source.name}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"folder": str(report.folder), "format": report.source_format, "head": report.has_head,
                           "classes": report.num_classes, "check": report.check}))
