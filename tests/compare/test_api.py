"""Comparing two faces through the HTTP contract: a case against its nearest gallery face, another case and a
centroid; maps on both sides named by their objective; cross-user isolation; bad references."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.explain.registry import METHODS
from app.synth.generate import generate_one
from tests.conftest import Account, upload
from tests.explanations.test_api import wait_for

QUICK = ["saliency", "gradcam", "similarity_decomposition"]


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    return [generate_one(seed=909, class_id=cls, index=0, severity=1.0).jpeg for cls in ("syn_a", "syn_c")]


def _finish(client: TestClient, account: Account, body: dict) -> None:
    for job_id in body["job_ids"]:
        assert wait_for(client, account, job_id)["state"] == "done"


def _npy(client: TestClient, account: Account, item: dict) -> np.ndarray:
    response = client.get(item["urls"]["npy"], headers=account.headers)
    assert response.status_code == 200
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def test_compare_with_the_nearest_gallery_face_draws_both_sides(client: TestClient, alice: Account,
                                                                faces: list[bytes]) -> None:
    case = upload(client, alice, faces[0]).json()
    top = case["predictions"][0]
    response = client.post(f"/api/v1/cases/{case['id']}/compare", headers=alice.headers,
                           json={"reference": f"nearest:{top['syndrome_id']}", "methods": QUICK})
    assert response.status_code == 202, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["reference"]["kind"] == "gallery" and body["reference"]["id"] == top["image_id"]
    assert body["reference"]["objective"] == f"similarity:gallery:{top['image_id']}"
    # the ranking's similarity is 1 - distance to that very image
    assert abs(body["similarity"] - (1 - top["distance"])) < 2e-3
    assert body["other"] is not None and body["other_reason"] is None
    _finish(client, alice, body)
    done = client.get(f"/api/v1/cases/{case['id']}/compare", headers=alice.headers,
                      params={"reference": f"gallery:{top['image_id']}"}).json()
    assert [e["method"] for e in done["query"]] == QUICK and [e["method"] for e in done["other"]] == QUICK
    for item in done["query"]:
        assert item["status"] == "done" and item["objective"] == body["reference"]["objective"]
        assert item["subject"] is None
        assert abs(item["stats"]["objective_value"] - body["similarity"]) < 1e-4
    for item in done["other"]:
        assert item["status"] == "done" and item["objective"] == f"similarity:case:{case['id']}"
        assert item["subject"] == f"gallery:{top['image_id']}"
    query_map, other_map = _npy(client, alice, done["query"][2]), _npy(client, alice, done["other"][2])
    assert query_map.shape == other_map.shape == (112, 112) and not np.allclose(query_map, other_map)
    gallery_png = client.get(body["reference"]["image"], headers=alice.headers)
    assert gallery_png.status_code == 200 and gallery_png.content[:4] == b"\x89PNG"
    # the case's own explanation panel does not mix in similarity maps
    listed = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers).json()
    assert all(e["objective"] != "logit" for e in listed)
    figure = client.get(f"/api/v1/cases/{case['id']}/compare/figure.png", headers=alice.headers,
                        params={"reference": f"gallery:{top['image_id']}"})
    assert figure.status_code == 200 and figure.content[:4] == b"\x89PNG"


def test_compare_two_cases_and_a_centroid(client: TestClient, alice: Account, faces: list[bytes], settings) -> None:
    first, second = (upload(client, alice, face).json() for face in faces)
    body = client.post(f"/api/v1/cases/{first['id']}/compare", headers=alice.headers,
                       json={"reference": f"case:{second['id']}", "methods": ["occlusion"],
                             "params": {"occlusion": {"window": 16, "stride": 16}}}).json()
    assert body["reference"]["case_id"] == second["id"] and len(body["job_ids"]) == 2
    _finish(client, alice, body)
    done = client.get(f"/api/v1/cases/{first['id']}/compare", headers=alice.headers,
                      params={"reference": f"case:{second['id']}"}).json()
    # the stored defaults differ from the asked parameters: this GET lists the default-parameter rows (none yet)
    assert done["query"] == [] and done["similarity"] == pytest.approx(body["similarity"], abs=1e-6)
    mine = client.get(f"/api/v1/cases/{second['id']}/explanations", headers=alice.headers).json()
    assert [e["objective"] for e in mine] == [f"similarity:case:{first['id']}"]
    assert mine[0]["status"] == "done"

    # erasing the second case also drops the maps the first case holds for its similarity to it
    held = [e for e in client.get(f"/api/v1/cases/{first['id']}/explanations", headers=alice.headers).json()
            if e["objective"] == f"similarity:case:{second['id']}"]
    assert held and all(e["status"] == "done" for e in held)
    first_folder = settings.data_dir / "photos" / first["id"]
    files_before = set(first_folder.rglob("*.npy"))
    assert client.delete(f"/api/v1/cases/{second['id']}", headers=alice.headers).status_code == 204
    assert not any(e["objective"] == f"similarity:case:{second['id']}" for e in client.get(
        f"/api/v1/cases/{first['id']}/explanations", headers=alice.headers).json())
    # ... and their files, which live in the first case's folder, not the erased one's
    assert len(files_before - set(first_folder.rglob("*.npy"))) == len(held)

    syndrome = first["predictions"][0]["syndrome_id"]
    centroid = client.post(f"/api/v1/cases/{first['id']}/compare", headers=alice.headers,
                           json={"reference": f"centroid:{syndrome}"}).json()  # default: all ten + decomposition
    assert centroid["other"] is None and "centroid" in centroid["other_reason"]
    assert -1.0 <= centroid["similarity"] <= 1.0
    _finish(client, alice, centroid)
    done = client.get(f"/api/v1/cases/{first['id']}/compare", headers=alice.headers,
                      params={"reference": f"centroid:{syndrome}"}).json()
    assert [e["method"] for e in done["query"]] == list(METHODS) and len(METHODS) == 11
    for item in done["query"]:
        assert item["status"] == "done" and item["objective"] == f"similarity:centroid:{syndrome}", item
        assert np.abs(_npy(client, alice, item)).max() > 0, item["method"]


def test_comparisons_are_isolated_between_users(client: TestClient, alice: Account, bob: Account,
                                                faces: list[bytes]) -> None:
    alices = upload(client, alice, faces[0]).json()
    bobs = upload(client, bob, faces[1]).json()
    # bob cannot compare with alice's case, nor open a comparison of it
    refused = client.post(f"/api/v1/cases/{bobs['id']}/compare", headers=bob.headers,
                          json={"reference": f"case:{alices['id']}", "methods": ["saliency"]})
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    assert client.get(f"/api/v1/cases/{alices['id']}/compare", headers=bob.headers,
                      params={"reference": f"case:{bobs['id']}"}).status_code == 404
    assert client.get(f"/cases/{alices['id']}/compare", headers=bob.headers).status_code == 404


def test_an_admins_comparison_of_two_clinicians_cases_names_neither_pseudonym_to_the_other(
        client: TestClient, admin: Account, alice: Account, bob: Account, faces: list[bytes]) -> None:
    alices = upload(client, alice, faces[0], pseudonym="ALICE-PATIENT-7").json()
    bobs = upload(client, bob, faces[1], pseudonym="BOB-PATIENT-9").json()
    body = client.post(f"/api/v1/cases/{alices['id']}/compare", headers=admin.headers,
                       json={"reference": f"case:{bobs['id']}", "methods": ["saliency"]})
    assert body.status_code == 202, body.text
    _finish(client, admin, body.json())
    for owner, case, foreign in ((alice, alices, "BOB-PATIENT-9"), (bob, bobs, "ALICE-PATIENT-7")):
        maps = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=owner.headers)
        assert maps.status_code == 200 and maps.json(), maps.text
        assert foreign not in maps.text
        assert {m["target"]["name"] for m in maps.json()} == {"another clinician's case"}
        for page in (f"/cases/{case['id']}", f"/cases/{case['id']}/history"):
            answer = client.get(page, headers=owner.headers)
            assert answer.status_code == 200 and foreign not in answer.text, page


@pytest.mark.parametrize("reference", ["friend:x", "gallery:nope-00001", "centroid:no_such", "case:"])
def test_bad_references_are_refused(client: TestClient, alice: Account, faces: list[bytes], reference: str) -> None:
    case = upload(client, alice, faces[0]).json()
    response = client.post(f"/api/v1/cases/{case['id']}/compare", headers=alice.headers,
                           json={"reference": reference})
    assert response.status_code in (404, 422), response.text
    assert response.json()["code"] in ("unknown_reference", "not_found")


def test_the_reference_picker_says_why_its_case_list_is_empty(client: TestClient, alice: Account,
                                                              faces: list[bytes]) -> None:
    only = upload(client, alice, faces[0], pseudonym="ONLY-1").json()
    url = f"/cases/{only['id']}/compare/references"
    alone = client.get(url, headers={**alice.headers, "HX-Request": "true"})
    assert alone.status_code == 200 and "No other case yet." in alone.text and "pseudonym" not in alone.text
    upload(client, alice, faces[1], pseudonym="SECOND-2")
    assert "SECOND-2" in client.get(url, headers=alice.headers).text
    searched = client.get(url, params={"q": "nobody"}, headers=alice.headers).text
    assert "No case you may see has a pseudonym with that text." in searched
