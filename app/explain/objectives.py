"""What an attribution map explains: an *objective*, a scalar function of the input face.

Two kinds, one interface:

* ``logit``: the pre-softmax logit of class ``target`` of the network's head (what every map explained
  before objectives existed; its key ``logit:<index>``).
* ``similarity``: the cosine similarity between the face's embedding and a fixed *reference* embedding:
  another case (``similarity:case:<case id>``), one gallery image (``similarity:gallery:<image id>``) or a
  syndrome's gallery centroid (``similarity:centroid:<syndrome id>``). GestaltMatcher ranks syndromes by
  exactly this quantity (a syndrome's score is its nearest gallery image), so a similarity map explains the
  ranking itself rather than the auxiliary softmax head.

Why one scalar module rather than special cases in every method: every method (Captum's included) attributes
``model(x)[:, target]``. :func:`objective_module` turns an objective into such a model — for a logit the
head's logits (``target`` = the class), for a similarity a module returning (N, 1) cosines (``target`` = 0)
— so the ten methods work for every objective unchanged. Grad-CAM of a similarity is then Chen et al.'s
"Adapting Grad-CAM for embedding networks" (WACV 2020) for one pair: the layer's activations weighted by
the spatial mean of the similarity's gradient. Occlusion uses :meth:`InferenceForward.with_similarity
<app.explain.occlusion.InferenceForward.with_similarity>`, the folded no-grad copy ending in the same
cosine, so it measures the *drop in similarity* when a square is hidden.

Completeness: integrated gradients sums to ``f(x) - f(baseline)`` for a similarity up to its quadrature
error. DeepLIFT needs one more step: Captum's rules know no normalisation, so the division by ``|e|`` would
get its plain gradient at ``e``, which is orthogonal to ``e`` — the map of the demo model then summed to
0.06 for a change in similarity of 0.92. :func:`deeplift_model` therefore replaces the cosine, for DeepLIFT
only, by the linear function ``m·e + c`` whose multiplier ``m`` is the *secant* of the cosine between the
baseline's and the face's embeddings (the mean gradient along that straight segment, 64 Gauss–Legendre
points in 512-d, no network passes): the Rescale idea applied to the last operation, so the map sums to
``cos(x) - cos(baseline)`` again.

Calling it (issue 10's evaluations, the compare service, the cohort command)::

    from app.explain.engine import Explainer
    from app.explain.objectives import Objective

    explainer = Explainer(network)
    objective = Objective.similarity(reference_embedding, name="similarity:case:abc")  # or Objective.logit(3)
    maps = explainer.explain(crop, objective=objective, methods=["gradcam", "occlusion"])
    objective.key   # "similarity:case:abc" — part of every cache key, file name and API answer

Pure torch / numpy: no web layer, no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "Objective",
    "SimilarityOutput",
    "cosine",
    "deeplift_model",
    "objective_module",
    "parse_key",
]

KINDS = ("logit", "similarity")
#: What a similarity reference may be; the part after it is an id (case id, gallery image id, syndrome id).
REFERENCE_KINDS = ("case", "gallery", "centroid", "image")
_NAME = re.compile(r"similarity:(case|gallery|centroid|image):[A-Za-z0-9_.\-]{1,120}")


@dataclass(frozen=True, eq=False)
class Objective:
    """A scalar objective; build with :meth:`logit` or :meth:`similarity`, never mutate.

    ``reference`` is stored L2-normalised (float32, 512-d), so the similarity is ``e·r̂ / |e|``.
    ``key`` is the stable string that names the objective in cache keys, files and answers.
    """

    kind: Literal["logit", "similarity"]
    key: str
    target: int = 0
    reference: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def logit(cls, target: int) -> Objective:
        """The pre-softmax logit of class ``target``."""
        if isinstance(target, bool) or not isinstance(target, int | np.integer) or int(target) < 0:
            raise ValueError(f"a logit objective needs a class index >= 0; got {target!r}")
        return cls(kind="logit", key=f"logit:{int(target)}", target=int(target))

    @classmethod
    def similarity(cls, reference: np.ndarray | Tensor, *, name: str) -> Objective:
        """Cosine similarity to ``reference`` (any non-zero finite 1-d embedding), named ``name``.

        ``name`` must read ``similarity:<case|gallery|centroid|image>:<id>``: the name, not the numbers, is the
        cache key (the same reference under the same model version is the same embedding), so it must say
        where the reference came from.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"a similarity objective's name must read similarity:<{'|'.join(REFERENCE_KINDS)}>:"
                             f"<id>; got {name!r}")
        values = reference.detach().cpu().numpy() if isinstance(reference, Tensor) else np.asarray(reference)
        values = values.astype(np.float64).reshape(-1) if values.ndim == 2 and values.shape[0] == 1 else \
            values.astype(np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"a reference embedding must be one vector; got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("the reference embedding has non-finite values")
        norm = float(np.linalg.norm(values))
        if norm <= 1e-12:
            raise ValueError("the reference embedding is all zeros")
        unit = np.ascontiguousarray(values / norm, dtype=np.float32)
        unit.setflags(write=False)
        return cls(kind="similarity", key=name, target=0, reference=unit)

    @property
    def label(self) -> str:
        """Human-readable: ``logit of class 3`` / ``similarity to case abc``."""
        if self.kind == "logit":
            return f"logit of class {self.target}"
        _, what, ident = self.key.split(":", 2)
        return f"similarity to {what} {ident}"


def parse_key(key: str) -> tuple[str, str, str]:
    """``"logit:3"`` → ("logit", "", "3"); ``"similarity:case:abc"`` → ("similarity", "case", "abc").

    ValueError for anything else (keys come back from URLs and files).
    """
    if isinstance(key, str) and re.fullmatch(r"logit:[0-9]{1,6}", key):
        return "logit", "", key.split(":", 1)[1]
    if isinstance(key, str) and _NAME.fullmatch(key):
        _, what, ident = key.split(":", 2)
        return "similarity", what, ident
    raise ValueError(f"not an objective key: {key!r} (logit:<index> or similarity:<kind>:<id>)")


def cosine(embedding: Tensor, unit_reference: Tensor) -> Tensor:
    """(N, D) embeddings, (D,) unit reference → (N, 1) cosine similarities, differentiable everywhere but 0."""
    return (embedding @ unit_reference).unsqueeze(1) / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)


class SimilarityOutput(nn.Module):
    """``x ↦ cos(network(x)[1], r)`` as an (N, 1) output, so methods attribute it with ``target=0``.

    Uses the network's ``forward`` (the contract is ``(logits, embedding)``), not an architecture-specific
    method, so any network honouring the contract works. The reference is a buffer on the network's device.
    """

    def __init__(self, network: nn.Module, reference: np.ndarray) -> None:
        super().__init__()
        self.network = network
        device = next(network.parameters()).device
        self.register_buffer("reference", torch.as_tensor(np.array(reference), dtype=torch.float32, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return cosine(self.network(x)[1], self.reference)


def objective_module(network: nn.Module, objective: Objective, logits_only: nn.Module) -> tuple[nn.Module, int]:
    """(model whose ``[:, target]`` is the objective, target) for the methods; ``logits_only`` for logits."""
    if objective.kind == "logit":
        return logits_only, objective.target
    assert objective.reference is not None
    return SimilarityOutput(network, objective.reference).eval(), 0


class _LinearEmbeddingOutput(nn.Module):
    """``x ↦ network(x)[1] · m + c`` as (N, 1): the cosine's secant line, for DeepLIFT (see the module notes)."""

    def __init__(self, network: nn.Module, multiplier: Tensor, offset: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("multiplier", multiplier)
        self.offset = float(offset)

    def forward(self, x: Tensor) -> Tensor:
        return (self.network(x)[1] @ self.multiplier).unsqueeze(1) + self.offset


def secant_multiplier(e: Tensor, e0: Tensor, unit_reference: Tensor, points: int = 64) -> Tensor:
    """∫₀¹ ∇cos(e0 + t(e − e0), r̂) dt by Gauss–Legendre quadrature: ``m·(e − e0) = cos(e) − cos(e0)``."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    t = torch.tensor((nodes + 1) / 2, dtype=torch.float64, device=e.device)
    w = torch.tensor(weights / 2, dtype=torch.float64, device=e.device)
    r = unit_reference.double()
    path = e0.double()[None, :] + t[:, None] * (e.double() - e0.double())[None, :]  # (P, D)
    norm = path.norm(dim=1, keepdim=True).clamp_min(1e-12)
    grads = r[None, :] / norm - (path @ r)[:, None] * path / norm**3  # ∇ (e·r̂ / |e|)
    return (w[:, None] * grads).sum(dim=0)


def deeplift_model(model: nn.Module, network: nn.Module | None, objective: Objective | None, x: Tensor,
                   baseline: Tensor) -> nn.Module:
    """The model DeepLIFT should attribute for ``objective``: ``model`` itself for a logit, else the secant line."""
    if objective is None or objective.kind == "logit" or network is None:
        return model
    assert objective.reference is not None
    with torch.no_grad():
        e = network(x)[1][0].double()
        e0 = network(baseline)[1][0].double()
    unit = torch.as_tensor(np.array(objective.reference), dtype=torch.float64, device=e.device)
    multiplier = secant_multiplier(e, e0, unit)
    offset = float(e @ unit / e.norm()) - float(e @ multiplier)  # the line meets the cosine at the face
    return _LinearEmbeddingOutput(network, multiplier.float(), offset).eval()
