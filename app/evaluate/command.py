"""``gestaltlens evaluate``: the scorecard of a model's explanation methods, without the web app.

:class:`EvaluationSpec` is the whole input besides the model (benchmark set, methods, metric options);
:func:`run_evaluation` is the one function the command and the evaluation job both call, so for the same
model version and spec the page and the command give the same numbers. The command writes
``scorecard.json`` and the plots (PNG) into ``--out``; progress goes to stderr (tqdm).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from app.evaluate.face_count import DEFAULT_PER_CLASS

__all__ = ["EvaluationSpec", "evaluate_command", "run_evaluation"]


@dataclass(frozen=True)
class EvaluationSpec:
    """Benchmark (seed, faces per syndrome, severity, classes) + methods + metric options."""

    methods: tuple[str, ...] = ()  # empty: the standard panel of ten
    per_class: int = DEFAULT_PER_CLASS  # 16 faces: chosen from the interval width it buys (face_count.py)
    seed: int = 1000
    severity: float = 1.0
    classes: tuple[str, ...] = ()
    tolerance_px: int = 4
    road_percentages: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    sanity_faces: int = 4
    sanity_methods: tuple[str, ...] = ()
    ig_tolerance: float = 1e-3
    seeds: int = 1  # benchmark sets seed, seed + 1, …: intervals over faces of every seed
    robustness_samples: int = 3

    def resolved(self) -> EvaluationSpec:
        """Defaults made explicit and every value checked (ValueError says which is wrong)."""
        from app.explain.registry import DEFAULT_PANEL, get_method
        from app.synth.classes import get_class

        methods = tuple(dict.fromkeys(self.methods)) or tuple(DEFAULT_PANEL)
        for method in (*methods, *self.sanity_methods):
            get_method(method)
        for class_id in self.classes:
            try:
                get_class(class_id)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"unknown class {class_id!r}") from exc
        if not 1 <= self.per_class <= 50:
            raise ValueError("per_class must be in 1..50")
        if not 0 < self.severity <= 1:
            raise ValueError("severity must be in (0, 1]")
        if not 0 <= self.tolerance_px <= 56:
            raise ValueError("tolerance_px must be in 0..56")
        if not 0 <= self.ig_tolerance <= 1:
            raise ValueError("ig_tolerance must be in [0, 1] (0: no step rule)")
        if not 0 <= self.sanity_faces <= 50:
            raise ValueError("sanity_faces must be in 0..50")
        if not 1 <= self.seeds <= 10:
            raise ValueError("seeds must be in 1..10")
        if not 0 <= self.robustness_samples <= 20:
            raise ValueError("robustness_samples must be in 0..20")
        if any(not 0 < p < 1 for p in self.road_percentages) or list(self.road_percentages) != sorted(
                set(self.road_percentages)):
            raise ValueError("road_percentages must be ascending distinct values in (0, 1)")
        return EvaluationSpec(methods=methods, per_class=int(self.per_class), seed=int(self.seed),
                              severity=float(self.severity), classes=tuple(self.classes),
                              tolerance_px=int(self.tolerance_px),
                              road_percentages=tuple(float(p) for p in self.road_percentages),
                              sanity_faces=int(self.sanity_faces), sanity_methods=tuple(self.sanity_methods),
                              ig_tolerance=float(self.ig_tolerance), seeds=int(self.seeds),
                              robustness_samples=int(self.robustness_samples))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown evaluation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def build_benchmarks(spec: EvaluationSpec, progress: Callable[[int, int], None] | None = None) -> Any:
    """The benchmark set of ``spec``: one set per seed (seed, seed + 1, …), pooled, image ids prefixed by seed."""
    from app.evaluate.benchmark import BenchmarkFace, BenchmarkSet, BenchmarkSpec, build_benchmark

    seeds = [spec.seed + k for k in range(spec.seeds)]
    faces, skipped = [], []
    for k, seed in enumerate(seeds):
        one = build_benchmark(BenchmarkSpec(seed=seed, per_class=spec.per_class, severity=spec.severity,
                                            classes=spec.classes),
                              progress=None if progress is None else
                              lambda done, total, k=k: progress(k * total + done, total * len(seeds)))
        if len(seeds) == 1:
            return one
        faces += [BenchmarkFace(image_id=f"s{seed}-{f.image_id}", label=f.label, crop=f.crop, mask=f.mask,
                                severity=f.severity, shortcut=f.shortcut) for f in one.faces]
        skipped += [{**s, "seed": seed} for s in one.skipped]
    spec_dict = {**BenchmarkSpec(seed=spec.seed, per_class=spec.per_class, severity=spec.severity,
                                 classes=spec.classes).to_dict(), "seeds": seeds}
    return BenchmarkSet(spec=spec_dict, faces=faces, skipped=skipped)


def run_evaluation(network: Any, labels: list[str], gradcam_layer: str, spec: EvaluationSpec,
                   progress: Callable[[float, str], None] | None = None, threads: int = 0) -> dict[str, Any]:
    """Build the benchmark set of ``spec`` and score every method on it (the CLI's and the job's work).

    ``threads`` (0: by the share of the cores this process gets now, :func:`app.evaluate.threads.fair_threads`)
    sets torch's intra-op threads for the run and restores them after; it changes timings, never numbers.
    """
    from app.evaluate.scorecard import EvaluationOptions, evaluate_model
    from app.evaluate.threads import fair_threads, torch_threads

    spec = spec.resolved()
    report = progress or (lambda fraction, message: None)
    chosen = threads or fair_threads()
    with torch_threads(chosen):
        benchmark = build_benchmarks(spec, progress=lambda done, total: report(
            0.1 * done / total, "building the benchmark faces"))
        options = EvaluationOptions(tolerance_px=spec.tolerance_px, road_percentages=spec.road_percentages,
                                    sanity_faces=spec.sanity_faces, sanity_methods=spec.sanity_methods,
                                    ig_tolerance=spec.ig_tolerance, robustness_samples=spec.robustness_samples)
        card = evaluate_model(network, labels, benchmark, list(spec.methods), gradcam_layer=gradcam_layer,
                              options=options, progress=lambda f, m: report(0.1 + 0.9 * f, m))
    card["spec"] = spec.to_dict()
    card["timings"]["threads"] = chosen
    card["versions"] = _versions()
    return card


def _versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    import captum
    import numpy
    import torch

    try:
        app_version = metadata.version("gestaltlens")
    except metadata.PackageNotFoundError:
        app_version = "unknown"
    return {"gestaltlens": app_version, "torch": torch.__version__, "captum": captum.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def evaluate_command(
    model: Annotated[str | None, typer.Option(help="Model id under the models directory; default: the served one.")]
    = None,
    methods: Annotated[str, typer.Option(help="Comma-separated method ids; default: the standard panel.")] = "",
    out: Annotated[Path, typer.Option(help="Folder for scorecard.json and the plots.")] = Path("evaluation"),
    per_class: Annotated[int, typer.Option(help="Benchmark faces per syndrome (default: the count chosen from the "
                                           "interval width it buys, app/evaluate/face_count.py).")]
    = DEFAULT_PER_CLASS,
    classes: Annotated[str, typer.Option(help="Comma-separated syndrome ids; default: every syndrome.")] = "",
    seed: Annotated[int, typer.Option(help="Benchmark seed.")] = 1000,
    sanity_faces: Annotated[int, typer.Option(help="Faces for the randomisation sanity checks (0: none).")] = 4,
    road: Annotated[str, typer.Option(help="ROAD removal fractions, comma-separated.")] = "0.1,0.3,0.5,0.7,0.9",
    tolerance: Annotated[int, typer.Option(help="Pointing-game tolerance in pixels.")] = 4,
    ig_tolerance: Annotated[float, typer.Option(help="IG completeness target of the step rule (0: none).")] = 1e-3,
    seeds: Annotated[int, typer.Option(help="Benchmark seeds (seed, seed+1, …), pooled: intervals over faces "
                                       "and seeds.")] = 1,
    robustness_samples: Annotated[int, typer.Option(help="Noisy copies per sanity face for robustness (0: none).")]
    = 3,
    threads: Annotated[int, typer.Option(help="Torch threads (0: by the share of the cores free now).")] = 0,
) -> None:
    """Score every explanation method of a model on the synthetic benchmark (ground-truth masks)."""
    from tqdm import tqdm

    from app.explain.cli_options import model_or_exit

    try:
        spec = EvaluationSpec(methods=_split(methods), per_class=per_class, seed=seed, classes=_split(classes),
                              tolerance_px=tolerance, road_percentages=tuple(float(p) for p in _split(road)),
                              sanity_faces=sanity_faces, ig_tolerance=ig_tolerance, seeds=seeds,
                              robustness_samples=robustness_samples).resolved()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    loaded = model_or_exit(model)
    with tqdm(total=100, desc="evaluating", unit="%", bar_format="{desc} {bar} {percentage:3.0f}% "
              "{elapsed}<{remaining}") as bar:
        def advance(fraction: float, message: str) -> None:
            bar.set_description_str(message[:40])
            bar.update(max(0, round(fraction * 100) - bar.n))

        started = time.perf_counter()
        card = run_evaluation(loaded.network, [label.id for label in loaded.labels], loaded.card.gradcam_layer,
                              spec, advance, threads=threads)
    card["model"] = {"id": loaded.card.id, "version": loaded.card.version}
    card["timings"]["run_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(card, out)
    typer.echo(f"scorecard: {out / 'scorecard.json'} (+ scorecard.csv, scorecard.tex, methods.txt, plots); "
               f"{card['timings']['run_seconds']} s with {card['timings']['threads']} thread(s)")
    for method in card["methods"]:
        s = card["scores"][method]
        sanity = card["sanity"].get(method)
        verdict = "-" if not sanity else (
            f"{'pass' if sanity['passes'] else 'FAIL'} ({sanity['margin']['mean']:+.2f} "
            f"[{sanity['margin']['low']:+.2f}, {sanity['margin']['high']:+.2f}])")
        signed_gap = (s.get("faithfulness_signed") or {}).get("deletion_gap")
        signed = f" (signed order {signed_gap['mean']:+.2f})" if signed_gap else ""
        typer.echo(f"{method:22s} mass {s['localisation']['mass']['mean']:.3f}  pointing "
                   f"{s['localisation']['pointing']['mean']:.2f}  deletion gap |map| "
                   f"{s['faithfulness']['deletion_gap']['mean']:+.2f}"
                   f"{signed}"
                   f"  context {s['context']['areas']['context']['mean']:.2f}  sanity {verdict}")
    if card.get("ig_step_rule"):
        rule = card["ig_step_rule"]
        tried = ", ".join(f"{steps} steps {error:.2e}" for steps, error in rule["tried"])
        typer.echo(f"integrated gradients completeness ≤ {rule['tolerance']:g}: "
                   f"{rule['steps'] or 'not reached'} steps ({tried})")
    prior = card["chance"]["centre_prior"]
    sigmas = ", ".join(f"{v['sigma_px']:g}" for v in prior.get("fit", {}).values())
    typer.echo(f"chance: area share {card['chance']['area_share']['mean']:.3f}, centre prior (σ {sigmas} px, "
               f"cross-fitted) mass {prior['mass']['mean']:.3f}")


def write_outputs(card: dict[str, Any], out: Path) -> None:
    """scorecard.json, the paper table (CSV, LaTeX, methods paragraph) and the plots, into ``out``."""
    from app.evaluate.paper import methods_paragraph, scorecard_csv, scorecard_latex
    from app.evaluate.report import scorecard_figures

    out.mkdir(parents=True, exist_ok=True)
    (out / "scorecard.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (out / "scorecard.csv").write_text(scorecard_csv(card), encoding="utf-8")
    (out / "scorecard.tex").write_text(scorecard_latex(card), encoding="utf-8")
    (out / "methods.txt").write_text(methods_paragraph(card), encoding="utf-8")
    for name, png in scorecard_figures(card).items():
        (out / name).write_bytes(png)
