"""Face + phenotype ranking through the API and the case page (issue 23), on SQLite and PostgreSQL.

The demo model serves synthetic profiles (models/demo/phenotype.json) and a fitted fusion (its card): entered
terms change the combined ranking, excluded terms count against, unknown and obsolete terms are refused,
the decomposition sums to the score, region concordance is shown per map, and without terms the combined
ranking is exactly the face ranking. /predict keeps the GestaltMatcher shape.
"""

from __future__ import annotations

import base64
import math
import time

import pytest
from fastapi.testclient import TestClient

from app.synth.generate import generate_one
from tests.conftest import Account, browser_headers, login, upload

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    # a syn_a face (hypertelorism) at low severity: the face alone is unsure, the phenotype is not
    return generate_one(seed=4242, class_id="syn_a", index=3).jpeg


def _case(client: TestClient, alice: Account, case_id: str) -> dict:
    response = client.get(f"/api/v1/cases/{case_id}", headers=alice.headers)
    assert response.status_code == 200
    return response.json()


def test_without_terms_the_combined_ranking_is_the_face_ranking(client: TestClient, alice: Account,
                                                                face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    assert case["phenotype_ranking"] is None  # the upload answer is unchanged; single reads carry it
    shown = _case(client, alice, case["id"])
    ranking = shown["phenotype_ranking"]
    assert ranking["available"] is True and ranking["profiles"]["synthetic"] is True
    assert ranking["face"] == shown["predictions"] == ranking["combined"]  # the same rows, the same order
    assert ranking["phenotype"] == [] and ranking["contributions"] == {} and ranking["terms"] == []


def test_entered_terms_change_the_combined_ranking_and_decompose_exactly(client: TestClient, alice: Account,
                                                                         face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    url = f"/api/v1/cases/{case['id']}/phenotype"
    face_order = [p["syndrome_id"] for p in case["predictions"]]
    # syn_c's profile: long philtrum + thin upper lip; enter those and the combined ranking must move it up
    for term in ("HP:0000343", "HP:0000219"):
        assert client.post(url, json={"id": term}, headers=alice.headers).status_code == 201
    ranking = _case(client, alice, case["id"])["phenotype_ranking"]
    assert ranking["phenotype"][0]["syndrome_id"] == "syn_c"
    combined = [p["syndrome_id"] for p in ranking["combined"]]
    assert combined != face_order and combined.index("syn_c") < face_order.index("syn_c")
    assert ranking["face"] == _case(client, alice, case["id"])["predictions"]  # face-only is untouched
    assert ranking["fusion"]["method"] == "conditional_logit"
    by_id = {p["syndrome_id"]: p["score"] for p in ranking["phenotype"]}
    for syndrome, parts in ranking["contributions"].items():
        assert [c["id"] for c in parts] == ["HP:0000343", "HP:0000219"]
        assert math.fsum(c["value"] for c in parts) == pytest.approx(by_id[syndrome], abs=1e-5)
    assert {c["best_match"] for c in ranking["contributions"]["syn_c"]} == {"HP:0000343", "HP:0000219"}


def test_an_excluded_term_counts_against_a_syndrome_that_has_it(client: TestClient, alice: Account,
                                                                 face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    url = f"/api/v1/cases/{case['id']}/phenotype"
    client.post(url, json={"id": "HP:0000316"}, headers=alice.headers)  # hypertelorism: syn_a
    before = {p["syndrome_id"]: p["score"] for p in _case(client, alice, case["id"])["phenotype_ranking"]["phenotype"]}
    added = client.post(url, json={"id": "HP:0000494", "excluded": True}, headers=alice.headers)  # not downslanted
    assert added.status_code == 201
    assert {"id": "HP:0000494", "excluded": True} .items() <= next(
        t for t in added.json()["terms"] if t["id"] == "HP:0000494").items()
    shown = _case(client, alice, case["id"])
    assert [t["id"] for t in shown["phenotype"]] == ["HP:0000316"]  # present terms only, as before
    after = {p["syndrome_id"]: p["score"] for p in shown["phenotype_ranking"]["phenotype"]}
    assert after["syn_b"] < before["syn_b"]  # syn_b has downslanted palpebral fissures
    assert after["syn_a"] == pytest.approx(before["syn_a"])  # syn_a does not: unchanged
    penalty = next(c for c in shown["phenotype_ranking"]["contributions"]["syn_b"] if c["excluded"])
    assert penalty["value"] < 0 and penalty["best_match"] == "HP:0000494"
    # the case list's HPO filter finds present terms, not excluded ones
    listed = client.get("/api/v1/cases", params={"hpo": "HP:0000494"}, headers=alice.headers).json()
    assert case["id"] not in [c["id"] for c in listed["items"]]
    # marking it present again switches the flag (idempotent add)
    again = client.post(url, json={"id": "HP:0000494"}, headers=alice.headers).json()
    assert next(t for t in again["terms"] if t["id"] == "HP:0000494")["excluded"] is False


def test_unknown_and_obsolete_terms_are_clear_422s(client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    from app.phenotypes.ontology import ontology

    case = upload(client, alice, face_jpeg).json()
    url = f"/api/v1/cases/{case['id']}/phenotype"
    unknown = client.post(url, json={"id": "HP:9999999"}, headers=alice.headers)
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_hpo_term"
    assert "HP:9999999" in unknown.json()["detail"]
    hpo = ontology()  # an obsolete stanza that is not also the alternative id of a term it was merged into
    obsolete = next(t for t in hpo.terms.values() if t.obsolete and t.replaced_by and t.id not in hpo.alt)
    refused = client.post(url, json={"id": obsolete.id, "excluded": True}, headers=alice.headers)
    body = refused.json()
    assert refused.status_code == 422 and body["code"] == "obsolete_hpo_term"
    assert obsolete.id in body["detail"] and obsolete.replaced_by in body["detail"] and "obsolete" in body["detail"]
    # terms a patient cannot have: the root, a mode of inheritance, onset; and the search does not offer them
    for not_a_feature in ("HP:0000001", "HP:0000006", "HP:0003577", "HP:0000118"):
        refused = client.post(url, json={"id": not_a_feature}, headers=alice.headers)
        assert refused.status_code == 422 and refused.json()["code"] == "not_a_phenotype", refused.text
        assert not_a_feature in refused.json()["detail"]
        assert hpo.search(not_a_feature) == []
    assert hpo.search("autosomal dominant") == [] and hpo.search("HP:0000316")[0]["id"] == "HP:0000316"
    # Unicode digits are not an id, and "excluded" must be a JSON boolean, not a word that looks like one
    assert client.post(url, json={"id": "HP:\u0660\u0660\u0660\u0660\u0663\u0661\u0666"},
                       headers=alice.headers).json()["code"] == "unknown_hpo_term"
    for vague in ("yes", "no", 1, "true"):
        assert client.post(url, json={"id": "HP:0000316", "excluded": vague}, headers=alice.headers).status_code == 422
    assert client.get(url, headers=alice.headers).json()["terms"] == []


def test_predict_keeps_the_gestaltmatcher_shape(client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    body = client.post("/predict", json={"img": base64.b64encode(face_jpeg).decode()}, headers=alice.headers).json()
    # the phenotype adds nothing to /predict (ranked_by is the gallery's sibling field, issue 22)
    assert set(body) == {"model_version", "gallery_version", "suggested_genes_list", "suggested_syndromes_list",
                         "out_of_distribution", "ranked_by"}
    assert set(body["suggested_syndromes_list"][0]) == {"syndrome_name", "omim_id", "distance", "gestalt_score",
                                                         "image_id", "subject_id"}


def test_case_page_shows_three_rankings_term_bars_and_map_concordance(client: TestClient, alice: Account,
                                                                       face_jpeg: bytes) -> None:
    case = upload(client, alice, face_jpeg).json()
    token = login(client, alice)
    page = client.get(f"/cases/{case['id']}").text
    assert 'id="phenotype-ranking"' in page
    empty = client.get(f"/cases/{case['id']}/phenotype/ranking")
    assert empty.headers["cache-control"] == "no-store" and 'id="no-terms"' in empty.text
    assert 'id="synthetic-profiles"' in empty.text and 'id="rank-face"' in empty.text
    added = client.post(f"/cases/{case['id']}/phenotype", data={"term": "HP:0000316"}, headers=browser_headers(token))
    assert "phenotype-changed" in added.headers["hx-trigger"]
    excluded = client.post(f"/cases/{case['id']}/phenotype", data={"term": "HP:0000347", "excluded": "true"},
                           headers=browser_headers(token))
    assert 'data-excluded="true"' in excluded.text
    # one saliency map of the case, so that concordance has a map to score
    job = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                      headers=alice.headers).json()
    deadline = time.monotonic() + 120
    while client.get(f"/api/v1/jobs/{job['job_id']}", headers=alice.headers).json()["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    html = client.get(f"/cases/{case['id']}/phenotype/ranking").text
    for marker in ('id="rank-phenotype"', 'id="rank-combined"', 'id="term-bars"', 'id="concordance"',
                   'data-method="saliency"', "Hypertelorism"):
        assert marker in html, marker
    concordance = client.get(f"/api/v1/cases/{case['id']}/phenotype", headers=alice.headers).json()["concordance"]
    assert concordance[0]["method"] == "saliency" and concordance[0]["regions"] == ["eyes"]
    assert 0.0 <= concordance[0]["share"] <= 1.0 and 0.0 < concordance[0]["area_share"] < 0.2


def test_a_term_stored_before_the_phenotype_check_can_still_be_switched_and_removed(
        app, client: TestClient, alice: Account, face_jpeg: bytes) -> None:
    from app.phenotypes.models import CasePhenotype

    case = upload(client, alice, face_jpeg).json()
    with app.state.sessions() as session:  # as an older version let it in
        session.add(CasePhenotype(case_id=case["id"], hpo_id="HP:0000006", name="Autosomal dominant inheritance",
                                  excluded=False))
        session.commit()
    url = f"/api/v1/cases/{case['id']}/phenotype"
    switched = client.post(url, json={"id": "HP:0000006", "excluded": True}, headers=alice.headers)
    assert switched.status_code == 201, switched.text
    assert [t["excluded"] for t in switched.json()["terms"] if t["id"] == "HP:0000006"] == [True]
    assert client.delete(f"{url}/HP:0000006", headers=alice.headers).status_code == 204
    again = client.post(url, json={"id": "HP:0000006"}, headers=alice.headers)  # a new one is checked
    assert again.status_code == 422 and again.json()["code"] == "not_a_phenotype"
