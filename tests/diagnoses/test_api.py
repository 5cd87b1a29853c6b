"""Confirmed diagnosis of a case: chosen from the model's labels or entered by name with an OMIM id, recorded
with who and when, append-only (changes and clearing keep the earlier rows), audited, access-controlled,
shown in the case JSON and editable on the case page."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.cases.models import Case
from app.diagnoses.models import Diagnosis
from app.diagnoses.service import normalise_omim
from app.errors import DomainError
from tests.cases.test_review import case_row, user_ids
from tests.conftest import Account, browser_headers, login


@pytest.fixture
def case_id(app, alice: Account) -> str:
    row = case_row(user_ids(app)["alice"], 1, pseudonym="Dx-1")
    with app.state.sessions() as session:
        session.add(Case(**row))
        session.commit()
    return row["id"]


def demo_label(app, index: int = 1) -> Any:
    return app.state.models.get().labels[index]


def put(client: TestClient, account: Account, case_id: str, body: dict[str, Any]):
    return client.put(f"/api/v1/cases/{case_id}/diagnosis", json=body, headers=account.headers)


def rows(app, case_id: str) -> list[Diagnosis]:
    with app.state.sessions() as session:
        return list(session.scalars(select(Diagnosis).where(Diagnosis.case_id == case_id).order_by(Diagnosis.id)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("147920", "147920"), ("OMIM:147920", "147920"), (" omim: 147920 ", "147920"), ("", None), (None, None)],
)
def test_omim_ids_are_normalised(value: str | None, expected: str | None) -> None:
    assert normalise_omim(value) == expected


@pytest.mark.parametrize("value", ["14792", "1479201", "OMIM-147920", "ORPHA:2322", "14792a", "#147920"])
def test_malformed_omim_ids_are_refused(value: str) -> None:
    with pytest.raises(DomainError):
        normalise_omim(value)


def test_confirm_from_the_model_labels_then_change_then_clear(
    app, client: TestClient, alice: Account, case_id: str
) -> None:
    assert client.get(f"/api/v1/cases/{case_id}/diagnosis", headers=alice.headers).json() is None
    label = demo_label(app)
    response = put(client, alice, case_id, {"syndrome_id": label.id})
    assert response.status_code == 200, response.text
    current = response.json()
    assert current["source"] == "model_label" and current["syndrome_id"] == label.id
    assert current["name"] == label.name and current["model"] == app.state.models.get().version
    assert current["confirmed_by"] == "alice" and current["confirmed_at"]
    assert client.get(f"/api/v1/cases/{case_id}/diagnosis", headers=alice.headers).json() == current
    assert client.get(f"/api/v1/cases/{case_id}", headers=alice.headers).json()["diagnosis"] == current
    listed = client.get("/api/v1/cases", headers=alice.headers).json()["items"][0]
    assert listed["diagnosis"] == current

    # The same diagnosis again changes nothing (PUT is idempotent); a different one appends a row.
    assert put(client, alice, case_id, {"syndrome_id": label.id}).json()["id"] == current["id"]
    changed = put(client, alice, case_id, {"name": "Kabuki syndrome 1", "omim": "OMIM:147920"})
    assert changed.status_code == 200
    assert changed.json() | {"id": 0, "confirmed_at": 0} == {
        "id": 0, "source": "free_text", "syndrome_id": None, "name": "Kabuki syndrome 1", "omim": "OMIM:147920",
        "model": None, "confirmed_by": "alice", "confirmed_at": 0,
    }

    cleared = client.delete(f"/api/v1/cases/{case_id}/diagnosis", headers=alice.headers)
    assert cleared.status_code == 204
    assert client.get(f"/api/v1/cases/{case_id}/diagnosis", headers=alice.headers).json() is None
    assert client.get(f"/api/v1/cases/{case_id}", headers=alice.headers).json()["diagnosis"] is None
    assert client.delete(f"/api/v1/cases/{case_id}/diagnosis", headers=alice.headers).status_code == 204

    # Append-only: every change is a row, the clearing too (once); the history endpoint lists them.
    assert [r.source for r in rows(app, case_id)] == ["model_label", "free_text", "cleared"]
    history = client.get(f"/api/v1/cases/{case_id}/diagnoses", headers=alice.headers).json()
    assert [h["source"] for h in history] == ["model_label", "free_text", "cleared"]
    assert history[1]["omim"] == "OMIM:147920" and history[2]["name"] is None
    with app.state.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id,
                                                          AuditEvent.action == "diagnose")).all()
        case = session.get(Case, case_id)
        assert (case.diagnosis_name, case.diagnosis_omim, case.diagnosis_syndrome_id) == (None, None, None)
    assert len(events) == 3 and all(e.username == "alice" for e in events)


def test_the_current_diagnosis_is_copied_onto_the_case_for_the_list(
    app, client: TestClient, alice: Account, case_id: str
) -> None:
    put(client, alice, case_id, {"name": "  Kabuki   syndrome 1 ", "omim": "147920"})  # a tab would be refused (422)
    with app.state.sessions() as session:
        case = session.get(Case, case_id)
        assert (case.diagnosis_name, case.diagnosis_omim, case.diagnosis_syndrome_id) == (
            "Kabuki syndrome 1", "147920", None)
    assert client.get("/api/v1/cases?diagnosis=OMIM:147920", headers=alice.headers).json()["total"] == 1
    label = demo_label(app, 2)
    put(client, alice, case_id, {"syndrome_id": label.id})
    assert client.get("/api/v1/cases?diagnosis=OMIM:147920", headers=alice.headers).json()["total"] == 0
    assert client.get(f"/api/v1/cases?diagnosis={label.id}", headers=alice.headers).json()["total"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_request"),
        ({"syndrome_id": "syn_a", "name": "Both"}, 422, "invalid_request"),
        ({"syndrome_id": "syn_a", "omim": "147920"}, 422, "invalid_request"),
        ({"syndrome_id": "no_such_syndrome"}, 422, "unknown_syndrome"),
        ({"name": "Kabuki syndrome", "omim": "1479"}, 422, "invalid_omim"),
        ({"name": "   ", "omim": "147920"}, 422, "invalid_request"),
        ({"name": "x" * 201}, 422, "invalid_name"),
        ({"name": "Kabuki", "extra": 1}, 422, "invalid_request"),
    ],
)
def test_bad_diagnoses_are_refused_and_store_nothing(
    app, client: TestClient, alice: Account, case_id: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = put(client, alice, case_id, body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]
    assert rows(app, case_id) == []


def test_a_free_name_needs_no_omim_id(client: TestClient, alice: Account, case_id: str) -> None:
    response = put(client, alice, case_id, {"name": "A syndrome without an OMIM entry"})
    assert response.status_code == 200 and response.json()["omim"] is None


def test_only_who_may_see_the_case_may_diagnose_it(
    client: TestClient, alice: Account, bob: Account, admin: Account, case_id: str
) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, f"/api/v1/cases/{case_id}/diagnosis", json={"name": "X"},
                                  headers=bob.headers)
        assert response.status_code == 404 and response.json()["code"] == "not_found", method
    assert client.get(f"/api/v1/cases/{case_id}/diagnoses", headers=bob.headers).status_code == 404
    assert client.post(f"/cases/{case_id}/diagnosis", data={"name": "X"}, headers=bob.headers).status_code == 404
    response = put(client, admin, case_id, {"name": "Kabuki syndrome 1"})
    assert response.status_code == 200 and response.json()["confirmed_by"] == "ada"


def test_the_case_page_section_confirms_changes_and_clears(
    app, client: TestClient, alice: Account, case_id: str
) -> None:
    token = login(client, alice)
    page = client.get(f"/cases/{case_id}").text
    assert 'id="diagnosis"' in page and "No confirmed diagnosis" in page
    label = demo_label(app)
    assert f'<option value="{label.id}"' in page  # the model's syndromes to choose from

    response = client.post(f"/cases/{case_id}/diagnosis", data={"syndrome_id": label.id},
                           headers=browser_headers(token))
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section class="card diagnosis" id="diagnosis"')
    assert label.name in response.text and "Confirmed by alice" in response.text
    assert response.headers["HX-Trigger"] == "case-history-changed"  # the History section reloads

    bad = client.post(f"/cases/{case_id}/diagnosis", data={"name": "Kabuki syndrome 1", "omim": "12"},
                      headers=browser_headers(token))
    assert bad.status_code == 422 and "six digits" in bad.text and 'value="Kabuki syndrome 1"' in bad.text
    assert label.name in bad.text  # the current diagnosis is unchanged

    changed = client.post(f"/cases/{case_id}/diagnosis", data={"name": "Kabuki syndrome 1", "omim": "147920",
                                                               "syndrome_id": ""}, headers=browser_headers(token))
    assert changed.status_code == 200 and "OMIM:147920" in changed.text and "1 earlier change" in changed.text

    cleared = client.delete(f"/cases/{case_id}/diagnosis", headers=browser_headers(token))
    assert cleared.status_code == 200 and "No confirmed diagnosis" in cleared.text
    history = client.get(f"/cases/{case_id}/history").text
    assert "Diagnosis cleared" in history and "Diagnosis changed to Kabuki syndrome 1" in history
    assert f"Diagnosis confirmed: {label.name}" in history


def test_the_page_form_needs_the_csrf_token(client: TestClient, alice: Account, case_id: str) -> None:
    login(client, alice)
    response = client.post(f"/cases/{case_id}/diagnosis", data={"name": "X"},
                           headers={"Origin": "http://testserver", "HX-Request": "true"})
    assert response.status_code == 403
