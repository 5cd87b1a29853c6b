"""Explanation maps for an ensemble (GestaltMatcher-Arc ranks with several networks; see app.nets.ensemble).

Two ways to explain an ensemble's output:

* **one member chosen** (``member="m1"`` or the member's id): that network's maps, exactly what
  :class:`~app.explain.engine.Explainer` gives for it alone;
* **the objective averaged over the members** (``member=None``): the objective is
  ``(1/K) Σ_k f_k(x)`` — the mean of the target logit over the members that have a head, or the mean
  cosine similarity of each member's embedding of the face to *its own* embedding of a reference face.
  The members are separate networks, so the gradient of that mean is the mean of the members'
  gradients, and every method whose map is *linear in the objective's gradient or difference* gives the
  mean objective's map as the mean of the members' maps: input × gradient, integrated gradients (and its
  completeness: the map sums to the change in the mean objective), DeepLIFT (contributions of a sum of
  disjoint networks add), guided backprop and deconvolution (their rules are linear in the upstream
  gradient), occlusion (a difference of objectives) and the signed Grad-CAM (each member's CAM of its
  share, upsampled into the same 112×112 crop). Saliency, SmoothGrad (absolute values) and guided
  Grad-CAM (a product) are not linear: the mean of their maps would not be the map of the mean, so they
  are refused for the averaged objective with a message saying so — choose one member for them.

Pure torch / numpy (ML core): no web layer, no database. Each member gets its own private Explainer, so
the shared networks never carry hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from app.explain.engine import Explainer
from app.explain.objectives import Objective
from app.nets.ensemble import Member
from app.nets.preprocess import preprocess

__all__ = ["LINEAR_METHODS", "EnsembleExplainer"]

#: Methods whose map of a mean objective is the mean of the members' maps (see the module docstring).
LINEAR_METHODS = frozenset({
    "input_x_gradient", "integrated_gradients", "deeplift", "guided_backprop", "deconvolution", "gradcam",
    "occlusion",
})


class EnsembleExplainer:
    """One private :class:`Explainer` per member; maps for one member or for the member-averaged objective."""

    def __init__(self, members: Sequence[Member], *, gradcam_layer: str = "layer4",
                 device: str | torch.device = "cpu") -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = tuple(members)
        self._explainers = {m.name: Explainer(m.network, gradcam_layer=gradcam_layer, device=device)
                            for m in self.members}

    def _member(self, name: str) -> Member:
        for m in self.members:
            if name in (m.name, m.id):
                return m
        known = ", ".join(f"{m.name} ({m.id})" for m in self.members)
        raise ValueError(f"unknown ensemble member {name!r}; the members are {known}")

    def _embedding(self, member: Member, crop: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return member.network.embed(preprocess([crop]))[0].float().numpy()

    def explain(
        self,
        crop: np.ndarray,
        *,
        methods: Sequence[str],
        target: int | None = None,
        reference_crop: np.ndarray | None = None,
        reference_name: str = "similarity:image:reference",
        member: str | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        mode: str = "exact",
        on_map: Callable[[str, np.ndarray], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Maps of ``methods`` for the logit of class ``target`` or the similarity to ``reference_crop``.

        ``member`` chooses one network; ``None`` averages the objective over the members (heads only for a
        logit; every member for a similarity, each comparing with its own embedding of the reference).
        ``mode``, ``on_map`` and ``on_progress`` are :meth:`Explainer.explain`'s (the explanation worker
        stores each map as it comes): for the mean, ``on_map`` is called once per method after the last
        member, and the progress runs over the members in turn.
        """
        if (target is None) == (reference_crop is None):
            raise ValueError("give exactly one of target (a class index) or reference_crop (an aligned face)")
        chosen = [self._member(member)] if member is not None else list(self.members)
        if target is not None:
            chosen = [m for m in chosen if m.has_head]
            if not chosen:
                raise ValueError(f"member {member!r} has no syndrome head; explain a similarity instead")
        if member is None:
            nonlinear = [m for m in methods if m not in LINEAR_METHODS]
            if nonlinear and len(chosen) > 1:
                raise ValueError(
                    f"{', '.join(nonlinear)}: the mean of the members' maps is not the map of the averaged "
                    f"objective for these methods; choose one member (member=...) or use "
                    f"{', '.join(sorted(LINEAR_METHODS))}"
                )
        single = len(chosen) == 1
        total: dict[str, np.ndarray] = {}
        for i, m in enumerate(chosen):
            goal: dict[str, Any] = {"target": target} if target is not None else {
                "objective": Objective.similarity(self._embedding(m, reference_crop), name=reference_name)}
            progress = None if on_progress is None else (
                lambda fraction, i=i: on_progress((i + fraction) / len(chosen)))
            maps = self._explainers[m.name].explain(crop, **goal, methods=methods, params=params, mode=mode,
                                                    on_map=on_map if single else None,
                                                    on_progress=progress)
            for key, value in maps.items():
                total[key] = total.get(key, 0) + value.astype(np.float64)
        out = {key: (value / len(chosen)).astype(np.float32) for key, value in total.items()}
        if on_map is not None and not single:
            for key, value in out.items():
                on_map(key, value)
        return out
