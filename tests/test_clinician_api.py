"""What a clinician relies on, through the HTTP API and the page partials (issue 11): the out-of-range flag
on a real photo (case JSON and /predict), HPO phenotype terms (add, search, remove, list filter, region
suggestions), the users page's deactivate / password reset, and an explain form that refuses no method."""

from __future__ import annotations

import base64
import re

import pytest
from fastapi.testclient import TestClient

from app.synth.generate import generate_one
from tests.conftest import Account, browser_headers, login, upload

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def synthetic_jpeg() -> bytes:
    return generate_one(seed=31337, class_id="syn_a", index=0).jpeg


def test_real_photo_is_flagged_out_of_range_in_the_case_json_page_and_predict(
    client: TestClient, alice: Account, astronaut_jpeg: bytes, synthetic_jpeg: bytes
) -> None:
    real = upload(client, alice, astronaut_jpeg).json()
    ood = real["out_of_distribution"]
    assert ood["flagged"] is True and ood["distance"] > ood["threshold"] > 0
    assert ood["statistic"] == "nearest_gallery_mahalanobis" and 0 <= ood["false_flag_rate"] < 0.05
    again = client.get(f"/api/v1/cases/{real['id']}", headers=alice.headers).json()
    assert again["out_of_distribution"] == ood  # stored with the ranking, not recomputed
    synthetic = upload(client, alice, synthetic_jpeg).json()
    assert synthetic["out_of_distribution"]["flagged"] is False
    login(client, alice)
    page = client.get(f"/cases/{real['id']}").text
    assert 'id="ood-flag"' in page and "intended use" in page.lower()
    assert 'id="ood-flag"' not in client.get(f"/cases/{synthetic['id']}").text
    body = {"img": base64.b64encode(astronaut_jpeg).decode()}
    gm = client.post("/predict", json=body, headers=alice.headers).json()
    assert gm["out_of_distribution"]["flagged"] is True and gm["suggested_syndromes_list"]

    # ... and wherever it stands beside other faces: a small distance of a far-away face is not a lead. A syn_e
    # face sits under the demo model's match threshold (0.65) from the astronaut (0.28), so they make a "match".
    near = upload(client, alice, generate_one(seed=31337, class_id="syn_e", index=0).jpeg).json()
    similar = client.get(f"/api/v1/cases/{synthetic['id']}/similar", headers=alice.headers).json()["items"]
    assert {s["case_id"]: s["out_of_range"] for s in similar} == {real["id"]: True, near["id"]: False}
    assert client.get(f"/api/v1/cases/{real['id']}/similar", headers=alice.headers).json()["items"][0][
        "out_of_range"] is False  # the synthetic face, as seen from the flagged one
    beside = client.get(f"/cases/{synthetic['id']}/similar").text
    assert beside.count('data-ood="flagged"') == 1 and "ood-badge" in beside
    own = client.get(f"/cases/{real['id']}/similar").text
    assert "ood-warning" in own  # the flagged case's own panel warns about all its distances
    listed = client.get("/cases").text
    assert listed.count('data-ood="flagged"') == 1
    matches = client.get("/api/v1/matches", headers=alice.headers).json()
    assert any(real["id"] in (m["case_a"], m["case_b"]) for m in matches["items"]), matches
    for item in matches["items"]:
        assert item["case_a_out_of_range"] is (item["case_a"] == real["id"])
        assert item["case_b_out_of_range"] is (item["case_b"] == real["id"])
    page = client.get("/matches").text
    assert ('id="ood-note"' in page) is bool(matches["items"])


def test_hpo_terms_are_added_searched_listed_filtered_and_removed(
    client: TestClient, alice: Account, bob: Account, synthetic_jpeg: bytes
) -> None:
    found = client.get("/api/v1/hpo/terms", params={"q": "hypertelor"}, headers=alice.headers).json()
    assert found["items"][0]["id"] == "HP:0000316" and found["ontology"].startswith("hp/releases/")
    by_synonym = client.get("/api/v1/hpo/terms", params={"q": "widely spaced eyes"}, headers=alice.headers).json()
    assert "HP:0000316" in [t["id"] for t in by_synonym["items"]]
    by_id = client.get("/api/v1/hpo/terms", params={"q": "0000494"}, headers=alice.headers).json()
    assert by_id["items"] == [{"id": "HP:0000494", "name": "Downslanted palpebral fissures"}]

    case = upload(client, alice, synthetic_jpeg).json()
    other = upload(client, alice, synthetic_jpeg).json()
    url = f"/api/v1/cases/{case['id']}/phenotype"
    added = client.post(url, json={"id": "HP:0000316"}, headers=alice.headers)
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
    assert added.json()["terms"][0]["name"] == "Hypertelorism"
    assert "eyes" in added.json()["regions"]  # the region vocabulary names Hypertelorism under the eyes
    assert client.post(url, json={"id": "HP:0000316"}, headers=alice.headers).status_code == 201  # idempotent
    refused = client.post(url, json={"id": "HP:9999999"}, headers=alice.headers)
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_hpo_term"
    assert client.post(url, json={"id": "HP:0000316"}, headers=bob.headers).status_code == 404
    shown = client.get(f"/api/v1/cases/{case['id']}", headers=alice.headers).json()
    assert shown["phenotype"] == [{"id": "HP:0000316", "name": "Hypertelorism"}]
    listed = client.get("/api/v1/cases", params={"hpo": "HP:0000316"}, headers=alice.headers).json()
    assert [c["id"] for c in listed["items"]] == [case["id"]] and listed["items"][0]["phenotype"]
    assert other["id"] not in [c["id"] for c in listed["items"]]
    assert client.delete(f"{url}/HP:0000316", headers=alice.headers).status_code == 204
    assert client.get(url, headers=alice.headers).json()["terms"] == []
    assert client.get("/api/v1/cases", params={"hpo": "HP:0000316"}, headers=alice.headers).json()["total"] == 0


def test_phenotype_partial_adds_and_removes_through_the_case_page(
    client: TestClient, alice: Account, synthetic_jpeg: bytes
) -> None:
    case = upload(client, alice, synthetic_jpeg).json()
    token = login(client, alice)
    results = client.get(f"/cases/{case['id']}/phenotype/search", params={"hpo_q": "long philtrum"}).text
    assert "HP:0000343" in results
    added = client.post(f"/cases/{case['id']}/phenotype", data={"term": "HP:0000343"}, headers=browser_headers(token))
    assert added.status_code == 200 and "Long philtrum" in added.text
    # the search now says the case holds it, and offers to mark it absent instead of adding it again
    results = client.get(f"/cases/{case['id']}/phenotype/search", params={"hpo_q": "long philtrum"}).text
    assert 'data-held="present"' in results and "mark absent" in results
    again = client.post(f"/cases/{case['id']}/phenotype", data={"term": "HP:0000343"}, headers=browser_headers(token))
    assert again.status_code == 200  # a repeated click: nothing changes, nothing is recorded
    client.post(f"/cases/{case['id']}/phenotype", data={"term": "HP:0000343", "excluded": "true"},
                headers=browser_headers(token))
    assert 'data-held="absent"' in client.get(f"/cases/{case['id']}/phenotype/search",
                                               params={"hpo_q": "long philtrum"}).text
    removed = client.post(f"/cases/{case['id']}/phenotype/HP:0000343/remove", headers=browser_headers(token))
    assert "Long philtrum" not in removed.text and "No phenotype recorded" in removed.text
    # the case's History names each change, once
    history = client.get(f"/cases/{case['id']}/history").text
    assert history.count("HPO term recorded") == 1 and "— Long philtrum (HP:0000343)</span>" in history
    assert "HPO term changed" in history and "Long philtrum (HP:0000343) now absent" in history
    assert "HPO term removed" in history and "Long philtrum (HP:0000343), absent" in history


def test_region_vocabulary_terms_are_current_hpo_terms() -> None:
    from app.phenotypes.ontology import ontology
    from app.synth.regions import REGIONS

    hpo = ontology()
    for region in REGIONS:
        for term in region.hpo:
            current = hpo.get(term.id)
            assert current is not None and not current.obsolete, (region.id, term.id)
            assert current.id == term.id, f"{term.id} was merged into {current.id}"


def test_users_page_defaults_to_clinician_deactivates_and_resets(
    client: TestClient, admin: Account, alice: Account
) -> None:
    token = login(client, admin)
    page = client.get("/admin/users").text
    assert '<option value="clinician" selected>' in page and "hx-confirm" in page
    from sqlalchemy import select

    from app.auth.models import User

    with client.app.state.sessions() as session:
        alice_id = session.scalar(select(User.id).where(User.username == "alice"))
        admin_id = session.scalar(select(User.id).where(User.username == "ada"))
    assert client.get("/api/v1/cases", headers=alice.headers).status_code == 200
    off = client.post(f"/admin/users/{alice_id}/active", data={"active": "false"}, headers=browser_headers(token))
    assert off.status_code == 200 and "deactivated" in off.text
    assert client.get("/api/v1/cases", headers=alice.headers).status_code == 401  # her API token ended
    own = client.post(f"/admin/users/{admin_id}/active", data={"active": "false"}, headers=browser_headers(token))
    assert own.status_code == 400 and "your own account" in own.text
    on = client.post(f"/admin/users/{alice_id}/active", data={"active": "true"}, headers=browser_headers(token))
    assert on.status_code == 200 and "reactivated" in on.text
    weak = client.post(f"/admin/users/{alice_id}/password", data={"password": "short"}, headers=browser_headers(token))
    assert weak.status_code == 400
    new_password = "a-new-long-passphrase-42"
    reset = client.post(f"/admin/users/{alice_id}/password", data={"password": new_password},
                        headers=browser_headers(token))
    assert reset.status_code == 200 and "New password set" in reset.text
    other = TestClient(client.app, base_url="http://testserver")
    login(other, Account("alice", new_password, "clinician", ""))


def test_explain_form_without_methods_computes_nothing(
    client: TestClient, alice: Account, synthetic_jpeg: bytes
) -> None:
    case = upload(client, alice, synthetic_jpeg).json()
    token = login(client, alice)
    response = client.post(f"/cases/{case['id']}/explanations", data={"target": "syn_a"},
                           headers=browser_headers(token))
    assert response.status_code == 200 and "Tick at least one method" in response.text
    assert client.get(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers).json() == []


def test_first_run_offers_and_loads_the_synthetic_demo_cohort(
    app, client: TestClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import app.demo.routes as demo_routes

    monkeypatch.setattr(demo_routes, "PER_SYNDROME", 1)  # two faces keep the test short
    monkeypatch.setattr(demo_routes, "SYNDROMES", ["syn_a", "syn_e"])
    token = login(client, alice)
    assert "Load the demo cohort" in client.get("/cases").text
    started = client.post("/demo-cohort", headers=browser_headers(token))
    assert started.status_code == 200
    job_id = re.search(r'hx-get="/demo-cohort/([0-9a-f]{32})"', started.text).group(1)
    deadline = time.monotonic() + 120
    while True:
        progress = client.get(f"/demo-cohort/{job_id}", headers={"HX-Request": "true"})
        if "HX-Redirect" in progress.headers or "could not be loaded" in progress.text:
            break
        assert time.monotonic() < deadline, progress.text
        time.sleep(0.5)
    assert progress.headers.get("HX-Redirect") == "/cases", progress.text
    listed = client.get("/api/v1/cases", headers=alice.headers).json()
    assert listed["total"] == 2 and all(c["pseudonym"].startswith("SYNTHETIC ") for c in listed["items"])
    assert all(c["diagnosis"] is not None for c in listed["items"])
    assert "Load the demo cohort" not in client.get("/cases").text
