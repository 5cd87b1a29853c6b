"""The served model is read in the background when the app starts (``Settings.preload_model``), and /readyz
says where that stands without waiting for it."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.predictions.provider import ModelProvider, ModelUnavailable
from app.settings import Settings
from app.web.factory import create_app

LOAD_BOUND_S = 180.0  # reading the demo model takes about a second on an idle machine; bounds hold on a busy one


def _model_state(client: TestClient) -> str:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text  # the model's state is reported, never required
    return answer.json()["model"]


def _wait_for(client: TestClient, states: set[str]) -> str:
    deadline = time.monotonic() + LOAD_BOUND_S
    state = _model_state(client)
    while state not in states and time.monotonic() < deadline:
        time.sleep(0.2)
        state = _model_state(client)
    return state


def test_the_model_is_read_at_start_up_without_a_request(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"preload_model": True}))
    assert app.state.models.state() == "not_loaded"
    with TestClient(app) as client:
        assert _model_state(client) in {"loading", "ok"}
        assert _wait_for(client, {"ok", "unavailable"}) == "ok"
    app.state.engine.dispose()


def test_without_preload_the_first_request_reads_it(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"preload_model": False}))
    with TestClient(app) as client:
        time.sleep(0.5)
        assert _model_state(client) == "not_loaded"
        app.state.models.get()
        assert _model_state(client) == "ok"
    app.state.engine.dispose()


def test_a_model_that_cannot_be_read_is_reported_with_its_reason(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    app = create_app(settings.model_copy(update={"preload_model": True, "models_dir": tmp_path / "models",
                                                 "model": "missing"}))
    with TestClient(app) as client:
        assert _wait_for(client, {"unavailable", "ok"}) == "unavailable"
        status = client.get("/status").json()  # the GestaltMatcher-shaped status says so, without paths
        assert status["status"] == "degraded" and "'missing'" in status["message"]
        assert str(tmp_path) not in status["message"] and str(tmp_path) in app.state.models.reason
    app.state.engine.dispose()


def test_preload_failure_is_kept_for_the_requests(tmp_path: Path) -> None:
    provider = ModelProvider(tmp_path, "missing")
    provider.preload().join(timeout=LOAD_BOUND_S)
    assert provider.state() == "unavailable"
    try:
        provider.get()
    except ModelUnavailable as exc:
        assert "missing" in str(exc) and str(tmp_path) not in str(exc)
    else:
        raise AssertionError("a missing model folder must stay unavailable")
    assert str(tmp_path) in provider.reason


def test_an_unexpected_load_failure_is_kept_with_its_reason(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Not only a broken folder: memory, the search index, permissions. Before, such an error escaped the preload
    thread, left the state ``not_loaded`` and made every request that needed the model try again (a 500 each)."""
    import shutil

    import numpy

    from app.settings import PROJECT_ROOT

    shutil.copytree(PROJECT_ROOT / "models" / "demo", tmp_path / "demo")  # a folder no other test has loaded

    def out_of_memory(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("cannot allocate the gallery")

    monkeypatch.setattr(numpy, "load", out_of_memory)  # the machine, not our code, fails
    provider = ModelProvider(tmp_path, "demo")
    provider.preload().join(timeout=LOAD_BOUND_S)
    assert provider.state() == "unavailable"
    for _ in range(2):  # kept: no second load is tried
        try:
            provider.get()
        except ModelUnavailable as exc:
            assert "cannot be loaded" in str(exc)
            assert "MemoryError" in provider.reason and "cannot allocate" in provider.reason
        else:
            raise AssertionError("the failure must be kept")


def test_status_answers_loading_at_once_while_the_model_is_read(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"preload_model": False}))
    with TestClient(app) as client:
        models = app.state.models
        with models._lock:  # what a read in progress holds (a large gallery: most of a minute)
            status = client.get("/status").json()
            assert status["status"] == "loading" and status["model_version"] == ""
            assert _model_state(client) == "loading"
        assert client.get("/status").json()["status"] == "running"  # not loaded yet: this request reads it
        assert models.state() == "ok"
    app.state.engine.dispose()
