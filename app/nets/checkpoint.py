"""Reading and writing iResNet weights under arcface_torch key names, with the classifier head.

How the head is stored (the decision every model folder follows):

* In memory and in files this project writes, the classifier is the module ``head`` = Linear(512, C), so
  one *merged* state dict holds the arcface_torch backbone keys unprefixed (``conv1.weight``,
  ``layer1.0.bn1.weight``, …, ``fc.weight``, ``features.*``) plus ``head.weight`` and ``head.bias``.
* GestaltMatcher-Arc and arcface_torch ship the classifier separately from the backbone, so a folder may
  instead give ``weights`` = a backbone state dict and ``head_weights`` = the classifier's own state dict.
  The classifier is recognised under the common spellings of a Linear(512, C): ``weight``/``bias``,
  ``head.*``, ``fc.*``, ``classifier.*``, ``classifier.1.*`` (GestaltMatcher-Arc's
  ``Sequential(Dropout, Linear)``), ``linear.*``, ``logits.*``.
* ``module.`` prefixes (DataParallel / DDP) are removed and ``{"state_dict": ...}`` style wrappers are
  opened. ``num_batches_tracked`` buffers may be absent (older checkpoints); they do not affect inference.
* Floating tensors may be stored as float16 (to keep files small) and are cast to float32 on load.

Anything else — a missing or unexpected key, a wrong shape, a head whose size does not match the labels,
non-finite values — is refused with a :class:`ModelFolderError` naming the key. Files are only ever read
with ``torch.load(path, map_location="cpu", weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from app.nets.errors import ModelFolderError
from app.nets.iresnet import EMBEDDING_DIM, IResNet

__all__ = [
    "HEAD_PREFIX",
    "HEAD_SPELLINGS",
    "export_state_dict",
    "extract_head",
    "load_weights_into",
    "merge_weights",
    "read_state_dict",
    "split_state_dict",
]

HEAD_PREFIX = "head."
#: Prefixes under which a separately shipped Linear(512, C) classifier is recognised, in preference order.
HEAD_SPELLINGS: tuple[str, ...] = ("", "head.", "fc.", "classifier.", "classifier.1.", "linear.", "logits.")
#: Prefixes in a *merged* state dict that may hold the head (``fc.`` is the backbone's own layer there).
_MERGED_HEAD_SPELLINGS: tuple[str, ...] = ("head.", "classifier.", "classifier.1.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "backbone")
_PARALLEL_PREFIX = "module."
_OPTIONAL_SUFFIX = "num_batches_tracked"
_SHOW = 3  # how many offending keys a message lists before "and N more"

StateDict = dict[str, torch.Tensor]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown if len(keys) <= _SHOW else f"{shown} (and {len(keys) - _SHOW} more)"


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _as_state_dict(obj: Any, what: str) -> StateDict:
    """Open wrappers, check it is a str → Tensor mapping, drop DataParallel prefixes."""
    for _ in range(3):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ModelFolderError(f"{what} is not a state dict (a mapping of parameter names to tensors)")
    state: StateDict = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelFolderError(f"{what} is not a state dict: entry {key!r} is not a tensor")
        state[key.removeprefix(_PARALLEL_PREFIX)] = value
    return state


def read_state_dict(path: Path, what: str | None = None) -> StateDict:
    """Load a state dict file safely (``weights_only=True``, CPU) and normalise its keys."""
    what = what or f"weights file {path.name}"
    if not path.is_file():
        raise ModelFolderError(f"{what} is missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, a non-weights object: all mean "not usable"
        raise ModelFolderError(f"{what} cannot be read as a weights-only torch file: {exc}") from exc
    return _as_state_dict(obj, what)


def _linear_at(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict | None:
    weight = state.get(prefix + "weight")
    if weight is None or weight.dim() != 2:
        return None
    head = {"weight": weight}
    if prefix + "bias" in state:
        head["bias"] = state[prefix + "bias"]
    return head


def _check_head(head: StateDict, what: str) -> StateDict:
    weight = head["weight"]
    if weight.shape[1] != EMBEDDING_DIM:
        raise ModelFolderError(f"{what} takes {weight.shape[1]}-d input, expected the {EMBEDDING_DIM}-d embedding")
    bias = head.get("bias")
    if bias is None:
        raise ModelFolderError(f"{what} has a weight but no bias; expected a Linear({EMBEDDING_DIM}, C) with bias")
    if bias.shape != (weight.shape[0],):
        raise ModelFolderError(f"{what} bias has shape {_shape(bias.shape)}, expected ({weight.shape[0]},)")
    return {"weight": weight, "bias": bias}


def extract_head(state: Mapping[str, torch.Tensor], what: str = "head_weights") -> StateDict:
    """Find the Linear(512, C) in a separately shipped classifier state dict (see ``HEAD_SPELLINGS``)."""
    state = _as_state_dict(state, what)
    for prefix in HEAD_SPELLINGS:
        head = _linear_at(state, prefix)
        if head is not None and head["weight"].shape[1] == EMBEDDING_DIM:
            return _check_head(head, what)
    for prefix in HEAD_SPELLINGS:  # a 2-D weight of the wrong width: say so rather than "not found"
        head = _linear_at(state, prefix)
        if head is not None:
            return _check_head(head, what)
    spellings = ", ".join(f"{p}weight" for p in HEAD_SPELLINGS)
    raise ModelFolderError(f"{what} has no Linear({EMBEDDING_DIM}, C) classifier (looked for {spellings})")


def merge_weights(backbone: Mapping[str, torch.Tensor], head: Mapping[str, torch.Tensor] | None = None) -> StateDict:
    """One merged state dict (arcface_torch backbone keys + ``head.*``) from a merged or split checkpoint."""
    merged = _as_state_dict(backbone, "weights")
    if head is not None:
        found = extract_head(head)
        if any(k.startswith(HEAD_PREFIX) for k in merged):
            raise ModelFolderError("weights already contain head.* but head_weights were given as well")
        merged.update({HEAD_PREFIX + k: v for k, v in found.items()})
        return merged
    if HEAD_PREFIX + "weight" not in merged:
        for prefix in _MERGED_HEAD_SPELLINGS[1:]:
            found_head = _linear_at(merged, prefix)
            if found_head is not None:
                for key in list(merged):
                    if key.startswith(prefix):
                        del merged[key]
                merged.update({HEAD_PREFIX + k: v for k, v in found_head.items()})
                break
    return merged


def _hint(unexpected: list[str]) -> str:
    if any(k.startswith("base.") or "Conv_" in k or "Gemm_" in k for k in unexpected):
        return " (these look like onnx2torch names; re-key the checkpoint to arcface_torch names)"
    return ""


def load_weights_into(
    network: IResNet,
    weights: Mapping[str, torch.Tensor],
    head_weights: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Check a checkpoint against ``network`` key by key and load it as float32, or raise ModelFolderError."""
    merged = merge_weights(weights, head_weights)
    expected = network.state_dict()
    spec = network.spec
    if HEAD_PREFIX + "weight" not in merged:
        raise ModelFolderError(
            "weights have no classifier head (head.weight / head.bias): store it in the weights "
            "or give head_weights in model.json"
        )
    head = _check_head({k.removeprefix(HEAD_PREFIX): v for k, v in merged.items() if k.startswith(HEAD_PREFIX)},
                       "head")
    if head["weight"].shape[0] != spec.num_classes:
        raise ModelFolderError(f"head has {head['weight'].shape[0]} outputs, labels list {spec.num_classes}")

    missing = [k for k in expected if k not in merged and not k.endswith(_OPTIONAL_SUFFIX)]
    if missing:
        noun = "key" if len(missing) == 1 else "keys"
        raise ModelFolderError(f"weights are missing {noun} {_listing(missing)}")
    unexpected = [k for k in merged if k not in expected]
    if unexpected:
        noun = "key" if len(unexpected) == 1 else "keys"
        raise ModelFolderError(f"weights have unexpected {noun} {_listing(unexpected)}{_hint(unexpected)}")

    converted: StateDict = {}
    for key, target in expected.items():
        if key not in merged:  # an absent num_batches_tracked counter: keep the network's own
            converted[key] = target
            continue
        value = merged[key]
        if value.shape != target.shape:
            raise ModelFolderError(
                f"weights key {key} has shape {_shape(value.shape)} but {spec.name} at width {spec.width:g} "
                f"expects {_shape(target.shape)}"
            )
        if value.is_floating_point():
            value = value.to(torch.float32)
            if not torch.isfinite(value).all():
                raise ModelFolderError(f"weights key {key} contains NaN or infinite values")
        converted[key] = value.to(target.dtype)
    network.load_state_dict(converted, strict=True)


def export_state_dict(network: IResNet, dtype: torch.dtype = torch.float16) -> StateDict:
    """The merged state dict (backbone + ``head.*``) with floating tensors cast to ``dtype`` for saving."""
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in network.state_dict().items()}


def split_state_dict(network: IResNet, dtype: torch.dtype = torch.float32) -> tuple[StateDict, StateDict]:
    """(backbone state dict under arcface_torch names, head state dict ``weight``/``bias``) — the split form."""
    merged = export_state_dict(network, dtype)
    backbone = {k: v for k, v in merged.items() if not k.startswith(HEAD_PREFIX)}
    head = {k.removeprefix(HEAD_PREFIX): v for k, v in merged.items() if k.startswith(HEAD_PREFIX)}
    return backbone, head
