"""Model folders: find them, check them, load them once per process.

A model is a folder ``<root>/<id>/`` holding ``model.json`` (the card), ``labels.json``, the weights
(optionally with a separate ``head_weights`` file) and optionally ``gallery.npz`` (with, for a gallery large
enough for the approximate search index, that index saved beside it: see :mod:`app.nets.gallery_index`).
The root is a parameter (the web app passes ``PROJECT_ROOT / "models"``); the id is the folder name.

:func:`read_model_folder` checks everything a wrong deployment could get wrong — sha256 digests given in
the card, label count against the card, architecture, every weight key and shape, head size against the
labels, gallery labels and embedding size — and refuses with a :class:`ModelFolderError` saying exactly
what is wrong. :func:`load_model` adds a process-wide cache guarded by a lock, so the configured model is
read once per process however many request threads ask for it at start-up, and loads the gallery's saved
search index (or rebuilds a missing or stale one, saying so in the log) with it.

The loaded network is in eval mode and is never mutated afterwards (no hooks, no training), so it can be
shared by concurrent prediction threads. Its parameters keep ``requires_grad`` as trained, because
gradient-based explanation methods need gradients through the layers; they must not attach hooks to the
shared instance (see DESIGN.md, "Explanation methods").
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.nets.card import MODEL_ID_PATTERN, Label, ModelCard, read_card, read_labels
from app.nets.checkpoint import load_weights_into, read_state_dict
from app.nets.ensemble import Member, MemberSpec, Tta, parse_ensemble
from app.nets.errors import ModelFolderError
from app.nets.gallery import Gallery, read_gallery
from app.nets.gallery_index import prepare as prepare_search
from app.nets.iresnet import IResNet, build_network

__all__ = [
    "DEFAULT_MODEL_ID",
    "LoadedModel",
    "clear_cache",
    "list_models",
    "load_model",
    "read_model_folder",
    "sha256_file",
]

DEFAULT_MODEL_ID = "demo"
_log = logging.getLogger(__name__)
_cache: dict[tuple[str, str], LoadedModel] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """Everything prediction and explanation need from one model folder."""

    card: ModelCard
    labels: tuple[Label, ...]
    network: IResNet  # eval mode; shared, so never put hooks on it or switch it to training
    gallery: Gallery | None
    version: str  # "id@version", recorded with every prediction and explanation
    folder: Path
    #: Every network of the ranking, primary first (``m0`` is ``network``); see app.nets.ensemble.
    members: tuple[Member, ...] = field(default=())
    tta: Tta = field(default_factory=Tta)
    #: syndromes the gallery adds beyond the head's labels (``gallery_labels`` in model.json, written by
    #: ``gestaltlens gallery build``): an imported network without a head, or ultra-rare disorders the head
    #: never learnt, still rank by distance
    gallery_labels: tuple[Label, ...] = field(default=())

    @property
    def has_head(self) -> bool:
        """False for an imported network without a classifier (its zero head's softmax means nothing)."""
        return self.card.extra.get("has_head", True) is not False

    @property
    def syndromes(self) -> tuple[Label, ...]:
        """What the ranking can name: the head's labels (when it has a head), then the gallery's others.
        A gallery row's ``label_indices`` index this tuple; the head's class k is syndromes[k]."""
        head = self.labels if self.has_head else ()
        known = {label.id for label in head}
        return head + tuple(label for label in self.gallery_labels if label.id not in known)

    @property
    def ensemble(self) -> tuple[Member, ...]:
        """The members, or the primary network alone as ``m0``."""
        return self.members or (Member(name="m0", id=self.card.id, network=self.network, has_head=self.has_head),)

    @property
    def views(self) -> int:
        """Embeddings per face the ranking averages over: members × augmentations."""
        return len(self.ensemble) * len(self.tta.augmentations)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digests(card: ModelCard, folder: Path) -> None:
    for name, expected in card.sha256.items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"{name} is listed in the card's sha256 but is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelFolderError(
                f"sha256 of {name} does not match the card (card {expected[:12]}…, file {actual[:12]}…)"
            )


def _build(card: ModelCard, labels: tuple[Label, ...]) -> IResNet:
    arch = card.architecture
    if len(labels) != arch.num_classes:
        raise ModelFolderError(
            f"{card.labels} has {len(labels)} labels but the card says num_classes {arch.num_classes}"
        )
    try:
        network = build_network(arch.name, num_classes=arch.num_classes, width=arch.width, dropout=arch.dropout)
    except ValueError as exc:
        raise ModelFolderError(f"model.json architecture: {exc}") from exc
    try:
        network.get_submodule(card.gradcam_layer)
    except AttributeError as exc:
        raise ModelFolderError(
            f"model.json gradcam_layer {card.gradcam_layer!r} is not a module of {arch.name}"
        ) from exc
    return network


def _load_member(spec: MemberSpec, index: int, labels: tuple[Label, ...], folder: Path) -> Member:
    """Build and load one additional ensemble member; a member without a head gets an unused zero head."""
    where = f"ensemble member {spec.id}"
    arch = spec.architecture
    try:
        network = build_network(str(arch.get("name")), num_classes=len(labels), width=float(arch.get("width", 1.0)))
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(f"{where} architecture: {exc}") from exc
    weights = read_state_dict(folder / spec.weights, f"{where} weights file {spec.weights}")
    if spec.has_head:
        head = read_state_dict(folder / spec.head_weights, f"{where} head_weights file {spec.head_weights}") \
            if spec.head_weights else None
    else:  # its logits are never used; a head stored with it (an imported headless network's zeros) is dropped
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
        head = {"weight": torch.zeros(len(labels), network.head.in_features), "bias": torch.zeros(len(labels))}
    try:
        load_weights_into(network, weights, head)
    except ModelFolderError as exc:
        raise ModelFolderError(f"{where}: {exc.message}") from exc
    network.eval()
    return Member(name=f"m{index}", id=spec.id, network=network, has_head=spec.has_head)


def read_model_folder(folder: Path) -> LoadedModel:
    """Read, check and load one model folder (uncached). Raises ModelFolderError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    try:
        card = read_card(folder)
        _check_digests(card, folder)
        labels = read_labels(folder / card.labels)
        network = _build(card, labels)
        weights = read_state_dict(folder / card.weights, f"weights file {card.weights}")
        head = read_state_dict(folder / card.head_weights, f"head_weights file {card.head_weights}") \
            if card.head_weights else None
        load_weights_into(network, weights, head)
        network.eval()
        specs, tta = parse_ensemble(card.extra)
        members: tuple[Member, ...] = ()
        if specs:
            members = (Member(name="m0", id=card.id, network=network, has_head=card.extra.get("has_head", True)
                              is not False),
                       *(_load_member(spec, i, labels, folder) for i, spec in enumerate(specs, start=1)))
        gallery_labels = _gallery_labels(card, folder)
        has_head = card.extra.get("has_head", True) is not False
        head = labels if has_head else ()
        syndromes = head + tuple(x for x in gallery_labels if x.id not in {y.id for y in head})
        gallery = read_gallery(folder / card.gallery, syndromes) if card.gallery else None
        views = max(1, len(members)) * len(tta.augmentations)
        if gallery is not None and gallery.views != views:
            raise ModelFolderError(f"{card.gallery} has {gallery.views} embedding view(s) per image but the "
                                   f"ensemble ranks with {views} (members × test-time augmentations)")
    except ModelFolderError as exc:
        if exc.folder is None:
            raise ModelFolderError(exc.message, folder=folder) from exc
        raise
    return LoadedModel(card=card, labels=labels, network=network, gallery=gallery,
                       version=card.version_string, folder=folder, members=members, tta=tta,
                       gallery_labels=gallery_labels)


def _gallery_labels(card: ModelCard, folder: Path) -> tuple[Label, ...]:
    """The syndromes ``model.json``'s ``gallery_labels`` file lists (labels.json's format), or none."""
    name = card.extra.get("gallery_labels")
    if not name:
        return ()
    if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
        raise ModelFolderError("model.json gallery_labels must name a file inside the model folder")
    return read_labels(folder / name)


def _folder(root: Path, model_id: str) -> Path:
    if not MODEL_ID_PATTERN.match(model_id):
        raise ModelFolderError(f"{model_id!r} is not a valid model id (letters, digits, . _ -)")
    return Path(root) / model_id


def load_model(root: Path, model_id: str = DEFAULT_MODEL_ID, *, approximate_from: int | None = None) -> LoadedModel:
    """The model ``root/model_id``, loaded once per process (thread-safe); later calls return the same object.

    Its gallery's search index is loaded here when one was saved for this very gallery file (seconds: the
    gallery file is hashed to prove it), and otherwise built here when the gallery is large enough to need
    one (``approximate_from``: rows of 512 floats, :data:`app.nets.search.APPROXIMATE_FROM` by default):
    minutes at a million rows, logged, and saved for the next start when the folder is writable."""
    folder = _folder(root, model_id)
    key = (str(folder.resolve()), model_id)
    with _cache_lock:  # held while loading, so concurrent first requests wait instead of loading twice
        model = _cache.get(key)
        if model is None:
            model = read_model_folder(folder)
            if model.gallery is not None and model.card.gallery:
                prepare_search(model.gallery, folder / model.card.gallery, approximate_from=approximate_from)
            _cache[key] = model
            _log.info("loaded model %s from %s", model.version, folder)
        return model


def clear_cache() -> None:
    """Forget loaded models (tests; or an operator swapping a model folder without a restart)."""
    with _cache_lock:
        _cache.clear()


def list_models(root: Path) -> list[ModelCard]:
    """Cards of the model folders under ``root``, sorted by id. A folder whose card does not parse is
    skipped with a warning: one broken folder must not hide the others (loading it still raises)."""
    root = Path(root)
    if not root.is_dir():
        return []
    cards = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "model.json").is_file()):
        try:
            cards.append(read_card(folder))
        except ModelFolderError as exc:
            _log.warning("skipping model folder %s: %s", folder, exc.message)
    return cards
