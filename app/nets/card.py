"""The model card (``model.json``) and the label list (``labels.json``) of a model folder.

The card is what a clinician or reviewer reads to decide whether a model may be used: what it was trained
on, what it is for, how well it did on held-out data. It is also what the app reads to build and feed the
network, so parsing is strict — a card that cannot be trusted to describe its weights is refused with a
:class:`ModelFolderError`, never half-loaded. Unknown top-level keys are kept (``extra``) and written back,
so a newer trainer can add facts without an older app dropping them.

``labels.json`` is a list whose index is the class index of the network's head:
``[{"id", "name", "omim": str | null, "hpo": [{"id", "name"}], "genes": [{"name", "entrez": str | null}]}, ...]``.
Genes are optional; GestaltMatcher-Arc's gene list is ranked from them (a syndrome's genes inherit its
nearest gallery image), so a label without genes simply adds nothing to that list.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.nets.errors import ModelFolderError
from app.nets.iresnet import INPUT_SIZE
from app.nets.preprocess import NORMALISATION
from app.vision.align import ARCFACE_TEMPLATE as _VISION_TEMPLATE

__all__ = [
    "ARCFACE_TEMPLATE",
    "CARD_FILE",
    "MODEL_ID_PATTERN",
    "Architecture",
    "Gene",
    "HpoTerm",
    "InputSpec",
    "Label",
    "ModelCard",
    "read_card",
    "read_labels",
    "write_card",
    "write_labels",
]

CARD_FILE = "model.json"
#: Model ids double as folder names, so they are restricted to a path-safe alphabet.
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The ArcFace 112x112 five-point template (GestaltMatcher-Arc's): taken from app.vision so the card
#: check and the aligner can never disagree about it.
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = tuple((float(x), float(y)) for x, y in _VISION_TEMPLATE)
_TEMPLATE_TOLERANCE_PX = 1e-3
_KNOWN_KEYS = {
    "id", "version", "architecture", "input", "alignment_template", "labels", "weights", "head_weights",
    "gallery", "gradcam_layer", "intended_use", "training_data", "metrics", "licence", "sha256",
}


@dataclass(frozen=True)
class Architecture:
    """``architecture`` section: which registered network to build."""

    name: str
    width: float = 1.0
    num_classes: int = 0
    dropout: float = 0.0


@dataclass(frozen=True)
class InputSpec:
    """``input`` section: what the network expects. Only the GestaltMatcher/ArcFace convention is served."""

    size: int = INPUT_SIZE
    channels: str = "RGB"
    normalisation: str = NORMALISATION


@dataclass(frozen=True)
class HpoTerm:
    id: str
    name: str


@dataclass(frozen=True)
class Gene:
    """A gene associated with a syndrome (GestaltMatcher-Arc reports genes for variant prioritisation)."""

    name: str
    entrez: str | None = None  # NCBI Entrez gene id; None for entries such as a contiguous deletion


@dataclass(frozen=True)
class Label:
    """One syndrome the head can output; its position in labels.json is its class index."""

    id: str
    name: str
    omim: str | None = None
    hpo: tuple[HpoTerm, ...] = ()
    genes: tuple[Gene, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "omim": self.omim,
                                "hpo": [{"id": t.id, "name": t.name} for t in self.hpo]}
        if self.genes:
            data["genes"] = [{"name": g.name, "entrez": g.entrez} for g in self.genes]
        return data


@dataclass(frozen=True)
class ModelCard:
    """A parsed ``model.json``. File names are relative to ``folder``."""

    id: str
    version: str
    architecture: Architecture
    input: InputSpec = field(default_factory=InputSpec)
    alignment_template: tuple[tuple[float, float], ...] = ARCFACE_TEMPLATE
    labels: str = "labels.json"
    weights: str = "weights.pt"
    head_weights: str | None = None
    gallery: str | None = None
    gradcam_layer: str = "layer4"
    intended_use: str = ""
    training_data: Any = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    sha256: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = field(default=None, compare=False)

    @property
    def version_string(self) -> str:
        """``id@version``: what predictions and explanations record as the model that made them."""
        return f"{self.id}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "architecture": {"name": self.architecture.name, "width": self.architecture.width,
                             "num_classes": self.architecture.num_classes, "dropout": self.architecture.dropout},
            "input": {"size": self.input.size, "channels": self.input.channels,
                      "normalisation": self.input.normalisation},
            "alignment_template": [list(p) for p in self.alignment_template],
            "labels": self.labels,
            "weights": self.weights,
        }
        if self.head_weights is not None:
            data["head_weights"] = self.head_weights
        data.update({
            "gallery": self.gallery,
            "gradcam_layer": self.gradcam_layer,
            "intended_use": self.intended_use,
            "training_data": self.training_data,
            "metrics": self.metrics,
            "licence": self.licence,
        })
        if self.sha256:
            data["sha256"] = dict(self.sha256)
        data.update(self.extra)
        return data


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "model.json") -> Any:
    if key not in data:
        raise ModelFolderError(f"{where} has no {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelFolderError(f"{where} {key!r} has the wrong type ({type(value).__name__})")
    return value


def _file_name(data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ModelFolderError(f"model.json {key!r} must name a file in the model folder")
    if Path(value).is_absolute() or ".." in Path(value).parts:
        raise ModelFolderError(f"model.json {key!r} must be a file inside the model folder, got {value!r}")
    return value


def _parse_architecture(data: dict[str, Any]) -> Architecture:
    section = _require(data, "architecture", dict)
    name = _require(section, "name", str, "model.json architecture")
    width = section.get("width", 1.0)
    num_classes = _require(section, "num_classes", int, "model.json architecture")
    dropout = section.get("dropout", 0.0)
    if isinstance(width, bool) or not isinstance(width, int | float) or not (math.isfinite(width) and width > 0):
        raise ModelFolderError(f"model.json architecture width must be a positive number, got {width!r}")
    if num_classes < 1:
        raise ModelFolderError(f"model.json architecture num_classes must be positive, got {num_classes}")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ModelFolderError(f"model.json architecture dropout must be in [0, 1), got {dropout!r}")
    return Architecture(name=name, width=float(width), num_classes=num_classes, dropout=float(dropout))


def _parse_input(data: dict[str, Any]) -> InputSpec:
    section = data.get("input", {})
    if not isinstance(section, dict):
        raise ModelFolderError("model.json 'input' must be an object")
    spec = InputSpec(size=section.get("size", INPUT_SIZE), channels=section.get("channels", "RGB"),
                     normalisation=section.get("normalisation", NORMALISATION))
    if spec.size != INPUT_SIZE:
        raise ModelFolderError(f"model.json input size {spec.size!r} is not supported (the aligner makes "
                               f"{INPUT_SIZE}x{INPUT_SIZE} crops)")
    if spec.channels != "RGB":
        raise ModelFolderError(f"model.json input channels {spec.channels!r} is not supported (only RGB)")
    if spec.normalisation != NORMALISATION:
        raise ModelFolderError(f"model.json input normalisation {spec.normalisation!r} is not supported "
                               f"(only {NORMALISATION!r})")
    return spec


def _parse_template(data: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    raw = data.get("alignment_template", [list(p) for p in ARCFACE_TEMPLATE])
    try:
        template = tuple((float(x), float(y)) for x, y in raw)
    except (TypeError, ValueError) as exc:
        raise ModelFolderError("model.json alignment_template must be five [x, y] points") from exc
    if len(template) != len(ARCFACE_TEMPLATE):
        raise ModelFolderError(f"model.json alignment_template has {len(template)} points, expected 5")
    worst = max(math.dist(p, q) for p, q in zip(template, ARCFACE_TEMPLATE, strict=True))
    if worst > _TEMPLATE_TOLERANCE_PX:
        raise ModelFolderError(
            f"model.json alignment_template differs from the ArcFace template the app aligns faces with "
            f"(by up to {worst:.3f} px); the network would see crops it was not trained on"
        )
    return template


def _parse_sha256(data: dict[str, Any]) -> dict[str, str]:
    raw = data.get("sha256") or {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v) for k, v in raw.items()
    ):
        raise ModelFolderError("model.json sha256 must map file names to 64-digit hex digests")
    return {k: v.lower() for k, v in raw.items()}


def parse_card(data: Any, folder: Path | None = None) -> ModelCard:
    """Validate a decoded model.json; ``folder`` (if given) must be named after the card's id."""
    if not isinstance(data, dict):
        raise ModelFolderError("model.json must hold a JSON object")
    model_id = _require(data, "id", str)
    if not MODEL_ID_PATTERN.match(model_id):
        raise ModelFolderError(f"model.json id {model_id!r} is not a valid model id (letters, digits, . _ -)")
    if folder is not None and folder.name != model_id:
        raise ModelFolderError(f"model.json id {model_id!r} does not match the folder name {folder.name!r}")
    version = _require(data, "version", str)
    gradcam_layer = data.get("gradcam_layer", "layer4")
    if not isinstance(gradcam_layer, str) or not gradcam_layer:
        raise ModelFolderError("model.json gradcam_layer must name a module, e.g. 'layer4'")
    metrics = data.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ModelFolderError("model.json metrics must be an object")
    return ModelCard(
        id=model_id,
        version=version,
        architecture=_parse_architecture(data),
        input=_parse_input(data),
        alignment_template=_parse_template(data),
        labels=_file_name(data, "labels") or "labels.json",
        weights=_file_name(data, "weights") or "weights.pt",
        head_weights=_file_name(data, "head_weights", optional=True),
        gallery=_file_name(data, "gallery", optional=True),
        gradcam_layer=gradcam_layer,
        intended_use=str(data.get("intended_use", "")),
        training_data=data.get("training_data", ""),
        metrics=metrics,
        licence=str(data.get("licence", "")),
        sha256=_parse_sha256(data),
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        folder=folder,
    )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ModelFolderError(f"{what} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{what} is not valid JSON: {exc}") from exc


def read_card(folder: Path) -> ModelCard:
    """Read and validate ``folder/model.json``."""
    return parse_card(_read_json(folder / CARD_FILE, CARD_FILE), folder)


def _parse_label(index: int, item: Any, where: str) -> Label:
    if not isinstance(item, dict):
        raise ModelFolderError(f"{where} entry {index} is not an object")
    label_id, name, omim = item.get("id"), item.get("name"), item.get("omim")
    if not isinstance(label_id, str) or not label_id:
        raise ModelFolderError(f"{where} entry {index} has no string 'id'")
    if not isinstance(name, str) or not name:
        raise ModelFolderError(f"{where} entry {index} ({label_id}) has no string 'name'")
    if omim is not None and not isinstance(omim, str):
        raise ModelFolderError(f"{where} entry {index} ({label_id}) 'omim' must be a string or null")
    hpo_raw = item.get("hpo") or []
    if not isinstance(hpo_raw, list) or not all(
        isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("name"), str) for t in hpo_raw
    ):
        raise ModelFolderError(f"{where} entry {index} ({label_id}) 'hpo' must be a list of {{id, name}}")
    genes_raw = item.get("genes") or []
    if not isinstance(genes_raw, list) or not all(
        isinstance(g, dict) and isinstance(g.get("name"), str) and g["name"]
        and (g.get("entrez") is None or isinstance(g.get("entrez"), str | int))
        and not isinstance(g.get("entrez"), bool)
        for g in genes_raw
    ):
        raise ModelFolderError(f"{where} entry {index} ({label_id}) 'genes' must be a list of {{name, entrez}}")
    genes = tuple(Gene(g["name"], None if g.get("entrez") is None else str(g["entrez"])) for g in genes_raw)
    return Label(id=label_id, name=name, omim=omim, hpo=tuple(HpoTerm(t["id"], t["name"]) for t in hpo_raw),
                 genes=genes)


def read_labels(path: Path) -> tuple[Label, ...]:
    """Read ``labels.json``; ids must be unique because the gallery and the API refer to syndromes by id."""
    data = _read_json(path, path.name)
    if not isinstance(data, list) or not data:
        raise ModelFolderError(f"{path.name} must be a non-empty JSON list of labels")
    labels = tuple(_parse_label(i, item, path.name) for i, item in enumerate(data))
    seen: set[str] = set()
    for label in labels:
        if label.id in seen:
            raise ModelFolderError(f"{path.name} lists label id {label.id!r} twice")
        seen.add(label.id)
    return labels


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_card(card: ModelCard, folder: Path) -> Path:
    path = folder / CARD_FILE
    _write_json(path, card.to_json())
    return path


def write_labels(labels: tuple[Label, ...] | list[Label], path: Path) -> Path:
    _write_json(path, [label.to_json() for label in labels])
    return path
