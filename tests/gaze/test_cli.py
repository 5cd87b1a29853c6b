"""``gestaltlens gaze``: synthetic files for the database's cases, each format imported from the command line
(a refusal exits 2 and imports nothing), and the results table and CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.settings import Settings, get_settings
from app.synth.generate import generate_one
from tests.conftest import Account, upload


def test_gaze_commands(client: TestClient, admin: Account, settings: Settings, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for i in range(2):
        response = upload(client, admin, generate_one(seed=31 + i, class_id="syn_d", index=0, severity=1.0).jpeg,
                          pseudonym=f"CLI{i}")
        assert response.status_code == 201
        ids.append(response.json()["id"])
    monkeypatch.setenv("GESTALTLENS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GESTALTLENS_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        out = tmp_path / "synthetic"
        made = runner.invoke(cli, ["gaze", "synth", str(out), "--per-case", "6"])
        assert made.exit_code == 0, made.output
        rect = made.output.split("--rect ")[1].split()[0]
        for name, extra in [("gaze_generic.csv", []), ("tobii_pro_lab_export.tsv", []),
                            ("eyelink_fixation_report.txt", ["--rect", rect]),
                            (f"pupil/CG01/{ids[0]}/fixations_on_surface_photo.csv", ["--participant", "CG01",
                                                                                     "--case", ids[0]])]:
            done = runner.invoke(cli, ["gaze", "import", str(out / name), "--as", admin.username, *extra])
            assert done.exit_code == 0, done.output
            assert '"fixations"' in done.output
        again = runner.invoke(cli, ["gaze", "import", str(out / "gaze_generic.csv"), "--as", admin.username])
        assert again.exit_code == 2 and "duplicate_import" in again.output
        table = runner.invoke(cli, ["gaze", "results", "--csv", str(tmp_path / "r.csv")])
        assert table.exit_code == 0, table.output
        assert "ceiling\tclinical_geneticist" in table.output
        assert (tmp_path / "r.csv").read_text().startswith("scope,kind,subject,group,case,metric,value")
    finally:
        get_settings.cache_clear()
