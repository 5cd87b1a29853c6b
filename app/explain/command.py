"""``gestaltlens explain PHOTO``: the comparison figure (and raw maps) for one photo, without the web app.

Same pipeline as the app: intake → face → alignment → ranking → engine → figure, so a figure made here
matches the app's for the same photo, model and parameters. Progress goes to stderr (tqdm), the written
paths to stdout. Heavy modules are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def explain_command(
    photo: Annotated[Path, typer.Argument(help="A frontal face photo (JPEG, PNG, WebP, HEIC, BMP, TIFF).", exists=True,
                                          dir_okay=False, readable=True)],
    out: Annotated[Path, typer.Option(help="Where to write the figure PNG.")] = Path("figure.png"),
    methods: Annotated[str, typer.Option(help="Comma-separated method ids; default: the standard panel.")] = "",
    target: Annotated[str | None, typer.Option(help="Syndrome id to explain; default: the top-ranked one.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id under the models directory; default: the served one.")]
    = None,
    face_index: Annotated[int | None, typer.Option(help="Which face, when the photo shows several.")] = None,
    npy_dir: Annotated[Path | None, typer.Option(help="Also write each raw float32 112x112 map as <method>.npy.")]
    = None,
) -> None:
    """Compute attribution maps for one photo and write a publication-ready figure."""
    import numpy as np
    from tqdm import tqdm

    from app.explain.cli_options import methods_option, model_or_exit
    from app.explain.engine import Explainer
    from app.explain.figure import FigurePanel, panel_figure_png
    from app.explain.registry import METHODS
    from app.nets.predict import predict
    from app.settings import get_settings
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    settings = get_settings()
    chosen = methods_option(methods)
    loaded = model_or_exit(model)
    try:
        processed = process_photo(photo.read_bytes(), face_index=face_index, max_pixels=settings.max_pixels)
    except IntakeError as exc:
        typer.echo(f"error: {exc.detail} ({exc.code})", err=True)
        raise typer.Exit(2) from exc
    crop = processed.aligned.crop
    ids = [label.id for label in loaded.labels]
    if target is None:
        ranked = predict(loaded, crop, top_k=len(loaded.syndromes) or 1).ranked
        target = next((p.syndrome_id for p in ranked if p.syndrome_id in ids), ids[0])
    elif target not in ids:
        raise typer.BadParameter(f"{target!r} is not a syndrome of {loaded.version}; known: {', '.join(ids)}",
                                 param_hint="--target")
    index = ids.index(target)
    maps: dict[str, np.ndarray] = {}
    with tqdm(total=100, desc=f"explaining for {target}", unit="%", leave=False,
              bar_format="{desc} {bar} {percentage:3.0f}% {elapsed}<{remaining}") as bar:
        def advance(fraction: float) -> None:
            bar.update(max(0, round(fraction * 100) - bar.n))

        Explainer(loaded.network, gradcam_layer=loaded.card.gradcam_layer).explain(
            crop, target=index, methods=chosen, on_map=maps.__setitem__, on_progress=advance)
    panels = [FigurePanel(method_id=m, label=METHODS[m].label, values=maps[m], signed=METHODS[m].signed)
              for m in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(panel_figure_png(crop, panels, target_label=loaded.labels[index].name,
                                     model_version=loaded.version, case_label=photo.name))
    typer.echo(f"figure: {out}")
    if npy_dir is not None:
        npy_dir.mkdir(parents=True, exist_ok=True)
        for method, values in maps.items():
            np.save(npy_dir / f"{method}.npy", values.astype(np.float32), allow_pickle=False)
        typer.echo(f"maps: {npy_dir}/<method>.npy ({len(maps)} files)")
