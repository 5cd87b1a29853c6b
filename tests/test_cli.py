"""The `gestaltlens` command drives a real database: migrate, add users, mint tokens that the API accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from app.settings import Settings
from app.web.factory import create_app


def _cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )


def test_cli_migrates_adds_users_and_issues_tokens(db_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GESTALTLENS_DATABASE_URL": db_url,
        "GESTALTLENS_DATA_DIR": str(tmp_path / "data"),
    }
    upgraded = _cli(["db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr

    added = _cli(["user", "add", "dr-who", "--role", "admin", "--password-stdin"], env, stdin="a long secret pass\n")
    assert added.returncode == 0, added.stderr
    duplicate = _cli(["user", "add", "dr-who", "--password-stdin"], env, stdin="a long secret pass\n")
    assert duplicate.returncode == 2 and "taken" in duplicate.stderr
    weak = _cli(["user", "add", "weakling", "--password-stdin"], env, stdin="short\n")
    assert weak.returncode == 2 and "at least" in weak.stderr

    minted = _cli(["user", "token", "dr-who"], env)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip().splitlines()[-1]
    assert token.startswith("glt_")
    assert _cli(["user", "token", "nobody"], env).returncode == 2

    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    app = create_app(settings)
    with TestClient(app) as client:
        me = client.get("/api/v1/cases", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert client.get("/setup").status_code == 404  # a user exists: first-run setup is gone
    app.state.engine.dispose()


def test_commands_on_a_database_without_the_current_schema_say_what_to_run(tmp_path: Path) -> None:
    """A fresh data directory used to answer `user add` with SQLAlchemy's traceback ("no such table: users")."""
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(tmp_path / "data")}
    env.pop("GESTALTLENS_DATABASE_URL", None)
    fresh = _cli(["user", "add", "dr-who", "--role", "admin", "--password-stdin"], env, stdin="a long secret pass\n")
    assert fresh.returncode == 2
    assert "has no schema yet" in fresh.stderr and "gestaltlens db upgrade" in fresh.stderr
    assert "Traceback" not in fresh.stderr and "no such table" not in fresh.stderr
    gaze = _cli(["gaze", "results"], env)
    assert gaze.returncode == 2 and "has no schema yet" in gaze.stderr

    assert _cli(["db", "upgrade", "0015"], env).returncode == 0  # one migration behind
    behind = _cli(["user", "list"], env)
    assert behind.returncode == 2 and "is at revision 0015" in behind.stderr and "db upgrade" in behind.stderr
    assert _cli(["db", "upgrade"], env).returncode == 0
    added = _cli(["user", "add", "dr-who", "--password-stdin"], env, stdin="a long secret pass\n")
    assert added.returncode == 0, added.stderr


def test_a_database_that_cannot_be_reached_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(tmp_path / "data"),
           "GESTALTLENS_DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/test"}
    down = _cli(["user", "list"], env)
    assert down.returncode == 2 and "cannot be used" in down.stderr
    assert "Traceback" not in down.stderr and "secret" not in down.stderr  # the password is never echoed


def test_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).resolved_secret_key
    second = Settings(data_dir=tmp_path).resolved_secret_key
    assert first == second and len(first) >= 40
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert Settings(data_dir=tmp_path, secret_key="given-key").resolved_secret_key == "given-key"

def test_explain_writes_the_figure_and_raw_maps_like_the_engine(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from app.explain.engine import Explainer
    from app.nets.registry import load_model
    from app.settings import PROJECT_ROOT
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    photo = tmp_path / "face.jpg"
    photo.write_bytes(generate_one(seed=99, class_id="syn_e", index=0, severity=1.0).jpeg)
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(tmp_path / "data")}
    out, npy = tmp_path / "fig" / "figure.png", tmp_path / "maps"
    done = _cli(["explain", str(photo), "--methods", "saliency,gradcam,occlusion", "--target", "syn_e",
                 "--out", str(out), "--npy-dir", str(npy)], env)
    assert done.returncode == 0, done.stderr
    assert f"figure: {out}" in done.stdout
    assert "%" in done.stderr  # the progress bar
    assert Image.open(out).format == "PNG" and Image.open(out).size[0] > 600
    model = load_model(PROJECT_ROOT / "models", "demo")
    crop = process_photo(photo.read_bytes()).aligned.crop
    target = [label.id for label in model.labels].index("syn_e")
    expected = Explainer(model.network, gradcam_layer=model.card.gradcam_layer).explain(
        crop, target=target, methods=["gradcam", "occlusion"])
    for method in ("gradcam", "occlusion"):
        np.testing.assert_allclose(np.load(npy / f"{method}.npy"), expected[method], rtol=1e-4, atol=1e-5)

    unknown = _cli(["explain", str(photo), "--methods", "saliency,lime"], env)
    assert unknown.returncode == 2 and "lime" in unknown.stderr
    no_face = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "grey").save(no_face)
    refused = _cli(["explain", str(no_face)], env)
    assert refused.returncode == 2 and "no_face" in refused.stderr


def test_demo_cohort_command_keeps_each_cases_embeddings_as_the_web_import_does(migrated_url: str,
                                                                                 tmp_path: Path) -> None:
    """Cases made outside the web process get the same cross-domain effects: the command runs after app.hooks, so
    matching's run hook stores each ranked case's embeddings (without it the command ranked and stored nothing)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from app.cases.models import Case
    from app.db import make_engine
    from app.matching.models import CaseEmbedding

    env = {**os.environ, "GESTALTLENS_DATABASE_URL": migrated_url, "GESTALTLENS_DATA_DIR": str(tmp_path / "data")}
    added = _cli(["user", "add", "alice", "--password-stdin"], env, stdin="a long secret pass\n")
    assert added.returncode == 0, added.stderr
    made = _cli(["demo-cohort", "alice", "--per-syndrome", "1", "--syndromes", "syn_a"], env)
    assert made.returncode == 0, made.stderr
    engine = make_engine(migrated_url)
    try:
        with Session(engine) as session:
            cases = session.scalar(select(func.count()).select_from(Case))
            embedded = session.scalar(select(func.count(func.distinct(CaseEmbedding.case_id))))
    finally:
        engine.dispose()
    assert cases >= 1 and embedded == cases


def test_a_celery_worker_process_registers_what_the_web_app_does(tmp_path: Path) -> None:
    """``gestaltlens worker`` imports app.hooks, not only the job kinds: a job that ranks cases (the demo cohort)
    or erases runs the same domain hooks in a Celery worker as on the inline runner. Checked in a fresh process
    with Celery's own start stubbed out (the test process imported app.hooks long ago)."""
    script = (
        "import app.jobs.celery_app as celery_app\n"
        "class Stub:\n"
        "    def worker_main(self, argv): pass\n"
        "celery_app.make_celery = lambda *args, **kwargs: Stub()\n"
        "from app.cli import cli\n"
        "cli(['worker', '--lanes', 'batch'], standalone_mode=False)\n"
        "from app.cases.erasure import erasure_hooks\n"
        "from app.jobs.registry import KINDS\n"
        "from app.predictions import references\n"
        "print(len(KINDS), len(references._hooks), len(references._sources), len(erasure_hooks()))\n"
    )
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(tmp_path / "data")}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert ran.returncode == 0, ran.stderr
    kinds, run_hooks, sources, erasure = (int(n) for n in ran.stdout.split()[-4:])
    assert kinds >= 6 and run_hooks >= 1 and sources >= 1 and erasure >= 5, ran.stdout
