"""What every command-line command that draws maps parses the same way: ``--methods`` and ``--model``.

Kept light (typer only; the registries are imported when called) because the commands import it at parse
time, and ``gestaltlens --help`` must stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from app.nets.registry import LoadedModel


def methods_option(methods: str) -> list[str]:
    """The methods named in a comma-separated ``--methods`` (the default panel when empty); an unknown name is a
    usage error naming the known ones."""
    from app.explain.registry import DEFAULT_PANEL, UnknownMethod, require_methods

    try:
        return require_methods(m.strip() for m in methods.split(",") if m.strip()) or list(DEFAULT_PANEL)
    except UnknownMethod as exc:
        raise typer.BadParameter(exc.detail, param_hint="--methods") from exc


def model_or_exit(model: str | None) -> LoadedModel:
    """The model folder ``model`` (the configured one when None), or its problem on stderr and exit status 2."""
    from app.nets.errors import ModelFolderError
    from app.nets.registry import load_model
    from app.settings import get_settings

    settings = get_settings()
    try:
        return load_model(settings.models_dir, model or settings.model)
    except (ModelFolderError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
