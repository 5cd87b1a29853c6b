"""``synth_command`` as the CLI will run it (through typer)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from app.synth.command import synth_command


def _cli() -> typer.Typer:
    cli = typer.Typer()
    cli.command()(synth_command)
    return cli


def test_command_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        _cli(),
        [
            str(out),
            "--count",
            "1",
            "--workers",
            "1",
            "--seed",
            "2",
            "--shortcut-class",
            "syn_a",
            "--test-fraction",
            "0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "detection rate" in result.output and "unaffected=1" in result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["n_images"] == 9 and meta["shortcut"]["class"] == "syn_a" and meta["shortcut"]["probability"] == 0.9


def test_command_rejects_an_unknown_class(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), [str(tmp_path / "ds"), "--shortcut-class", "syn_zz"])
    assert result.exit_code == 2
    assert not (tmp_path / "ds").exists()
