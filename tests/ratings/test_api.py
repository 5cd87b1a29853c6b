"""Rating studies through HTTP: creation, two raters, append-only edits, the summary's numbers, the CSV round
trip, access rules, bad input, ad-hoc ratings from the case page, and blinded HTML that names no method."""

from __future__ import annotations

import csv
import io
import re
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from app.audit.models import AuditEvent
from app.auth.models import User
from app.cases.models import Case
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.ratings import service as rating_service
from app.ratings import stats
from app.ratings.models import Rating, RatingStudy, StudyItemOrder, StudyMap
from app.synth.generate import generate_one
from app.synth.regions import REGION_IDS
from app.web.errors import NotFound
from tests.conftest import Account, browser_headers, login, upload
from tests.explanations.test_api import wait_for

QUICK = ["saliency", "gradcam", "occlusion"]


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    return [generate_one(seed=4242 + i, class_id=cls, index=0, severity=1.0).jpeg
            for i, cls in enumerate(["syn_b", "syn_d"])]


def make_study(client: TestClient, admin: Account, faces: list[bytes], raters: list[Account], *,
               blinded: bool = True, methods: list[str] = QUICK, owner: Account | None = None) -> tuple[dict, list]:
    owner = owner or admin
    cases = [upload(client, owner, face).json() for face in faces]
    response = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "Pilot", "cases": [c["id"] for c in cases], "methods": methods, "target_rule": "top1",
        "raters": [r.username for r in raters], "blinded": blinded})
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["jobs"] and study["maps"]["done"] == 0
    for job in study["jobs"]:
        assert wait_for(client, admin, job)["state"] == "done"
    return client.get(f"/api/v1/studies/{study['id']}", headers=admin.headers).json(), cases


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def rater_maps(client: TestClient, rater: Account, study: dict) -> list[tuple[int, dict]]:
    out = []
    for position in range(1, study["cases"] + 1):
        view = client.get(f"/api/v1/studies/{study['id']}/cases/{position}", headers=rater.headers)
        assert view.status_code == 200, view.text
        out.extend((position, item) for item in view.json()["maps"])
    return out


def truth(app, study_id: str, rater: Account) -> dict[tuple[int, str], Explanation]:
    """What each (case position, label) of one rater is, straight from the database (never shown to raters)."""
    with app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == rater.username))
        study = session.get(RatingStudy, study_id)
        out = {}
        for case in rating_service.study_cases(session, study_id=study_id):
            for label in "ABCDEFGHIJ":
                try:
                    _, _, row = rating_service.labelled_map(session, study=study, rater_id=user.id,
                                                            position=case.position, label=label)
                except NotFound:
                    break
                out[(case.position, label)] = row
        session.commit()
        return out


def study_explanation_ids(app, study_id: str) -> set[str]:
    with app.state.sessions() as session:
        return set(session.scalars(select(StudyMap.explanation_id).where(StudyMap.study_id == study_id)))


def rate(client: TestClient, rater: Account, explanation_id: str, **body) -> dict:
    response = client.post(f"/api/v1/explanations/{explanation_id}/ratings", json=body, headers=rater.headers)
    assert response.status_code == 201, response.text
    return response.json()


def rate_in(client: TestClient, rater: Account, item: dict, **body) -> dict:
    """Rate a study map the way the rating page does: at its URL (case position and label)."""
    response = client.post(item["rate_url"], json=body, headers=rater.headers)
    assert response.status_code == 201, response.text
    return response.json()


# The scores each rater gives, by method and case position: some agreement, not perfect.
PLAN = {
    "alice": {"saliency": [4, 5], "gradcam": [2, 3], "occlusion": [3, 1]},
    "bob": {"saliency": [5, 5], "gradcam": [2, 2], "occlusion": [4, 1]},
}


def test_two_raters_complete_a_study_and_the_summary_and_csv_follow_from_their_ratings(
    app, client: TestClient, admin: Account, alice: Account, bob: Account, faces: list[bytes]
) -> None:
    study, cases = make_study(client, admin, faces, [alice, bob])
    assert study["methods"] == QUICK and study["cases"] == 2 and study["maps"]["done"] == 6
    maps = rater_maps(client, alice, study)
    assert [item["label"] for _, item in maps] == ["A", "B", "C", "A", "B", "C"]
    assert all("method" not in item and "explanation_id" not in item for _, item in maps)

    for rater in (alice, bob):
        actual = truth(app, study["id"], rater)
        for position, item in rater_maps(client, rater, study):
            m = actual[(position, item["label"])].method
            score = PLAN[rater.username][m][position - 1]
            out = rate_in(client, rater, item, score=score,
                          regions=["eyes", "nose"] if m == "gradcam" else ["hair_background"],
                          context=m == "occlusion", comment=f"{rater.username} on {item['label']}")
            assert out["blinded"] is True and out["blinded_label"] == item["label"]
            # A blinded study's answers name neither the method nor the (global) explanation id.
            assert "method" not in out and "explanation_id" not in out
            assert "case_id" not in out  # nor the owner's case id: raters know cases by their position
    assert client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()["progress"] == {
        "rated": 6, "total": 6, "pending": 0, "complete": True}

    # Append-only: alice changes her mind on one map; a row is added, the newest counts.
    first_saliency = next(item for pos, item in rater_maps(client, alice, study)
                          if pos == 1 and truth(app, study["id"], alice)[(1, item["label"])].method == "saliency")
    edited = rate_in(client, alice, first_saliency, score=1, regions=["eyes"], comment="=SUM(A1)")
    PLAN["alice"]["saliency"][0] = 1
    try:
        with app.state.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Rating)) == 13
            latest = rating_service.latest_ratings(session, study_id=study["id"])
            assert len(latest) == 12 and edited["id"] in {r.id for r in latest}
            db_rows = {r.id: r for r in latest}
            expected_points = rating_service.points(latest)

        # The summary is computed from exactly these ratings.
        summary = client.get(f"/api/v1/ratings/summary?study_id={study['id']}", headers=admin.headers)
        assert summary.status_code == 200, summary.text
        data = summary.json()
        assert data["n_ratings"] == 12 and data["n_raters"] == 2 and data["scope"] == "study"
        by_method = {m["method"]: m for m in data["methods"]}
        assert list(by_method) == QUICK
        for m in QUICK:
            scores = [PLAN[r][m][i] for r in ("alice", "bob") for i in (0, 1)]
            entry = by_method[m]
            assert entry["n"] == 4 and entry["mean"] == pytest.approx(np.mean(scores))
            assert entry["distribution"] == {str(s): scores.count(s) for s in range(1, 6)}
            assert entry["ci"] is None or entry["ci"][0] <= entry["mean"] <= entry["ci"][1]
            mine = [p for p in expected_points if p.method == m]
            ci = stats.bootstrap_mean_ci([p.score for p in mine], [p.case for p in mine])
            assert entry["ci"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
            # Alpha straight from the krippendorff package on the raters × maps matrix of this method.
            import krippendorff

            matrix = np.array([[PLAN[r][m][0], PLAN[r][m][1]] for r in ("alice", "bob")], dtype=float)
            if len(set(matrix.ravel())) > 1:
                expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                              value_domain=[1, 2, 3, 4, 5])
                assert entry["alpha"]["value"] == pytest.approx(expected)
            assert (entry["alpha"]["n_raters"], entry["alpha"]["n_items"]) == (2, 2)
            assert entry["context_share"] == (1.0 if m == "occlusion" else 0.0)
        assert by_method["gradcam"]["regions"]["eyes"] == {"count": 4, "share": 1.0}
        assert by_method["saliency"]["regions"]["hair_background"] == {"count": 3, "share": 0.75}
        whole = np.array([[PLAN[r][m][i] for m in QUICK for i in (0, 1)] for r in ("alice", "bob")], dtype=float)
        import krippendorff

        assert data["alpha"]["value"] == pytest.approx(krippendorff.alpha(
            reliability_data=whole, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5]))
        assert (data["alpha"]["n_raters"], data["alpha"]["n_items"]) == (2, 6)

        # The CSV round-trips: parse it back and compare with the rows in the database.
        exported = client.get(f"/api/v1/ratings.csv?study_id={study['id']}", headers=admin.headers)
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 12
        for row in rows:
            db = db_rows[int(row["rating_id"])]
            assert row["study"] == study["id"] and row["rater"] == db.rater.username
            assert row["case"] == db.case_id and row["explanation"] == db.explanation_id
            assert row["method"] == db.method and row["target"] == db.target_id
            assert row["blinded"] == "1" and row["blinded_label"] == db.blinded_label
            assert int(row["score"]) == db.score
            assert (row["regions"].split(";") if row["regions"] else []) == db.regions
            assert row["context"] == ("1" if db.context else "0")
            assert rating_service.csv_uncell(row["comment"]) == (db.comment or "")
            assert row["time"] == db.created_at.isoformat(timespec="microseconds")
        edited_row = next(r for r in rows if int(r["rating_id"]) == edited["id"])
        assert edited_row["comment"] == "'=SUM(A1)"  # no formula reaches a spreadsheet
        # The export's own statistics agree with the summary (what the browser test checks on the page).
        points = [stats.RatingPoint(r["rater"], r["explanation"], r["case"], r["method"], int(r["score"]),
                                    tuple(filter(None, r["regions"].split(";"))), r["context"] == "1") for r in rows]
        again = stats.summarise(points, methods=QUICK, regions=REGION_IDS).to_dict()
        assert again["alpha"] == data["alpha"]
        assert [m["mean"] for m in again["methods"]] == [by_method[m]["mean"] for m in QUICK]
        from app.cases.history import case_history
        from app.cases.models import Case

        with app.state.sessions() as session:
            entries = [e for e in case_history(session, case=session.get(Case, cases[0]["id"])) if e.kind == "rating"]
            assert sorted((e.user, e.title) for e in entries) == [
                ("alice", "Rated 3 maps in a rating study"), ("bob", "Rated 3 maps in a rating study")]
        history = client.get(f"/api/v1/ratings.csv?study_id={study['id']}&history=1", headers=admin.headers)
        assert len(list(csv.DictReader(io.StringIO(history.text)))) == 13
        with app.state.sessions() as session:
            exports = session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
            assert [e.detail["history"] for e in exports] == [False, True]
            assert all(e.detail["study"] == study["id"] for e in exports)
    finally:
        PLAN["alice"]["saliency"][0] = 4


def test_orders_are_stored_per_rater_and_case_and_reproducible(
    app, client: TestClient, admin: Account, alice: Account, bob: Account, faces: list[bytes]
) -> None:
    study, cases = make_study(client, admin, faces, [alice, bob])
    with app.state.sessions() as session:
        orders = session.scalars(select(StudyItemOrder).where(StudyItemOrder.study_id == study["id"])).all()
        assert len(orders) == 4  # 2 raters × 2 cases, drawn at creation
        seed = session.get(RatingStudy, study["id"]).seed
        for order in orders:
            assert sorted(order.methods) == sorted(QUICK)
            assert order.methods == rating_service.draw_order(QUICK, seed=seed, rater_id=order.rater_id,
                                                              case_id=order.case_id)
        stored = {(o.rater_id, o.case_id): o.methods for o in orders}
    first = rater_maps(client, alice, study)
    assert rater_maps(client, alice, study) == first  # the same order on every visit
    from app.explanations.views import map_png

    sizes: set[int] = set()
    with app.state.sessions() as session:
        alice_id = session.scalar(select(User.id).where(User.username == "alice"))
        rows = {(row.case_id, row.method): row for row in session.scalars(select(Explanation))}
        store = app.state.photo_store
        for position, case in enumerate(cases, start=1):
            labels = [item["label"] for pos, item in first if pos == position]
            assert labels == ["A", "B", "C"]
            # The image served under each label is the map of the method at that place in the stored order.
            case_row = session.get(Case, case["id"])
            for label, method in zip(labels, stored[(alice_id, case["id"])], strict=True):
                shown = client.get(f"/api/v1/studies/{study['id']}/cases/{position}/maps/{label}/heat.png",
                                   headers=alice.headers)
                assert shown.status_code == 200 and shown.headers["cache-control"] == "private, no-store"
                expected = map_png(store, case_row, rows[(case["id"], method)], view="heat", space="crop",
                                   opacity=1.0)
                # Same pixels; stored uncompressed, so the byte size cannot tell the method family (issue 13).
                assert np.array_equal(_pixels(shown.content), _pixels(expected)), (position, label, method)
                sizes.add(len(shown.content))
    assert len(sizes) == 1  # every blinded map of every method has the same size
    # Orders differ between raters or cases (3! = 6 permutations; with this seed not all four agree).
    assert len({tuple(methods) for methods in stored.values()}) > 1 or len(stored) < 2


def test_access_rules(app, client: TestClient, admin: Account, alice: Account, bob: Account,
                      faces: list[bytes]) -> None:
    # Bob owns the cases; only alice rates. Bob must not even learn that the study exists.
    study, cases = make_study(client, admin, faces[:1], [alice], owner=bob)
    sid = study["id"]
    item = rater_maps(client, alice, study)[0][1]
    eid = truth(app, sid, alice)[(1, item["label"])].id
    map_url = f"/api/v1/studies/{sid}/cases/1/maps/{item['label']}"
    for path in (f"/api/v1/studies/{sid}", f"/api/v1/studies/{sid}/cases/1", f"/studies/{sid}",
                 f"/studies/{sid}/cases/1", f"/studies/{sid}/rate", f"/studies/{sid}/results",
                 f"{map_url}/heat.png", f"/api/v1/studies/{sid}/cases/1/aligned.png",
                 f"/studies/{sid}/cases/1/maps/{item['label']}",
                 f"/api/v1/ratings/summary?study_id={sid}", f"/api/v1/ratings.csv?study_id={sid}"):
        assert client.get(path, headers=bob.headers, follow_redirects=False).status_code == 404, path
        assert client.get(path, follow_redirects=False).status_code in (401, 303), path
    assert client.get("/api/v1/studies", headers=bob.headers).json() == []
    assert [s["id"] for s in client.get("/api/v1/studies", headers=alice.headers).json()] == [sid]
    for url in (f"/api/v1/explanations/{eid}/ratings", item["rate_url"]):
        body = {"score": 3, "study_id": sid} if "explanations" in url else {"score": 3}
        assert client.post(url, json=body, headers=bob.headers).status_code == 404, url
    # Only admins create studies.
    denied = client.post("/api/v1/studies", headers=alice.headers, json={
        "name": "x", "cases": [cases[0]["id"]], "methods": ["saliency"], "raters": ["alice"]})
    assert denied.status_code == 403

    # Alice rates although the case is not hers: through the study, and only through it.
    assert client.get(f"{map_url}/heat.png", headers=alice.headers).status_code == 200
    assert client.get(f"/api/v1/studies/{sid}/cases/1/aligned.png", headers=alice.headers).status_code == 200
    assert client.get(f"/api/v1/explanations/{eid}/map.png", headers=alice.headers).status_code == 404
    assert client.post(f"/api/v1/explanations/{eid}/ratings", json={"score": 3},
                       headers=alice.headers).status_code == 404  # ad-hoc needs the case
    # A blinded study is rated by label only: even knowing the explanation id, the contract endpoint refuses
    # (its answer would tell which label the id is).
    by_id = client.post(f"/api/v1/explanations/{eid}/ratings", json={"score": 3, "study_id": sid},
                        headers=alice.headers)
    assert by_id.status_code == 422 and by_id.json()["code"] == "blinded_study"
    assert eid not in by_id.text and "blinded_label" not in by_id.text
    rate_in(client, alice, item, score=3)
    # Labels and positions outside the study are not found; malformed or huge ones are refused before any query.
    for url in (f"/api/v1/studies/{sid}/cases/1/maps/Z/ratings", f"/api/v1/studies/{sid}/cases/2/maps/A/ratings"):
        assert client.post(url, json={"score": 3}, headers=alice.headers).status_code == 404, url
    for bad in ("0/maps/A", "-1/maps/A", f"{10**30}/maps/A", "100001/maps/A", "1/maps/a", "1/maps/AAA", "x/maps/A"):
        response = client.post(f"/api/v1/studies/{sid}/cases/{bad}/ratings", json={"score": 3},
                               headers=alice.headers)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request", (bad, response.text)
    for path in (f"/api/v1/studies/{sid}/cases/{10**30}", f"/api/v1/studies/{sid}/cases/{10**30}/aligned.png",
                 f"/api/v1/studies/{sid}/cases/{10**30}/photo", f"/api/v1/studies/{sid}/cases/0",
                 f"/api/v1/studies/{sid}/cases/{10**30}/maps/A/heat.png", f"/studies/{sid}/cases/{10**30}",
                 f"/studies/{sid}/cases/{10**30}/maps/A", f"/studies/{sid}/cases/1/maps/%3Cb%3E"):
        response = client.get(path, headers=alice.headers)
        assert response.status_code == 422, (path, response.status_code)
    assert client.get(f"/api/v1/studies/{sid}/cases/100000", headers=alice.headers).status_code == 404
    # An admin who is not a rater manages the study but does not rate in it.
    assert client.post(f"/api/v1/explanations/{eid}/ratings", json={"score": 3, "study_id": sid},
                       headers=admin.headers).status_code == 403
    assert client.post(item["rate_url"], json={"score": 3}, headers=admin.headers).status_code == 403
    assert client.get(f"/studies/{sid}/cases/1", headers=admin.headers).status_code == 403
    assert client.get(f"{map_url}/heat.png", headers=admin.headers).status_code == 403
    # Results name the methods: raters see them only after the study is closed.
    assert client.get(f"/api/v1/ratings/summary?study_id={sid}", headers=alice.headers).status_code == 403
    assert client.get(f"/studies/{sid}/results", headers=alice.headers).status_code == 403
    assert client.get(f"/api/v1/ratings/summary?study_id={sid}", headers=admin.headers).status_code == 200
    token = login(client, admin)
    assert client.post(f"/studies/{sid}/close", headers=browser_headers(token)).status_code == 204
    client.cookies.clear()
    assert client.get(f"/api/v1/ratings/summary?study_id={sid}", headers=alice.headers).status_code == 200
    assert client.get(f"/studies/{sid}/results", headers=alice.headers).status_code == 200
    closed = client.post(item["rate_url"], json={"score": 4}, headers=alice.headers)
    assert closed.status_code == 409 and closed.json()["code"] == "study_closed"
    # A study body takes no study id or explanation id: the URL names the map.
    for extra in ({"study_id": sid}, {"explanation_id": eid}, {"method": "saliency"}):
        assert client.post(item["rate_url"], json={"score": 4, **extra}, headers=alice.headers).status_code == 422

    # In an unblinded study the contract endpoint works with the explanation id, for maps of the study only.
    open_study, _ = make_study(client, admin, faces[:1], [alice], blinded=False, owner=bob)
    open_item = rater_maps(client, alice, open_study)[0][1]
    assert open_item["explanation_id"] == truth(app, open_study["id"], alice)[(1, open_item["label"])].id
    out = rate(client, alice, open_item["explanation_id"], score=2, study_id=open_study["id"])
    assert out["blinded"] is False and out["blinded_label"] == open_item["label"]
    other = client.post(f"/api/v1/cases/{cases[0]['id']}/explanations", json={"methods": ["input_x_gradient"]},
                        headers=bob.headers).json()
    wait_for(client, bob, other["job_id"])
    outside = other["explanations"][0]["id"]
    assert client.post(f"/api/v1/explanations/{outside}/ratings", json={"score": 2, "study_id": open_study["id"]},
                       headers=alice.headers).status_code == 404


BAD_RATINGS = [
    ({"score": 0}, "invalid_request"),
    ({"score": 6}, "invalid_request"),
    ({"score": "3"}, "invalid_request"),
    ({"score": True}, "invalid_request"),
    ({"score": 2.5}, "invalid_request"),
    ({}, "invalid_request"),
    ({"score": 3, "regions": ["eyes", "tail"]}, "unknown_region"),
    ({"score": 3, "regions": "eyes"}, "invalid_request"),
    ({"score": 3, "context": "maybe"}, "invalid_request"),
    ({"score": 3, "comment": "x" * 2001}, "invalid_request"),
    ({"score": 3, "method": "saliency"}, "invalid_request"),
]


def test_bad_ratings_are_refused_and_store_nothing(app, client: TestClient, alice: Account,
                                                   faces: list[bytes]) -> None:
    case = upload(client, alice, faces[0]).json()
    made = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                       headers=alice.headers).json()
    wait_for(client, alice, made["job_id"])
    for body, code in BAD_RATINGS:
        response = client.post(f"/api/v1/explanations/{made['explanations'][0]['id']}/ratings", json=body,
                               headers=alice.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == code and response.json()["detail"], body
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Rating)) == 0


def test_bad_studies_are_refused(app, client: TestClient, admin: Account, alice: Account,
                                 faces: list[bytes]) -> None:
    case = upload(client, admin, faces[0]).json()
    base = {"name": "S", "cases": [case["id"]], "methods": ["saliency"], "raters": ["alice"]}
    for change, code in [({"name": "  "}, "invalid_name"), ({"cases": []}, "no_cases"),
                         ({"cases": ["f" * 32]}, "unknown_case"), ({"methods": []}, "no_methods"),
                         ({"methods": ["lime"]}, "unknown_method"), ({"raters": ["nobody"]}, "unknown_rater"),
                         ({"raters": []}, "no_raters"), ({"target_rule": "top5"}, "invalid_target_rule"),
                         ({"target_rule": "confirmed"}, "no_confirmed_diagnosis")]:
        response = client.post("/api/v1/studies", json={**base, **change}, headers=admin.headers)
        assert response.status_code == 422, (change, response.text)
        assert response.json()["code"] == code, (change, response.json())
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RatingStudy)) == 0
        assert session.scalar(select(func.count()).select_from(Explanation)) == 0


def test_confirmed_diagnosis_is_the_target(app, client: TestClient, admin: Account, alice: Account,
                                           faces: list[bytes]) -> None:
    from app.cases.models import Case
    from app.diagnoses import service as diagnoses

    case = upload(client, admin, faces[0]).json()
    chosen = case["predictions"][2]["syndrome_id"]  # not the top-1: the rule must matter
    model = app.state.models.get()
    with app.state.sessions() as session:
        row = session.get(Case, case["id"])
        admin_user = row.owner
        diagnoses.confirm_label(session, case=row, user=admin_user, labels=model.labels,
                                model_version=model.version, syndrome_id=chosen)
        session.commit()
    response = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "Confirmed", "cases": [case["id"]], "methods": ["saliency"], "target_rule": "confirmed",
        "raters": ["alice"]})
    assert response.status_code == 201, response.text
    view = client.get(f"/api/v1/studies/{response.json()['id']}/cases/1", headers=alice.headers).json()
    assert view["target"] == next(p["name"] for p in case["predictions"] if p["syndrome_id"] == chosen)
    with app.state.sessions() as session:
        free = session.get(Case, case["id"])
        diagnoses.confirm_free_text(session, case=free, user=free.owner, name="Kabuki syndrome", omim="147920")
        session.commit()
    refused = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "Free text", "cases": [case["id"]], "methods": ["saliency"], "target_rule": "confirmed",
        "raters": ["alice"]})
    assert refused.status_code == 422 and refused.json()["code"] == "diagnosis_not_a_label"
    assert "Kabuki" in refused.json()["detail"]


FORBIDDEN_WORDS = sorted({*METHODS, *(info.label for info in METHODS.values())}, key=len, reverse=True)


def assert_blind(text: str, where: str) -> None:
    lowered = text.lower()
    for word in FORBIDDEN_WORDS:
        assert word.lower() not in lowered, f"{where} names the method {word!r}"
    # Words that the labels are made of, in the shapes that could slip into ids or urls.
    for word in ("saliency", "gradcam", "grad-cam", "grad_cam", "occlusion", "smoothgrad", "deeplift",
                 "backprop", "deconvolution", "integrated", "input_x"):
        assert word not in lowered, f"{where} contains {word!r}"


def assert_no_ids(text: str, ids: set[str], where: str) -> None:
    leaked = sorted(i for i in ids if i in text)
    assert not leaked, f"{where} carries explanation id(s) {leaked}"


def test_blinded_pages_and_partials_name_no_method(app, client: TestClient, admin: Account, alice: Account,
                                                   bob: Account, faces: list[bytes]) -> None:
    all_methods = list(METHODS)
    study, _ = make_study(client, admin, faces, [alice, bob], methods=all_methods)
    sid = study["id"]
    # Every explanation id of the study's cases: the same rows (with their methods) are on the case page, in
    # other studies and in exports, so an id on a blinded page would name the method.
    ids = study_explanation_ids(app, sid)
    assert len(ids) == 2 * len(all_methods)
    maps = rater_maps(client, alice, study)
    assert len(maps) == 2 * len(all_methods) and [i["label"] for _, i in maps][:3] == ["A", "B", "C"]
    first = rate_in(client, alice, maps[0][1], score=4, regions=["eyes"], comment="fine")
    assert_no_ids(str(first), ids, "rating response")
    pages = ["/studies", f"/studies/{sid}", f"/studies/{sid}/cases/1", f"/studies/{sid}/cases/2"]
    pages += [f"/studies/{sid}/cases/{pos}/maps/{item['label']}" for pos, item in maps]
    for path in pages:
        response = client.get(path, headers=alice.headers)
        assert response.status_code == 200, path
        assert_blind(response.text, path)
        assert_no_ids(response.text, ids, path)
    resume = client.get(f"/studies/{sid}/rate", headers=alice.headers, follow_redirects=False)
    assert resume.status_code == 303 and resume.headers["location"] == f"/studies/{sid}/cases/1"
    assert_blind(resume.headers["location"], "resume redirect")
    for path in [f"/api/v1/studies/{sid}/cases/{position}" for position in (1, 2)] + [
            f"/api/v1/studies/{sid}", "/api/v1/studies"]:
        data = client.get(path, headers=alice.headers)
        assert data.status_code == 200, path
        assert_blind(data.text, path)
        assert_no_ids(data.text, ids, path)
        assert_no_ids(str(dict(data.headers)), ids, f"{path} headers")
    saved = client.post(maps[1][1]["rate_url"], json={"score": 2}, headers=alice.headers)
    assert saved.status_code == 201
    assert_blind(saved.text, "rating response")
    assert_no_ids(saved.text, ids, "rating response")
    # Errors a rater can provoke name nothing either.
    for response in (client.post(f"/api/v1/studies/{sid}/cases/1/maps/Z/ratings", json={"score": 2},
                                 headers=alice.headers),
                     client.post(f"/api/v1/explanations/{next(iter(ids))}/ratings",
                                 json={"score": 2, "study_id": sid}, headers=alice.headers)):
        assert response.status_code in (404, 422)
        assert_blind(response.text, "error")
        assert_no_ids(response.text, ids, "error")
    # The page shows what the rater needs: progress, labels, regions with HPO terms, the hotkey help.
    page = client.get(f"/studies/{sid}/cases/1", headers=alice.headers).text
    total = 2 * len(all_methods)
    assert re.search(r"case <span id=\"case-position\">1</span> of <span id=\"case-count\">2</span> · "
                     rf"<span id=\"maps-rated\">2</span>/<span id=\"maps-total\">{total}</span> maps rated", page)
    assert page.count('class="rate-card') == len(all_methods)
    assert "HP:0000316" in page and "Hypertelorism" in page
    assert '/static/js/rating.js' in page and 'hx-ext="rating-json"' in page
    assert f'hx-post="/api/v1/studies/{sid}/cases/1/maps/A/ratings"' in page

    # The same study unblinded names the methods (so the checks above can fail) and records blinded=False.
    open_study, _ = make_study(client, admin, faces[:1], [alice], blinded=False)
    page = client.get(f"/studies/{open_study['id']}/cases/1", headers=alice.headers).text
    assert METHODS["gradcam"].label in page
    item = rater_maps(client, alice, open_study)[0][1]
    assert item["explanation_id"] in study_explanation_ids(app, open_study["id"])
    out = rate_in(client, alice, item, score=5)
    assert out["blinded"] is False and out["method"] in QUICK and out["blinded_label"] == item["label"]
    assert out["explanation_id"] == item["explanation_id"]


def test_adhoc_ratings_from_the_case_page(app, client: TestClient, alice: Account, bob: Account, admin: Account,
                                          faces: list[bytes]) -> None:
    case = upload(client, alice, faces[0]).json()
    made = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["gradcam"]},
                       headers=alice.headers).json()
    wait_for(client, alice, made["job_id"])
    eid = made["explanations"][0]["id"]
    token = login(client, alice)
    form = client.get(f"/explanations/{eid}/rating")
    assert form.status_code == 200 and 'name="score"' in form.text and "HP:0000316" in form.text
    saved = client.post(f"/explanations/{eid}/rating", headers=browser_headers(token),
                        data={"score": "4", "regions": ["eyes", "mouth"], "context": "yes", "comment": "ok"})
    assert saved.status_code == 200 and "Saved." in saved.text
    assert 'value="4" required checked' in saved.text
    refused = client.post(f"/explanations/{eid}/rating", headers=browser_headers(token),
                          data={"regions": ["eyes"]})
    assert refused.status_code == 422 and "Choose a score" in refused.text
    bad_region = client.post(f"/explanations/{eid}/rating", headers=browser_headers(token),
                             data={"score": "2", "regions": ["elbow"]})
    assert bad_region.status_code == 422 and "Unknown region" in bad_region.text
    client.cookies.clear()
    api = rate(client, alice, eid, score=2, regions=[], context=False)
    assert api["study_id"] is None and api["blinded"] is False and api["method"] == "gradcam"
    with app.state.sessions() as session:
        rows = session.scalars(select(Rating).order_by(Rating.id)).all()
        assert [(r.score, r.regions, r.context, r.study_id, r.blinded) for r in rows] == [
            (4, ["eyes", "mouth"], True, None, False), (2, [], False, None, False)]
    # The ad-hoc summary counts the latest rating; others' ad-hoc ratings are not shown to clinicians.
    summary = client.get("/api/v1/ratings/summary", headers=alice.headers).json()
    assert summary["scope"] == "adhoc" and summary["n_ratings"] == 1 and summary["methods"][0]["mean"] == 2.0
    assert client.get("/api/v1/ratings/summary", headers=bob.headers).json()["n_ratings"] == 0
    assert client.get("/api/v1/ratings/summary", headers=admin.headers).json()["n_ratings"] == 1
    assert client.post(f"/api/v1/explanations/{eid}/ratings", json={"score": 3},
                       headers=bob.headers).status_code == 404
    assert client.get(f"/explanations/{eid}/rating", headers=bob.headers).status_code == 404
    adhoc_csv = client.get("/api/v1/ratings.csv", headers=alice.headers)
    assert len(list(csv.DictReader(io.StringIO(adhoc_csv.text)))) == 1

    # The partial the explanation card includes opens the form above for a finished map.
    from app.explanations.views import card
    from app.web.templating import templates

    with app.state.sessions() as session:
        row = session.get(Explanation, eid)
        html = templates.get_template("ratings/_adhoc.html").render(m=card(row))
        assert f'hx-get="/explanations/{eid}/rating"' in html and "Rate this map" in html
        row.state = "running"
        assert "Rate this map" not in templates.get_template("ratings/_adhoc.html").render(m=card(row))
        session.rollback()
        # The case history lists the ad-hoc ratings one by one.
        from app.cases.history import case_history
        from app.cases.models import Case

        entries = [e for e in case_history(session, case=session.get(Case, case["id"])) if e.kind == "rating"]
        assert [e.title for e in entries] == [f"Grad-CAM map rated {s}/5 (target {row.target_id})" for s in (2, 4)]
        assert entries[1].detail == "Eyes / periorbital, Mouth · relies on non-facial context · ok"


def test_study_pages_for_admins(app, client: TestClient, admin: Account, alice: Account, faces: list[bytes]) -> None:
    upload(client, admin, faces[0])
    token = login(client, admin)
    page = client.get("/studies/new")
    assert page.status_code == 200 and 'name="cases"' in page.text and METHODS["occlusion"].label in page.text
    case_id = re.search(r'name="cases" value="([0-9a-f]{32})"', page.text).group(1)
    missing = client.post("/studies", headers=browser_headers(token),
                          data={"name": "Form study", "cases": [case_id], "raters": ["alice"], "blinded": "1"})
    assert missing.status_code == 422 and "Choose at least one method" in missing.text
    created = client.post("/studies", headers=browser_headers(token),
                          data={"name": "Form study", "cases": [case_id], "methods": ["saliency", "gradcam"],
                                "target_rule": "top1", "raters": ["alice"], "blinded": "1"})
    assert created.status_code == 204, created.text
    sid = created.headers["HX-Redirect"].rsplit("/", 1)[1]
    overview = client.get(f"/studies/{sid}")
    assert "Form study" in overview.text and "Grad-CAM" in overview.text and "alice" in overview.text
    assert client.get("/studies").text.count(f'href="/studies/{sid}"') == 1
    with app.state.sessions() as session:
        study = session.get(RatingStudy, sid)
        assert study.blinded and study.target_rule == "top1"
    results = client.get(f"/studies/{sid}/results")
    assert results.status_code == 200 and "Krippendorff" in results.text
    assert client.get("/studies/new", headers=alice.headers).status_code == 403


def test_navigation_follows_the_remaining_cases_and_case_in_study(
    app, client: TestClient, admin: Account, alice: Account, faces: list[bytes]
) -> None:
    three = [*faces, generate_one(seed=4343, class_id="syn_c", index=0, severity=1.0).jpeg]
    study, cases = make_study(client, admin, three, [alice], methods=["saliency"])
    sid = study["id"]
    outside = upload(client, admin, faces[0]).json()
    refused = client.delete(f"/api/v1/cases/{cases[1]['id']}", headers=admin.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "case_in_study"
    assert client.get(f"/api/v1/cases/{cases[1]['id']}", headers=admin.headers).status_code == 200
    with app.state.sessions() as session:
        assert all(rating_service.case_in_study(session, c["id"]) for c in cases)
        assert not rating_service.case_in_study(session, outside["id"])
        assert not rating_service.case_in_study(session, "f" * 32)
        # The middle case disappears (the cases domain refuses this through the API; the database cascade
        # is what would happen underneath): position 2 is now a gap.
        session.execute(delete(Case).where(Case.id == cases[1]["id"]))
        session.commit()
        assert not rating_service.case_in_study(session, cases[1]["id"])
    first = client.get(f"/studies/{sid}/cases/1", headers=alice.headers).text
    assert re.search(r'case <span id="case-position">1</span> of <span id="case-count">2</span>', first)
    assert f'href="/studies/{sid}/cases/3"' in first and f"/studies/{sid}/cases/2" not in first
    last = client.get(f"/studies/{sid}/cases/3", headers=alice.headers).text
    assert re.search(r'case <span id="case-position">2</span> of <span id="case-count">2</span>', last)
    assert f'id="prev-case" rel="prev" href="/studies/{sid}/cases/1"' in last
    assert f'id="next-case" rel="next" href="/studies/{sid}"' in last and "finish" in last
    assert "/maps/A/ratings" in last
    assert client.get(f"/studies/{sid}/cases/2", headers=alice.headers).status_code == 404
    view = client.get(f"/api/v1/studies/{sid}/cases/3", headers=alice.headers).json()
    assert (view["position"], view["index"], view["cases"], view["previous"], view["next"]) == (3, 2, 2, 1, None)
    assert view["progress"] == {"rated": 0, "total": 2, "pending": 0, "complete": False}
    rate_in(client, alice, client.get(f"/api/v1/studies/{sid}/cases/1", headers=alice.headers).json()["maps"][0],
            score=3)
    resume = client.get(f"/studies/{sid}/rate", headers=alice.headers, follow_redirects=False)
    assert resume.headers["location"] == f"/studies/{sid}/cases/3"
    overview = client.get(f"/studies/{sid}", headers=alice.headers).text
    assert "continues at case 2 of 2" in overview and "1/2 maps rated" in overview
    saved = rate_in(client, alice, view["maps"][0], score=4)
    assert saved["progress"] == {"rated": 2, "total": 2, "pending": 0, "complete": True, "case_rated": 1,
                                 "case_total": 1}


def test_admin_is_warned_when_a_rater_can_see_the_maps_elsewhere(
    app, client: TestClient, admin: Account, alice: Account, bob: Account, faces: list[bytes]
) -> None:
    # Bob owns the case: on his case page the same maps carry their method names, so he may not rate it
    # blind (refused, tests/test_hardening3.py); an admin among the raters is warned about instead.
    study, _ = make_study(client, admin, faces[:1], [alice, bob], methods=["saliency"], owner=bob, blinded=False)
    with_admin = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "Bob rates", "cases": study["case_ids"], "methods": ["saliency"],
        "raters": [admin.username, bob.username]})
    assert with_admin.status_code == 422 and with_admin.json()["code"] == "rater_owns_case"
    study = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "Admin rates", "cases": study["case_ids"], "methods": ["saliency"],
        "raters": [admin.username, alice.username]}).json()
    sid = study["id"]
    assert len(study["warnings"]) == 1 and study["warnings"][0].startswith(f"{admin.username} is an admin")
    page = client.get(f"/studies/{sid}", headers=admin.headers).text
    assert 'id="blinding-warnings"' in page and "is an admin" in page
    for rater in (alice, bob):  # raters do not see the admin's warnings
        assert "blinding-warnings" not in client.get(f"/studies/{sid}", headers=rater.headers).text
        assert "warnings" not in client.get(f"/api/v1/studies/{sid}", headers=rater.headers).json()
    # An admin among the raters sees every case page.
    created = client.post("/api/v1/studies", headers=admin.headers, json={
        "name": "With admin", "cases": study["case_ids"], "methods": ["saliency"], "raters": [admin.username, "alice"]})
    assert created.status_code == 201, created.text
    assert [w.split(" ")[:4] for w in created.json()["warnings"]] == [[admin.username, "is", "an", "admin:"]]
    # Nobody to warn about; and an unblinded study hides nothing.
    clean, _ = make_study(client, admin, faces[:1], [alice], methods=["saliency"])
    assert clean["warnings"] == []
    assert 'id="blinding-warnings"' not in client.get(f"/studies/{clean['id']}", headers=admin.headers).text
    opened, _ = make_study(client, admin, faces[:1], [bob], methods=["saliency"], owner=bob, blinded=False)
    assert opened["warnings"] == []


def test_maps_of_another_model_version_are_reported_not_silently_skipped(
    app, client: TestClient, admin: Account, alice: Account, faces: list[bytes]
) -> None:
    study, _ = make_study(client, admin, faces[:1], [alice], methods=["saliency", "gradcam"])
    sid = study["id"]
    truth_map = truth(app, sid, alice)
    old_label = next(label for (_, label), row in truth_map.items() if row.method == "gradcam")
    with app.state.sessions() as session:
        # A model upgrade later: the gradcam map was made by a version that is no longer served, and failed.
        row = session.scalar(select(Explanation).join(StudyMap, StudyMap.explanation_id == Explanation.id)
                             .where(StudyMap.study_id == sid, Explanation.method == "gradcam"))
        row.state, row.error, row.model_version = "failed", "worker stopped", "0.0-old"
        session.commit()
    info = client.get(f"/api/v1/studies/{sid}", headers=admin.headers).json()
    assert info["maps"] == {"queued": 0, "running": 0, "done": 1, "failed": 0, "unavailable": 1}
    assert info["raters"][0]["total"] == 1  # only the map that can be rated counts
    assert [(p["method"], p["recomputable"], p["model"].endswith("@0.0-old")) for p in info["problems"]] == [
        ("gradcam", False, True)]
    # Retrying cannot help: 409, naming what cannot be recomputed and why; nothing changes.
    refused = client.post(f"/api/v1/studies/{sid}/retry", headers=admin.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "maps_unavailable"
    detail = refused.json()["detail"]
    assert "cannot be recomputed" in detail and "Grad-CAM" in detail and "0.0-old" in detail
    token = login(client, admin)
    page = client.post(f"/studies/{sid}/retry", headers=browser_headers(token))
    assert page.status_code == 409 and 'id="retry-error"' in page.text and "Grad-CAM" in page.text
    overview = client.get(f"/studies/{sid}").text
    assert 'id="problem-maps"' in overview and "cannot be recomputed" in overview
    client.cookies.clear()
    # The rater rates what there is; the study completes without the unavailable map.
    shown = client.get(f"/api/v1/studies/{sid}/cases/1", headers=alice.headers).json()
    by_label = {m["label"]: m for m in shown["maps"]}
    assert by_label[old_label]["status"] == "failed"
    good = next(m for label, m in by_label.items() if label != old_label)
    bad = client.post(by_label[old_label]["rate_url"], json={"score": 3}, headers=alice.headers)
    assert bad.status_code == 409 and bad.json()["code"] == "not_ready"
    out = rate_in(client, alice, good, score=4)
    assert out["progress"]["complete"] is True and out["progress"]["total"] == 1
    rater_page = client.get(f"/studies/{sid}/cases/1", headers=alice.headers).text
    assert_blind(rater_page, "rating page with a failed map")
    admin_page = client.get(f"/studies/{sid}", headers=admin.headers).text
    assert "Every rater has rated every map." in admin_page
    assert client.get(f"/studies/{sid}/results", headers=admin.headers).status_code == 200

    # A failed map of the served model is asked again; the unavailable one is reported with it.
    with app.state.sessions() as session:
        row = session.scalar(select(Explanation).join(StudyMap, StudyMap.explanation_id == Explanation.id)
                             .where(StudyMap.study_id == sid, Explanation.method == "saliency"))
        row.state, row.error = "failed", "out of memory"
        session.commit()
    retried = client.post(f"/api/v1/studies/{sid}/retry", headers=admin.headers)
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert body["asked"] == 1 and body["unavailable"] == 1 and len(body["jobs"]) == 1
    assert wait_for(client, admin, body["jobs"][0])["state"] == "done"
    info = client.get(f"/api/v1/studies/{sid}", headers=admin.headers).json()
    assert info["maps"]["done"] == 1 and info["maps"]["unavailable"] == 1 and info["jobs"] == []


def test_map_states_are_counted_without_loading_the_maps(app, client: TestClient, admin: Account, alice: Account,
                                                         faces: list[bytes]) -> None:
    from sqlalchemy import event

    study, _ = make_study(client, admin, faces, [alice])
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if threading.current_thread() is this_thread:  # not the inline runner's lane threads looking for work
            statements.append(statement)

    this_thread = threading.current_thread()

    with app.state.sessions() as session:
        event.listen(app.state.engine, "before_cursor_execute", count)
        try:
            states = rating_service.map_states(session, study_id=study["id"])
        finally:
            event.remove(app.state.engine, "before_cursor_execute", count)
    assert states.to_dict() == {"queued": 0, "running": 0, "done": 6, "failed": 0, "unavailable": 0}
    assert len(statements) == 1 and "count(" in statements[0].lower() and "group by" in statements[0].lower()


def test_an_admin_deletes_a_study_and_then_its_cases_can_be_erased(
    app, client: TestClient, admin: Account, alice: Account, faces: list[bytes]
) -> None:
    study, cases = make_study(client, admin, faces[:1], [alice], methods=["saliency"])
    item = client.get(f"/api/v1/studies/{study['id']}/cases/1", headers=alice.headers).json()["maps"][0]
    rate_in(client, alice, item, score=4)
    assert client.delete(f"/api/v1/studies/{study['id']}", headers=alice.headers).status_code in (403, 404)
    assert client.delete(f"/api/v1/cases/{cases[0]['id']}", headers=admin.headers).status_code == 409
    assert client.delete(f"/api/v1/studies/{study['id']}", headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/studies/{study['id']}", headers=admin.headers).status_code == 404
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Rating)) == 0
    # The maps stay with the case; the case can now be erased.
    assert client.get(f"/api/v1/cases/{cases[0]['id']}/explanations", headers=admin.headers).json()
    assert client.delete(f"/api/v1/cases/{cases[0]['id']}", headers=admin.headers).status_code == 204
