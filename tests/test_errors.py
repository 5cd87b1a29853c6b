"""One domain error (app.errors.DomainError) from the services, one handler in the web layer, and one direction
of imports: a refusal raised deep in a service reaches the client as the JSON error contract with the privacy
and security headers, and no module below the web layer imports it."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cases.models import Case
from app.errors import DomainError, NotFound
from app.explain.registry import DEFAULT_PANEL, METHODS, UnknownMethod, get_method, require_methods
from tests.cases.test_review import case_row, user_ids
from tests.conftest import Account, login

APP = Path(__file__).resolve().parents[1] / "app"
#: The web layer's part of each domain folder: route and page modules may import app.web (deps, templating).
ROUTE_MODULES = ("routes.py", "pages.py")


@pytest.fixture
def case_id(app, alice: Account) -> str:
    row = case_row(user_ids(app)["alice"], 1, pseudonym="Err-1")
    with app.state.sessions() as session:
        session.add(Case(**row))
        session.commit()
    return row["id"]


def assert_contract(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    return body


def test_a_refusal_deep_in_a_service_reaches_the_client_as_the_json_contract(
    client: TestClient, alice: Account, case_id: str
) -> None:
    # normalise_omim (diagnoses/service.py) raises; no route catches it: the one handler answers.
    response = client.put(f"/api/v1/cases/{case_id}/diagnosis", json={"name": "Some syndrome", "omim": "12345"},
                          headers=alice.headers)
    body = assert_contract(response, 422, "invalid_omim")
    assert "six digits" in body["detail"]


def test_the_registry_refuses_unknown_methods_with_the_known_ids(
    client: TestClient, alice: Account, case_id: str
) -> None:
    response = client.post(f"/api/v1/cases/{case_id}/explanations", json={"methods": ["saliency", "lime"]},
                           headers=alice.headers)
    body = assert_contract(response, 422, "unknown_method")
    assert body["detail"] == f"Unknown method(s): lime. Known: {', '.join(METHODS)}."


def test_a_case_the_caller_may_not_see_is_a_404_from_the_service(
    client: TestClient, bob: Account, case_id: str
) -> None:
    assert_contract(client.get(f"/api/v1/cases/{case_id}", headers=bob.headers), 404, "not_found")


def test_pages_get_the_error_page_for_the_same_error(client: TestClient, bob: Account, case_id: str) -> None:
    login(client, bob)
    response = client.get(f"/cases/{case_id}", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"


def test_domain_error_carries_code_detail_status_and_extra() -> None:
    error = DomainError("too_few_cases", "Fewer than 5 patients.", patients=3)
    assert (error.code, error.detail, error.status, error.extra) == ("too_few_cases", "Fewer than 5 patients.",
                                                                     422, {"patients": 3})
    assert DomainError("study_closed", "Closed.", 409).status == 409
    assert (NotFound("study").status, NotFound("study").code, NotFound("study").detail) == (404, "not_found",
                                                                                             "No such study.")


def test_domain_errors_survive_pickling() -> None:
    for error in (NotFound("study"), UnknownMethod(["lime"]), DomainError("too_few_cases", "Few.", floor=5)):
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
        assert type(copy) is type(error)
        assert (copy.code, copy.detail, copy.status, copy.extra) == (error.code, error.detail, error.status,
                                                                     error.extra)


def test_require_methods_keeps_order_drops_repeats_and_names_every_unknown_id() -> None:
    assert require_methods(["gradcam", "saliency", "gradcam"]) == ["gradcam", "saliency"]
    assert require_methods(DEFAULT_PANEL) == list(DEFAULT_PANEL)
    with pytest.raises(UnknownMethod) as caught:
        require_methods(["lime", "saliency", "shap"])
    assert caught.value.unknown == ["lime", "shap"] and caught.value.status == 422
    # get_method raises the same type, still a ValueError for the ML core's callers
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        get_method("lime")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, deferred (function-level) imports included."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_web(name: str) -> bool:
    return name == "app.web" or name.startswith("app.web.")


def test_nothing_below_the_web_layer_imports_it() -> None:
    offenders = []
    for path in sorted(APP.rglob("*.py")):
        relative = path.relative_to(APP)
        if relative.parts[0] == "web" or relative.name.endswith(ROUTE_MODULES):
            continue
        if relative == Path("cli.py"):  # the top layer: `gestaltlens serve` starts the web server with its protocol
            continue
        offenders += [f"{relative}: {name}" for name in _imports(path) if _is_web(name)]
    assert not offenders, "services, models, workers and the ML core must not import app.web:\n" + \
        "\n".join(offenders)


def test_the_ml_core_imports_no_route_module_and_the_error_module_only_the_standard_library() -> None:
    core = [p for part in ("vision", "nets", "explain", "evaluate", "synth") for p in (APP / part).rglob("*.py")]
    assert core
    for path in core:
        assert not any(_is_web(n) or n.endswith((".routes", ".pages")) for n in _imports(path)), path
    outside_stdlib = [n for n in _imports(APP / "errors.py")
                      if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "__future__"]
    assert not outside_stdlib


def test_the_check_sees_a_deferred_import(tmp_path: Path) -> None:
    module = tmp_path / "service.py"
    module.write_text("def f():\n    from app.web.errors import NotFound\n    raise NotFound()\n")
    assert any(_is_web(n) for n in _imports(module))
