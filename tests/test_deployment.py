"""The deployment files stay consistent with the code: compose services, settings names, image contents."""

from __future__ import annotations

import yaml

from app.settings import PROJECT_ROOT, Settings


def test_compose_defines_web_a_worker_per_lane_postgres_redis_with_known_settings() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    assert {"web", "worker-interactive", "worker-batch", "postgres", "redis"} <= set(compose["services"])
    env = compose["x-app-env"]
    known = {f"GESTALTLENS_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    for lane in ("interactive", "batch"):
        command = compose["services"][f"worker-{lane}"]["command"]
        assert command[:2] == ["gestaltlens", "worker"] and command[command.index("--lanes") + 1] == lane
    assert env["GESTALTLENS_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile_ships_everything_the_app_reads_at_run_time() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for folder in ("app", "migrations", "templates", "static", "models"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "torch==2.13.0" in dockerfile and "torchvision" not in dockerfile
    assert "pip install -e ." in dockerfile  # templates/static are found next to the package


def test_readme_documents_the_two_commands_and_every_setting() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    for name in ("DATABASE_URL", "DATA_DIR", "MODEL", "JOB_RUNNER", "BROKER_URL", "MAX_UPLOAD_MB", "SECRET_KEY"):
        assert f"GESTALTLENS_{name}" in readme
