"""``gestaltlens gallery build | add | remove | list``: a lab builds its model's gallery from its own photos.

The work is in :mod:`app.nets.gallery_build`; this module only parses options and prints JSON reports.
The served model is read once per process, so a running server sees a new gallery after a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

gallery_cli = typer.Typer(help="Build and edit a model's gallery (its face phenotype space).", no_args_is_help=True)

ModelOption = Annotated[str, typer.Option("--model", help="Model id (a folder under the models directory).")]


def _folder(model_id: str) -> Path:
    from app.nets.card import MODEL_ID_PATTERN
    from app.settings import get_settings

    if not MODEL_ID_PATTERN.match(model_id):
        typer.echo(f"error: {model_id!r} is not a model id", err=True)
        raise typer.Exit(2)
    return Path(get_settings().models_dir) / model_id


def _run(action, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    from app.nets.errors import ModelFolderError

    try:
        report = action(*args, **kwargs)
    except ModelFolderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(report.to_json(), indent=2))


@gallery_cli.command("build")
def build_command(
    photos: Annotated[Path, typer.Argument(exists=True, help="A folder per syndrome, or a CSV (path, syndrome_id, "
                                                             "syndrome_name, omim, gene, subject_id, image_id). "
                                                             "Ids not stated in a CSV are published as "
                                                             "pseudonyms, never file names.")],
    model: ModelOption,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Replace the model's gallery with the photos (detect, align, de-identify, encode with the model's views)."""
    from app.nets.gallery_build import build

    _run(build, _folder(model), photos, progress=not quiet)


@gallery_cli.command("add")
def add_command(
    photos: Annotated[Path, typer.Argument(exists=True, help="A folder per syndrome, or a CSV.")],
    model: ModelOption,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Add photos to the model's gallery (an image already in it is refused)."""
    from app.nets.gallery_build import add_photos

    _run(add_photos, _folder(model), photos, progress=not quiet)


@gallery_cli.command("remove")
def remove_command(
    model: ModelOption,
    image: Annotated[list[str] | None, typer.Option(help="Image to remove: its id, or the source name a "
                                                         "pseudonym was made from, e.g. syn_a/P1.jpg "
                                                         "(repeatable).")] = None,
    subject: Annotated[list[str] | None, typer.Option(help="Remove every image of this subject (its id or the "
                                                           "file stem it was made from).")] = None,
    syndrome: Annotated[list[str] | None, typer.Option(help="Remove every image of this syndrome.")] = None,
) -> None:
    """Remove images, subjects or syndromes from the gallery."""
    from app.nets.gallery_build import remove_rows

    _run(remove_rows, _folder(model), image_ids=image or [], subject_ids=subject or [], syndrome_ids=syndrome or [])


@gallery_cli.command("list")
def list_command(model: ModelOption) -> None:
    """Per syndrome: images and subjects in the gallery, and the photos skipped when it was built."""
    from app.nets.errors import ModelFolderError
    from app.nets.gallery_build import gallery_summary, provenance_of
    from app.nets.registry import read_model_folder

    try:
        loaded = read_model_folder(_folder(model))
    except ModelFolderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"model": loaded.version, "syndromes": gallery_summary(loaded),
                           "skipped": provenance_of(loaded).get("skipped", [])}, indent=2))
