"""Fast mode's per-CPU choice: which variant each fast method runs, measured at first use, cached per machine and
network.

Why measured rather than fixed: what is fast depends on the CPU. On Intel CPUs with AMX, bfloat16 convolutions
run 6-8x the float32 rate, and the bf16 twin of the folded network (:func:`app.explain.fast.bf16_inference`) is the
fastest way to run many gradient passes. On CPUs without native bf16 arithmetic (an AVX2-only AMD EPYC, for
one) oneDNN emulates it and the same twin is 9-17x *slower* than float32: fixed to bf16, fast mode was seven times
slower than exact there. So at first use, per network, :func:`calibrate` measures each candidate on a probe face
and keeps the fastest that holds the method's agreement bar; the choice is cached in memory and in a small JSON
file per (CPU, torch, threads, device, network digest) under the data directory, and honoured from then on.

Candidates per fast method, each a *precision* (which network computes) and a *work* level (how much):

* precision: ``float32`` (the engine's own network copy: exact's arithmetic), ``float32-folded`` (the
  BatchNorm-folded float32 copy :mod:`app.explain.folded`: the same function up to rounding, with fewer
  operations forward and backward), ``bfloat16`` (the bf16 twin of the folded copy, float32 linear tail);
* work: integrated gradients with fewer Gauss-Legendre steps (the fewest of :data:`IG_LADDER` that hold the
  bar), SmoothGrad with fewer noisy samples (a prefix of exact's noise, so the samples it keeps are exact's),
  occlusion evaluated coarse to fine (:func:`app.explain.coarse_to_fine.coarse_to_fine`: a fraction of the windows
  evaluated, the rest estimated by the linearised tail plus the interpolated error of that estimate).

A candidate holds the bar if its map correlates at least :data:`CALIBRATION_BAR` (Pearson) with the exact map on
the probe: a margin over :data:`app.explain.fast.MIN_FAST_CORR`, since other faces agree a little less than the
probe. Timings are compared per unit of work (one forward+backward image, one occluded window) measured side by
side, so a loaded machine moves both sides alike. Fast mode is never slower than exact: if no candidate holds the
bar with less work, the method runs exact's work on the cheaper float32 network (equal to exact up to rounding).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from app.machine import cpu_name

__all__ = [
    "BFLOAT16",
    "CALIBRATION_BAR",
    "FLOAT32",
    "FOLDED",
    "Choice",
    "FastNetworks",
    "FastPlan",
    "clear_memory_cache",
    "plan_directory",
    "plan_for",
    "plan_key",
    "set_plan_directory",
]

FLOAT32, FOLDED, BFLOAT16 = "float32", "float32-folded", "bfloat16"
PRECISIONS: tuple[str, ...] = (FLOAT32, FOLDED, BFLOAT16)
#: A candidate is kept only if it correlates at least this much with the exact map on the probe face.
CALIBRATION_BAR = 0.995
#: Gauss-Legendre step counts tried for fast integrated gradients (exact: 50), fewest first.
IG_LADDER: tuple[int, ...] = (10, 12, 16, 20, 24, 32)
#: Noisy samples tried for fast SmoothGrad (exact: 25), fewest first.
SG_LADDER: tuple[int, ...] = (12, 16, 20)
#: Fractions of the non-coarse occlusion windows evaluated (the rest interpolated), fewest first.
REFINE_LADDER: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8)
#: Defaults of the exact methods (app.explain.methods); a request's work is scaled from them.
IG_STEPS, SG_SAMPLES, OCC_WINDOW, OCC_STRIDE = 50, 25, 10, 5
#: Bump when the candidates or their meaning change: older cached plans are then measured again.
PLAN_VERSION = 1
FAST_METHODS: tuple[str, ...] = ("integrated_gradients", "smoothgrad", "occlusion")


@dataclass(frozen=True)
class Choice:
    """The variant one fast method runs on this CPU for this network, and why (the measurement behind it)."""

    method: str
    precision: str  # FLOAT32, FOLDED or BFLOAT16
    #: IG: steps at the default 50; SmoothGrad: samples at the default 25; occlusion: fraction of the non-coarse
    #: windows evaluated (1.0 = every window, the exact computation)
    work: float
    seconds: float  # estimated seconds of the method's default map in this variant (probe face)
    exact_seconds: float  # measured seconds of the exact map (probe face)
    agreement: float  # Pearson correlation with the exact map on the probe face
    why: str

    @property
    def speedup(self) -> float:
        return self.exact_seconds / self.seconds if self.seconds > 0 else float("inf")

    def describe(self) -> str:
        unit = {"integrated_gradients": f"{int(self.work)} steps", "smoothgrad": f"{int(self.work)} samples",
                "occlusion": "every window" if self.work >= 1 else f"coarse + {self.work:.0%} refined"}[self.method]
        return f"{self.precision}, {unit}"


@dataclass(frozen=True)
class FastPlan:
    """Every fast method's :class:`Choice` for one (CPU, network), with all the candidates measured."""

    key: str
    cpu: str
    created: str
    calibration_seconds: float
    choices: dict[str, Choice]
    #: every candidate measured: method, precision, work, seconds, agreement, kept (held the bar)
    candidates: tuple[dict[str, Any], ...] = ()
    #: per-unit timings: "fb:<precision>" seconds per forward+backward image, "occ:<precision>" per occluded window
    unit_seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    version: int = PLAN_VERSION

    def choice(self, method: str) -> Choice:
        return self.choices[method]

    def ig_steps(self, requested: int, quadrature: str = "gausslegendre") -> int:
        """Steps fast IG runs for a request of ``requested`` steps: the calibrated count, scaled up for requests
        above the default; other quadrature rules keep their steps (the ladder was measured on Gauss-Legendre)."""
        if quadrature != "gausslegendre":
            return int(requested)
        return _scaled(requested, self.choices["integrated_gradients"].work, IG_STEPS)

    def sg_samples(self, requested: int) -> int:
        """Noisy samples fast SmoothGrad draws for a request of ``requested`` (a prefix of exact's noise)."""
        return _scaled(requested, self.choices["smoothgrad"].work, SG_SAMPLES)

    def occlusion_refine(self, window: int, stride: int) -> float | None:
        """Coarse-to-fine fraction for these window settings (None: every window; only the calibrated ones)."""
        work = self.choices["occlusion"].work
        return work if (window, stride) == (OCC_WINDOW, OCC_STRIDE) and work < 1.0 else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = list(self.candidates)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FastPlan:
        choices = {method: Choice(**values) for method, values in data["choices"].items()}
        if set(choices) != set(FAST_METHODS) or any(c.precision not in PRECISIONS for c in choices.values()):
            raise ValueError("a fast plan must choose a known precision for every fast method")
        return cls(key=data["key"], cpu=data["cpu"], created=data["created"],
                   calibration_seconds=float(data["calibration_seconds"]), choices=choices,
                   candidates=tuple(data.get("candidates", ())), unit_seconds=dict(data.get("unit_seconds", {})),
                   notes=tuple(data.get("notes", ())), version=int(data.get("version", 0)))


def _scaled(requested: int, calibrated: float, default: int) -> int:
    return int(min(requested, math.ceil(calibrated * max(1.0, requested / default))))


# --------------------------------------------------------------------------------------------------
# the networks a plan chooses between


@dataclass
class FastNetworks:
    """What the engine offers calibration and the fast methods: its float32 objective module (exact's network),
    the folded float32 copy, and a lazily built bf16 twin (built once per folded copy, app.explain.fast)."""

    module: Callable[[Tensor], Tensor]
    folded: Any  # app.explain.folded.InferenceForward
    twin: Callable[[], Any]
    device: torch.device
    batch_size: int

    def gradient_model(self, precision: str) -> Callable[[Tensor], Tensor]:
        if precision == FLOAT32:
            return self.module
        return self.folded.differentiable if precision == FOLDED else self.twin().differentiable

    def occlusion_forward(self, precision: str) -> Any:
        return self.twin() if precision == BFLOAT16 else self.folded


# --------------------------------------------------------------------------------------------------
# where plans live


_DIRECTORY: Path | None = None
_MEMORY: dict[str, FastPlan] = {}
_LOCK = threading.Lock()


def set_plan_directory(directory: str | Path | None) -> None:
    """Where plans are cached on disk (the data directory's ``fast_plans`` by default; None: that default)."""
    global _DIRECTORY
    _DIRECTORY = None if directory is None else Path(directory)


def plan_directory() -> Path:
    """``$GESTALTLENS_DATA_DIR/fast_plans`` (the data directory's default ``var/`` when unset), unless set."""
    if _DIRECTORY is not None:
        return _DIRECTORY
    data = os.environ.get("GESTALTLENS_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "var")
    return Path(data) / "fast_plans"


def clear_memory_cache() -> None:
    """Forget the plans held in memory (the files stay): the next use reads the file or measures again."""
    with _LOCK:
        _MEMORY.clear()


def machine_name(device: torch.device) -> str:
    """The processor a plan was measured on: the GPU's name on CUDA, else the CPU's model and vector ISA."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return f"{cpu_name()} ({capability})"


def network_digest(network: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a network's architecture and weights: names, shapes, dtypes and bytes."""
    digest = hashlib.sha256(type(network).__name__.encode())
    for name, tensor in (*network.named_parameters(), *network.named_buffers()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(np.ascontiguousarray(tensor.detach().to("cpu").float().numpy()).tobytes())
    return digest.hexdigest()[:16]


def plan_key(device: torch.device, digest: str) -> str:
    return (f"v{PLAN_VERSION} | {machine_name(device)} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | {device.type} | network {digest}")


def _path(key: str) -> Path:
    return plan_directory() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


#: ``measure(networks, key, probe=..., log=...)``: how a missing plan is made (app.explain.fast_calibrate.calibrate)
Measure = Callable[..., "FastPlan"]


def plan_for(networks: FastNetworks, digest: str, *, measure: Measure, probe: Callable[[], list[Tensor]] | None = None,
             log: Callable[[str], None] | None = None) -> FastPlan:
    """The plan for these networks on this machine: from memory, else from its file, else ``measure``d (and saved).

    A file that cannot be read, or was written for another key or plan version, is measured again and replaced.
    ``measure`` is given by the caller (:func:`app.explain.fast_calibrate.calibrate`): the measuring needs the
    plan's types, so it lives in a module above this one.
    """
    key = plan_key(networks.device, digest)
    with _LOCK:
        plan = _MEMORY.get(key)
        if plan is not None:
            return plan
        path = _path(key)
        try:
            data = json.loads(path.read_text())
            plan = FastPlan.from_json(data)
            if plan.key != key or plan.version != PLAN_VERSION:
                plan = None
        except (OSError, ValueError, KeyError, TypeError):
            plan = None
        if plan is None:
            plan = measure(networks, key, probe=probe, log=log)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_suffix(f".{os.getpid()}.tmp")
                temporary.write_text(json.dumps(plan.to_json(), indent=1))
                temporary.replace(path)  # atomic: workers sharing the data directory never read half a file
            except OSError:
                pass  # a read-only data directory: the plan still lives in memory for this process
        _MEMORY[key] = plan
        return plan
