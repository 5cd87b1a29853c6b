"""``gestaltlens cohort DIR --out OUT`` (composites and syndrome-wise maps of a labelled folder) and
``gestaltlens demo-cohort USERNAME`` (import the synthetic demo cohort as cases).

``DIR`` is either a synthetic data set (``dataset.json`` + ``manifest.jsonl``: its aligned crops are used as
they are, already produced by the real pipeline) or a plain ``<label>/<photo>.jpg`` folder (each photo goes
through detection and alignment; photos without exactly one usable face are listed as skipped). The folder
command uses no database and applies the same floor as the app: a label with fewer than 5 images (each image
is taken as one patient: a folder has no pseudonyms) gets no composite and is listed as below the floor.

Per label it writes ``OUT/<label>/composite.png`` and ``plain.png``, per method ``<method>.png`` (mean map,
agreement and the composite's own map, with colour bars), ``<method>.mean.npy``, ``<method>.agreement.npy`` and
``<method>.composite.npy``; and ``OUT/summary.json`` with counts, sharpness and per-method figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def _read_folder(folder: Path) -> tuple[dict[str, list[tuple[str, np.ndarray]]], list[str]]:
    """label → [(image id, aligned uint8 crop)], and the skipped images with their reason."""
    import cv2

    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    groups: dict[str, list[tuple[str, np.ndarray]]] = {}
    skipped: list[str] = []
    if (folder / "dataset.json").is_file() and (folder / "manifest.jsonl").is_file():
        for line in (folder / "manifest.jsonl").read_text().splitlines():
            record = json.loads(line)
            if not record.get("aligned"):
                skipped.append(f"{record.get('id')}: not detected")
                continue
            bgr = cv2.imread(str(folder / record["aligned"]), cv2.IMREAD_COLOR)
            crop = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            groups.setdefault(str(record["label"]), []).append((str(record["id"]), crop))
        return groups, skipped
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for photo in sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                crop = process_photo(photo.read_bytes()).aligned.crop
            except IntakeError as exc:
                skipped.append(f"{label_dir.name}/{photo.name}: {exc.code}")
                continue
            groups.setdefault(label_dir.name, []).append((photo.stem, crop))
    return groups, skipped


def cohort_command(
    folder: Annotated[Path, typer.Argument(help="A synthetic data set or a <label>/<photo> folder.", exists=True,
                                           file_okay=False)],
    out: Annotated[Path, typer.Option(help="Output folder (created if missing).")],
    methods: Annotated[str, typer.Option(help="Comma-separated method ids; default: the ten-method panel.")] = "",
    objective: Annotated[str, typer.Option(help="logit (the label's class) or similarity (to the label's own "
                                           "centroid of embeddings in this folder).")] = "logit",
    model: Annotated[str | None, typer.Option(help="Model id; default: the served one.")] = None,
    min_images: Annotated[int, typer.Option(help="Floor per label (never below 5).")] = 5,
) -> None:
    """Composites and syndrome-wise maps for every label of a folder."""
    from tqdm import tqdm

    from app.cohorts.service import MIN_PATIENTS
    from app.compare.references import case_embedding
    from app.explain.cli_options import methods_option, model_or_exit
    from app.explain.cohort_batch import CASES_PER_BATCH, CohortItem, explain_cohort
    from app.explain.composite import cohort_maps, register, sharpness
    from app.explain.engine import Explainer
    from app.explain.figure import FigurePanel, panel_figure_png
    from app.explain.objectives import Objective
    from app.explain.registry import METHODS
    from app.explain.render import encode_png

    chosen = methods_option(methods)
    if objective not in ("logit", "similarity"):
        raise typer.BadParameter("objective must be logit or similarity", param_hint="--objective")
    floor = max(MIN_PATIENTS, min_images)
    loaded = model_or_exit(model)
    ids = [label.id for label in loaded.labels]
    groups, skipped = _read_folder(folder)
    explainer = Explainer(loaded.network, gradcam_layer=loaded.card.gradcam_layer)
    summary: dict[str, object] = {"model": loaded.version, "objective": objective, "methods": chosen,
                                  "floor": floor, "skipped": skipped, "labels": {}}
    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(items) for label, items in groups.items() if len(items) >= floor)
    with tqdm(total=total, desc="cohort", unit="face") as bar:
        for label, items in sorted(groups.items()):
            entry: dict[str, object] = {"n": len(items)}
            summary["labels"][label] = entry  # type: ignore[index]
            if len(items) < floor:
                entry["status"] = f"below the floor of {floor}: nothing computed"
                continue
            if objective == "logit" and label not in ids:
                entry["status"] = f"{label!r} is not a class of {loaded.version}; use --objective similarity"
                continue
            crops = [crop for _, crop in items]
            if objective == "logit":
                target = Objective.logit(ids.index(label))
            else:
                units = [e / np.linalg.norm(e) for e in (case_embedding(loaded, c).astype(np.float64) for c in crops)]
                safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in label)[:100] or "label"
                target = Objective.similarity(np.mean(units, axis=0), name=f"similarity:centroid:{safe}")
            per_method: dict[str, list[np.ndarray]] = {m: [] for m in chosen}
            if target.kind == "logit":  # passes of several faces share batches (same maps, app.explain.cohort_batch)
                for begin in range(0, len(crops), CASES_PER_BATCH):
                    chunk = [CohortItem(crop, target.target) for crop in crops[begin:begin + CASES_PER_BATCH]]
                    for maps in explain_cohort(explainer, chunk, methods=chosen,
                                               on_face=lambda _i, _maps: bar.update(1)):
                        for method, values in maps.items():
                            per_method[method].append(values)
            else:
                for crop in crops:
                    for method, values in explainer.explain(crop, objective=target, methods=chosen).items():
                        per_method[method].append(values)
                    bar.update(1)
            registration = register(crops)
            composite = np.clip(np.round(registration.composite), 0, 255).astype(np.uint8)
            own = explainer.explain(composite, objective=target, methods=chosen)
            label_dir = out / "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in label)
            label_dir.mkdir(parents=True, exist_ok=True)
            (label_dir / "composite.png").write_bytes(encode_png(composite))
            (label_dir / "plain.png").write_bytes(encode_png(np.clip(np.round(registration.plain), 0, 255)
                                                             .astype(np.uint8)))
            entry.update(status="done", objective=target.key,
                         sharpness={"plain": round(sharpness(registration.plain), 3),
                                    "registered": round(sharpness(registration.composite), 3)}, methods={})
            for method in chosen:
                group = cohort_maps(per_method[method], registration.flows)
                for kind, values in (("mean", group.mean), ("agreement", group.agreement),
                                     ("composite", own[method])):
                    np.save(label_dir / f"{method}.{kind}.npy", np.asarray(values, np.float32), allow_pickle=False)
                signed = METHODS[method].signed
                panels = [FigurePanel(f"{method}-mean", f"mean map (n={group.n})", group.mean, signed),
                          FigurePanel(f"{method}-agreement", "agreement with the mean's sign", group.agreement,
                                      False),
                          FigurePanel(f"{method}-composite", "map of the composite", own[method], signed)]
                (label_dir / f"{method}.png").write_bytes(panel_figure_png(
                    composite, panels, target_label=f"{label} · {METHODS[method].label} · {target.key}",
                    model_version=loaded.version, case_label=f"composite of {group.n}", columns=4))
                entry["methods"][method] = {"agreement_mean": round(float(group.agreement.mean()), 4)}  # type: ignore[index]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(f"summary: {out / 'summary.json'}")


def demo_cohort_command(
    username: Annotated[str, typer.Argument(help="The user who will own the synthetic cases.")],
    per_syndrome: Annotated[int, typer.Option(help="Faces per class, unaffected too (5 meet the floor).")] = 6,
    syndromes: Annotated[str, typer.Option(help="Comma-separated classes (syn_a, unaffected…); default: all.")] = "",
) -> None:
    """Import generated synthetic patients (marked SYNTHETIC) as cases with confirmed diagnoses."""
    from app.auth import service as auth_service
    from app.cases.storage import PhotoStore
    from app.cohorts.demo import import_demo_cohort
    from app.migrate import command_sessions
    from app.nets.registry import load_model
    from app.settings import get_settings
    from app.synth.command import ProgressBar

    settings = get_settings()
    sessions = command_sessions(settings.resolved_database_url)
    with sessions() as session:
        user = auth_service.get_user_by_name(session, username=username)
        if user is None or not user.is_active:
            typer.echo(f"error: no active user {username!r}", err=True)
            raise typer.Exit(2)
        try:
            summary = import_demo_cohort(session, owner=user, store=PhotoStore(settings.photo_dir),
                                         model=load_model(settings.models_dir, settings.model),
                                         per_syndrome=per_syndrome, on_progress=ProgressBar(),
                                         syndromes=[x.strip() for x in syndromes.split(",") if x.strip()] or None)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(f"created {summary.created} synthetic case(s), skipped {summary.skipped} already present")
