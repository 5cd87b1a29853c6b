"""The explanation engine: a panel of attribution maps for one aligned face and one target class.

Why an engine rather than calling Captum per method:

* **Isolation.** Captum's hook-based methods (guided backprop, deconvolution, DeepLIFT, Grad-CAM) put hooks
  on the model they are given and never call ``eval()``. The registry's network is shared by concurrent
  prediction threads, so an :class:`Explainer` deep-copies it once, keeps the copy in eval mode with
  parameters frozen (no weight gradients are ever needed, and none are computed), and runs every request
  under its own lock. Nothing is ever attached to the shared network.
* **Sharing.** Methods declare the passes they need (see :mod:`app.explain.methods.base`); a pass runs once
  per request. Saliency, input × gradient and Grad-CAM come from one forward/backward; Guided Grad-CAM is
  the product of the guided-backprop pass and that Grad-CAM; IG steps and SmoothGrad samples run in
  batches; DeepLIFT runs input and baseline as one batch of two; occlusion runs on a no-grad inference copy.
* **Streaming.** Maps are handed to ``on_map`` as they finish, cheapest first, so a page can show the fast
  maps while integrated gradients and occlusion are still running; ``on_progress`` gets the overall fraction
  weighted by each pass's rough cost.

* **Device.** The private copy lives on the explainer's device (``"cpu"``, ``"cuda"`` / ``"cuda:N"``, or
  ``"auto"``: see :func:`resolve_device`); inputs are moved there and every tensor the methods create is created
  on the input's device, so a worker with a GPU runs the whole panel on it. Maps always come back as CPU float32
  numpy arrays. On CUDA the convolutions and matrix products run in full float32 (cuDNN and cuBLAS would
  otherwise use TF32 for convolutions, a 10-bit mantissa: occlusion differences and the completeness of
  integrated gradients and DeepLIFT are small differences of large logits); ``allow_tf32=True`` opts back in.

The attributed quantity is an *objective* (:mod:`app.explain.objectives`): the pre-softmax logit
``network(x)[0][:, target]`` of the classifier head (``target=c``, or ``objective=Objective.logit(c)``), or the
cosine similarity of the face's embedding to a reference embedding (``objective=Objective.similarity(...)``).
Every method works for every objective: the methods attribute ``ctx.model(x)[:, ctx.target]``, and the engine
makes that the objective.
"""

from __future__ import annotations

import contextlib
import copy
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from app.explain import fast_calibrate
from app.explain import fast_plan as plans
from app.explain.fast import EXACT, bf16_inference, check_mode, fast_context
from app.explain.folded import InferenceForward, inference_forward
from app.explain.methods.base import Context, Method, to_map
from app.explain.objectives import Objective, objective_module
from app.explain.registry import get_method, normalise_params
from app.nets.iresnet import INPUT_SIZE, IResNet
from app.nets.preprocess import preprocess

__all__ = ["DEFAULT_BATCH_SIZE", "Explainer", "LogitsOnly", "prepare_input", "resolve_device"]

#: Images per forward/backward in IG and SmoothGrad: large enough to amortise per-call overhead, small
#: enough that an iResNet-100 backward stays well under a gigabyte or two of activations on CPU.
DEFAULT_BATCH_SIZE = 16


_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::([0-9]+))?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a setting names: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``
    or ``"cuda:N"`` (case and surrounding blanks ignored), or a ``torch.device`` of type cpu or cuda.

    Raises ValueError for anything else, and for a CUDA device this process cannot use (no CUDA build or no
    GPU, or an index beyond the GPUs present), saying which.
    """
    if isinstance(device, torch.device):
        if device.type not in {"cpu", "cuda"}:
            raise ValueError(f"device must be a cpu or cuda device; got {device}")
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise ValueError(f"device must be a string or a torch.device; got {type(device).__name__}")
    match = _DEVICE_PATTERN.fullmatch(spec)
    if match is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index); got {device!r}")
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"device {spec!r} was asked for, but CUDA is not available to this process "
                         f"(torch {torch.__version__}, {build}); use 'cpu' or 'auto'")
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {spec!r} was asked for, but this machine has {count} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cuda")


# cuDNN convolutions use TF32 unless told otherwise (cuBLAS matmuls follow torch.set_float32_matmul_precision).
# The switches are process-wide, so explainers running at once share one "full float32" section: the first to
# enter saves the caller's settings, the last to leave restores them. torch ≥ 2.9 has per-operation
# ``fp32_precision`` switches (and refuses to read the legacy ``allow_tf32`` once they disagree); older torch
# only has ``allow_tf32``.
_PRECISION_LOCK = threading.Lock()
_precision_users = 0
_saved_precision: tuple[Any, Any] = (None, None)


def _fp32_switches() -> tuple[Any, Any, str, Any]:
    """(conv switch holder, matmul switch holder, attribute name, full-float32 value) for this torch."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv, torch.backends.cuda.matmul, "fp32_precision", "ieee"
    return torch.backends.cudnn, torch.backends.cuda.matmul, "allow_tf32", False


@contextlib.contextmanager
def _full_float32_cuda() -> Iterator[None]:
    global _precision_users, _saved_precision
    conv, matmul, name, full = _fp32_switches()
    with _PRECISION_LOCK:
        if _precision_users == 0:
            _saved_precision = (getattr(conv, name), getattr(matmul, name))
            setattr(conv, name, full)
            setattr(matmul, name, full)
        _precision_users += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _precision_users -= 1
            if _precision_users == 0:
                setattr(conv, name, _saved_precision[0])
                setattr(matmul, name, _saved_precision[1])


class LogitsOnly(nn.Module):
    """``network(x)[0]``: the head's logits alone, the output Captum and the methods attribute."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)[0]


def prepare_input(crop: np.ndarray | Tensor, device: str | torch.device = "cpu") -> Tensor:
    """uint8 (112, 112, 3) RGB crop, or a preprocessed (1, 3, 112, 112) tensor → float32 input on ``device``."""
    if isinstance(crop, np.ndarray):
        return preprocess(crop).to(device)
    if not isinstance(crop, Tensor):
        raise ValueError(f"crop must be a uint8 numpy array or a tensor; got {type(crop).__name__}")
    if crop.shape != (1, 3, INPUT_SIZE, INPUT_SIZE) or not crop.is_floating_point():
        raise ValueError(
            f"a tensor crop must be a preprocessed float (1, 3, {INPUT_SIZE}, {INPUT_SIZE}) batch; "
            f"got {crop.dtype} {tuple(crop.shape)}"
        )
    x = crop.detach().to(dtype=torch.float32).clone().contiguous()
    if not torch.isfinite(x).all():
        raise ValueError("the crop tensor has non-finite values")
    return x.to(device)


def _check_target(target: Any, num_classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise ValueError(f"target must be a class index (int); got {target!r}")
    if not 0 <= int(target) < num_classes:
        raise ValueError(f"target {int(target)} is out of range for a head with {num_classes} classes")
    return int(target)


def check_request(methods: Sequence[str], params: Mapping[str, Any] | None) -> tuple[list[str], dict[str, dict]]:
    """The requested method ids (in order, each once) and every *given* parameter set normalised, requested or not
    (a typo must not pass silently); ValueError for anything else. One check for a face and for a cohort."""
    if isinstance(methods, str):
        raise ValueError("methods must be a sequence of method ids, not a single string")
    requested = list(dict.fromkeys(methods))
    if not requested:
        raise ValueError("no methods requested")
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ValueError("params must map method ids to parameter mappings")
    return requested, {method_id: normalise_params(method_id, params.get(method_id))
                       for method_id in [*params, *requested]}


def _plan(methods: Sequence[str], params: dict[str, dict[str, Any]]) -> list[tuple[Method, dict[str, Any]]]:
    """Requested methods, cheapest marginal cost first (ties in requested order), so fast maps stream early."""
    pending = [(get_method(method_id), params[method_id]) for method_id in methods]
    done: set[str] = set()
    ordered = []
    while pending:
        def marginal(item: tuple[Method, dict[str, Any]]) -> float:
            return sum(cost for key, cost in item[0].passes(item[1]).items() if key not in done)

        best = min(pending, key=marginal)  # min() keeps the first of equals: the caller's order breaks ties
        pending.remove(best)
        done.update(best[0].passes(best[1]))
        ordered.append(best)
    return ordered


class Explainer:
    """Owns a private eval-mode copy of the network and a lock, so hooks never leak between requests.

    ``device`` (see :func:`resolve_device`; ``"auto"`` allowed) is where the copy lives and every pass runs.
    ``allow_tf32`` (CUDA only) lets convolutions and matrix products use TF32; off, they run in full float32.
    """

    def __init__(self, network: IResNet, *, gradcam_layer: str = "layer4",
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device = "cpu",
                 allow_tf32: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        network_copy = copy.deepcopy(network).to(self.device).eval()
        # Only input (and layer) gradients are ever taken: frozen weights keep autograd from tracking them at all
        # (≈5 % per pass on iResNet-50) and keep .grad from ever being written.
        network_copy.requires_grad_(False)
        if self.device.type == "cpu":
            # oneDNN's channels-last convolutions: same numbers up to rounding, about 1.4x faster forward+backward
            # on iResNet-50 (bench/bench_explain.py); hooks and layer activations are unaffected
            network_copy.to(memory_format=torch.channels_last)
        try:
            layer = network_copy.get_submodule(gradcam_layer)
        except AttributeError as exc:
            raise ValueError(f"gradcam_layer {gradcam_layer!r} is not a module of the network") from exc
        self._network = network_copy
        self._model = LogitsOnly(network_copy).eval()
        self._layer = layer
        self._num_classes = int(network.num_classes)
        self._batch_size = batch_size
        self._inference: Callable[[Tensor], Tensor] | None = None
        self._fast_plan: plans.FastPlan | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()
        self._full_float32 = self.device.type == "cuda" and not allow_tf32
        self.gradcam_layer = gradcam_layer

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def _inference_forward(self) -> Callable[[Tensor], Tensor]:
        """No-grad logits function for occlusion, built on first use (it may fold a copy of its own)."""
        if self._inference is None:
            self._inference = inference_forward(self._network)
        return self._inference

    def fast_inference(self) -> InferenceForward:
        """The bf16 twin of the folded inference copy (one of fast mode's candidate networks; built once)."""
        return bf16_inference(self._folded())

    def _folded(self) -> InferenceForward:
        forward = self._inference_forward()
        if not isinstance(forward, InferenceForward):
            raise RuntimeError("fast mode needs the engine's folded inference copy")
        return forward

    def fast_networks(self, objective: Objective | None = None) -> plans.FastNetworks:
        """Fast mode's candidate networks for ``objective`` (default: logits): the engine's float32 module, the folded
        float32 copy and its bf16 twin, each built once per explainer and reused (similarity objectives wrap them)."""
        folded = self._folded()
        if objective is None or objective.kind == "logit":
            return plans.FastNetworks(module=self._model, folded=folded, twin=self.fast_inference,
                                          device=self.device, batch_size=self._batch_size)
        module, _ = objective_module(self._network, objective, self._model)
        reference = objective.reference
        return plans.FastNetworks(module=module, folded=folded.with_similarity(reference),
                                      twin=lambda: self.fast_inference().with_similarity(reference),
                                      device=self.device, batch_size=self._batch_size)

    def fast_plan(self, log: Callable[[str], None] | None = None) -> plans.FastPlan:
        """Which variant each fast method runs here (app.explain.fast_plan): measured on first use per CPU and
        network, then read from memory or the plan file."""
        if self._fast_plan is None:
            if self._digest is None:
                self._digest = plans.network_digest(self._network)
            with torch.inference_mode(False):
                self._fast_plan = plans.plan_for(self.fast_networks(), self._digest, log=log,
                                                 measure=fast_calibrate.calibrate)
        return self._fast_plan

    def explain(
        self,
        crop: np.ndarray | Tensor,
        *,
        target: int | None = None,
        objective: Objective | None = None,
        methods: Sequence[str],
        params: Mapping[str, Mapping[str, Any]] | None = None,
        on_map: Callable[[str, np.ndarray], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
        mode: str = EXACT,
    ) -> dict[str, np.ndarray]:
        """Maps (float32 (112, 112)) of ``methods`` for one objective, keyed in the requested order.

        ``mode`` is ``"exact"`` (the default) or ``"fast"`` (:mod:`app.explain.fast`): in fast mode the methods
        offered there run their measured approximation, every other one runs exact; ``fast.modes_for(methods,
        mode)`` says which, and is what a caller stores with each map.

        Give exactly one of ``target`` (a class index: its logit) or ``objective`` (:class:`Objective`).
        ``params`` maps method id → parameters (merged with defaults; see :func:`normalise_params`).
        Raises ValueError for an unknown method or parameter, an out-of-range target or a malformed crop.
        """
        check_mode(mode)
        if (target is None) == (objective is None):
            raise ValueError("give exactly one of target (a class index) or objective")
        if objective is None:
            objective = Objective.logit(_check_target(target, self._num_classes))
        if not isinstance(objective, Objective):
            raise ValueError(f"objective must be an Objective; got {type(objective).__name__}")
        requested, normalised = check_request(methods, params)
        if objective.kind == "logit":
            _check_target(objective.target, self._num_classes)
        model, model_target = objective_module(self._network, objective, self._model)
        inference = self._inference_forward

        fast_cache: list[tuple[plans.FastPlan, plans.FastNetworks]] = []

        def fast() -> tuple[plans.FastPlan, plans.FastNetworks]:  # the plan and networks, same objective
            if not fast_cache:
                fast_cache.append((self.fast_plan(), self.fast_networks(objective)))
            return fast_cache[0]

        if objective.kind == "similarity":
            reference = objective.reference

            def inference() -> Callable[[Tensor], Tensor]:
                return self._inference_forward().with_similarity(reference)

        plan = _plan(requested, normalised)
        costs: dict[str, float] = {}
        for method, method_params in plan:
            costs.update(method.passes(method_params))

        results: dict[str, np.ndarray] = {}
        # inference_mode(False)/enable_grad: a caller inside no_grad or inference_mode must still get gradients.
        precision = _full_float32_cuda() if self._full_float32 else contextlib.nullcontext()
        with self._lock, precision, torch.inference_mode(False), torch.enable_grad():
            x = prepare_input(crop, self.device)
            ctx = Context(model=model, layer=self._layer, x=x, target=model_target, batch_size=self._batch_size,
                          inference=inference, costs=costs, on_progress=on_progress, network=self._network,
                          fast=fast,
                          objective=objective)
            ctx.report(0.0)
            for method, method_params in plan:
                with fast_context(method.info.id, mode, self.device) as ctx.mode:
                    attribution = method.compute(ctx, method_params)
                result = to_map(attribution) if isinstance(attribution, Tensor) else \
                    np.ascontiguousarray(attribution, dtype=np.float32)
                if result.shape != (INPUT_SIZE, INPUT_SIZE):
                    raise RuntimeError(f"{method.info.id} returned a map of shape {result.shape}")
                results[method.info.id] = result
                if on_map is not None:
                    on_map(method.info.id, result)
            ctx.report(1.0)
        return {method_id: results[method_id] for method_id in requested}
