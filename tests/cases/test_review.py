"""Reviewing past cases: search, filters and sorting of the case list (API and page), the top-1 syndrome kept
on the case, the case page's history, and a 10,000-case list that stays on indexes with a fixed number
of queries per request (query plans and query counts, never wall time)."""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases import service as case_service
from app.cases.history import HistoryEntry, case_history, register_history_source
from app.cases.models import Case
from app.cases.service import CaseFilters
from app.db import new_id
from app.diagnoses.models import MODEL_LABEL, Diagnosis
from app.explanations.models import Explanation
from app.jobs.models import Job
from app.predictions.models import PredictionRun
from tests.conftest import Account, login, upload

HAS_RATINGS = importlib.util.find_spec("app.ratings.models") is not None
BASE_TIME = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def case_row(owner_id: int, i: int, **values: Any) -> dict[str, Any]:
    """Column values of a case row with no files behind it (the list and JSON never read the files)."""
    row: dict[str, Any] = {
        "id": new_id(),
        "owner_id": owner_id,
        "pseudonym": f"P-{i:05d}",
        "created_at": BASE_TIME + timedelta(hours=i),
        "photo_path": "none/photo.jpg",
        "photo_media_type": "image/jpeg",
        "photo_sha256": f"{i:064x}",
        "photo_width": 512,
        "photo_height": 512,
        "source_format": "jpeg",
        "aligned_path": "none/aligned.png",
        "face_count": 1,
        "face_index": 0,
        "face_box": [180.0, 60.0, 100.0, 120.0],
        "landmarks": [[200.0, 100.0], [240.0, 100.0], [220.0, 120.0], [205.0, 145.0], [235.0, 145.0]],
        "detector_score": 0.9,
        "align_matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        "align_residual": 1.0,
    }
    row.update(values)
    return row


def user_ids(app) -> dict[str, int]:
    with app.state.sessions() as session:
        return {u.username: u.id for u in session.scalars(select(User))}


def add_rating(session: Session, *, case_id: str, rater_id: int, score: int = 4) -> None:
    """A rating of one map of the case (the ratings domain's table)."""
    from app.ratings.models import Rating

    explanation = Explanation(
        case_id=case_id, model_id="demo", model_version="1", method="saliency", target_id="syn_a",
        target_index=1, target_name="Synthetic syndrome A", params={}, params_key=new_id(), state="done",
    )
    session.add(explanation)
    session.flush()
    session.add(Rating(explanation_id=explanation.id, case_id=case_id, rater_id=rater_id, method="saliency",
                       target_id="syn_a", blinded=False, score=score))
    session.flush()


def listing(client: TestClient, account: Account, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/cases", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def pseudonyms(client: TestClient, account: Account, **params: Any) -> list[str]:
    return [c["pseudonym"] for c in listing(client, account, limit=200, **params)["items"]]


@pytest.fixture
def small_set(app, alice: Account, bob: Account, admin: Account) -> dict[str, str]:
    """Six cases of alice, two of bob, with known dates, rankings, diagnoses and one rating."""
    ids = user_ids(app)
    spec = [  # pseudonym, days after BASE_TIME, predicted (id, name), diagnosis (syndrome_id, omim, name)
        ("Anna", 0, ("syn_a", "Synthetic syndrome A"), ("syn_a", None, "Synthetic syndrome A")),
        ("Bert", 10, ("syn_b", "Synthetic syndrome B"), None),
        ("carl", 20, ("syn_a", "Synthetic syndrome A"), (None, "147920", "Kabuki syndrome 1")),
        ("Dora", 30, ("syn_c", "Synthetic syndrome C"), None),
        (None, 40, None, None),
        ("Emil_%", 50, ("syn_b", "Synthetic syndrome B"), None),
    ]
    rows = []
    for i, (pseudonym, days, predicted, diagnosis) in enumerate(spec):
        values: dict[str, Any] = {"pseudonym": pseudonym, "created_at": BASE_TIME + timedelta(days=days)}
        if predicted:
            values |= {"predicted_syndrome_id": predicted[0], "predicted_syndrome_name": predicted[1]}
        if diagnosis:
            values |= {"diagnosis_syndrome_id": diagnosis[0], "diagnosis_omim": diagnosis[1],
                       "diagnosis_name": diagnosis[2]}
        rows.append(case_row(ids["alice"], i, **values))
    rows.append(case_row(ids["bob"], 10, pseudonym="Bob-1", predicted_syndrome_id="syn_a",
                         predicted_syndrome_name="Synthetic syndrome A"))
    rows.append(case_row(ids["bob"], 11, pseudonym="Bob-2", created_at=BASE_TIME + timedelta(days=5)))
    with app.state.sessions() as session:
        session.execute(insert(Case), rows)
        by_name = {r["pseudonym"] or "(none)": r["id"] for r in rows}
        if HAS_RATINGS:
            add_rating(session, case_id=by_name["Dora"], rater_id=ids["bob"])
            add_rating(session, case_id=by_name["Dora"], rater_id=ids["alice"], score=2)
            add_rating(session, case_id=by_name["Bob-1"], rater_id=ids["alice"])
        session.commit()
    return by_name


def test_filters_and_sorting_through_the_api(
    client: TestClient, alice: Account, bob: Account, admin: Account, small_set: dict[str, str]
) -> None:
    everything = listing(client, alice)
    assert everything["total"] == 6 and set(everything) >= {"items", "total", "limit", "offset"}
    assert pseudonyms(client, alice) == ["Emil_%", None, "Dora", "carl", "Bert", "Anna"]  # newest first (default)
    assert pseudonyms(client, alice, sort="created", order="asc") == ["Anna", "Bert", "carl", "Dora", None, "Emil_%"]
    # Pseudonyms sort case-sensitively as the database compares them; cases without one come last either way.
    assert pseudonyms(client, alice, sort="pseudonym", order="asc")[-1] is None
    assert pseudonyms(client, alice, sort="pseudonym", order="desc")[-1] is None
    by_predicted = pseudonyms(client, alice, sort="predicted", order="asc")
    assert by_predicted == ["carl", "Anna", "Emil_%", "Bert", "Dora", None]  # name asc, then newest first
    assert pseudonyms(client, alice, sort="predicted", order="desc") == ["Dora", "Emil_%", "Bert", "carl", "Anna", None]

    # Search (kept): pseudonym substring, case-insensitive; id prefix; LIKE wildcards are literal.
    assert pseudonyms(client, alice, q="ANN") == ["Anna"]
    assert pseudonyms(client, alice, q=small_set["Dora"][:8]) == ["Dora"]
    assert pseudonyms(client, alice, q="_%") == ["Emil_%"]

    # Created date range: whole UTC days, both ends inclusive.
    assert pseudonyms(client, alice, created_from="2025-01-11", created_to="2025-01-31") == ["Dora", "carl", "Bert"]
    assert pseudonyms(client, alice, created_to="2025-01-01") == ["Anna"]
    assert pseudonyms(client, alice, created_from="2025-02-20") == ["Emil_%"]

    # Predicted syndrome = top-1 of the newest ranking.
    assert pseudonyms(client, alice, predicted="syn_a") == ["carl", "Anna"]
    assert pseudonyms(client, alice, predicted="syn_zzz") == []

    # Confirmed diagnosis: any / none / a model syndrome / an OMIM id (with or without prefix).
    assert pseudonyms(client, alice, diagnosis="any") == ["carl", "Anna"]
    assert len(pseudonyms(client, alice, diagnosis="none")) == 4
    assert pseudonyms(client, alice, diagnosis="syn_a") == ["Anna"]
    assert pseudonyms(client, alice, diagnosis="OMIM:147920") == ["carl"]
    assert pseudonyms(client, alice, diagnosis="147920") == ["carl"]

    # Rated: some map of the case has a rating.
    if HAS_RATINGS:
        assert pseudonyms(client, alice, rated="true") == ["Dora"]
        assert len(pseudonyms(client, alice, rated="false")) == 5
        assert pseudonyms(client, admin, rated="true") == ["Dora", "Bob-1"]
    else:  # without the ratings domain nothing is rated
        assert pseudonyms(client, alice, rated="true") == []
        assert len(pseudonyms(client, alice, rated="false")) == 6

    # Combined filters, paging and totals.
    page = listing(client, alice, predicted="syn_a", diagnosis="any", limit=1, offset=1)
    assert page["total"] == 2 and [c["pseudonym"] for c in page["items"]] == ["Anna"]

    # Owner: administrators narrow by username; a clinician only ever sees their own.
    assert len(pseudonyms(client, admin)) == 8
    assert pseudonyms(client, admin, owner="bob") == ["Bob-2", "Bob-1"]
    assert pseudonyms(client, admin, owner="bob", predicted="syn_a") == ["Bob-1"]
    assert pseudonyms(client, bob) == ["Bob-2", "Bob-1"]
    assert pseudonyms(client, bob, owner="alice") == []
    assert pseudonyms(client, admin, owner="nobody") == []


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"created_from": "2025-13-01"}, "created_from"),
        ({"created_to": "yesterday"}, "created_to"),
        ({"rated": "maybe"}, "rated"),
        ({"sort": "owner"}, "sort"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_filters_get_the_error_shape(
    client: TestClient, alice: Account, params: dict[str, str], fragment: str
) -> None:
    response = client.get("/api/v1/cases", params=params, headers=alice.headers)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request" and fragment in body["detail"]


def test_the_case_page_has_a_filter_form_kept_in_the_url(
    client: TestClient, alice: Account, admin: Account, small_set: dict[str, str]
) -> None:
    login(client, alice)
    page = client.get("/cases", params={"predicted": "syn_a", "sort": "pseudonym", "order": "asc"})
    assert page.status_code == 200
    html = page.text
    assert 'id="case-filters"' in html and 'hx-push-url="true"' in html
    assert re.search(r'<option value="syn_a" selected>', html)  # the form shows the filters of the URL
    assert 'name="owner"' not in html  # the owner filter is for administrators
    assert "Anna" in html and "carl" in html and "Bert" not in html
    # Free-text diagnoses among the visible cases are offered in the diagnosis filter.
    assert 'value="OMIM:147920"' in html

    # The rows partial for htmx, with the pager carrying the filters.
    partial = client.get("/cases", params={"diagnosis": "none", "page": 1},
                         headers={"HX-Request": "true", "HX-Target": "case-rows"})
    assert partial.status_code == 200
    assert partial.text.lstrip().startswith('<div id="case-rows">') and "<html" not in partial.text
    assert "Dora" in partial.text and "Anna" not in partial.text
    empty = client.get("/cases", params={"q": "nobody-like-this"}, headers={"HX-Target": "case-rows"})
    assert "No case matches" in empty.text

    admin_page = client.get("/cases", params={"owner": "bob"}, headers=admin.headers).text
    assert 'name="owner"' in admin_page and '<option value="bob" selected>' in admin_page
    assert "Bob-1" in admin_page and "Anna" not in admin_page


def test_pager_links_keep_the_filters(app, client: TestClient, alice: Account) -> None:
    ids = user_ids(app)
    rows = [case_row(ids["alice"], i, predicted_syndrome_id="syn_b", predicted_syndrome_name="B") for i in range(45)]
    with app.state.sessions() as session:
        session.execute(insert(Case), rows)
        session.commit()
    login(client, alice)
    html = client.get("/cases", params={"predicted": "syn_b", "order": "asc", "page": 2}).text
    assert "page 2 of 3" in html
    assert 'href="/cases?predicted=syn_b&amp;order=asc&amp;page=3"' in html
    assert 'href="/cases?predicted=syn_b&amp;order=asc&amp;page=1"' in html


def test_the_top1_syndrome_follows_the_newest_ranking(
    app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    case = upload(client, alice, astronaut_jpeg, pseudonym="ranked").json()
    top = case["predictions"][0]
    with app.state.sessions() as session:
        row = session.get(Case, case["id"])
        assert (row.predicted_syndrome_id, row.predicted_syndrome_name) == (top["syndrome_id"], top["name"])
    assert pseudonyms(client, alice, predicted=top["syndrome_id"]) == ["ranked"]

    # A ranking stored by any route (here: directly, as a worker would) moves the case's top-1.
    with app.state.sessions() as session:
        session.add(PredictionRun(case_id=case["id"], model_id="other", model_version="2", ranked_by="softmax",
                                  ranked=[{"rank": 2, "syndrome_id": "zz", "name": "Zed", "score": 0.1},
                                          {"rank": 1, "syndrome_id": "yy", "name": "Why", "score": 0.8}]))
        session.commit()
    assert pseudonyms(client, alice, predicted="yy") == ["ranked"]
    assert pseudonyms(client, alice, predicted=top["syndrome_id"]) == []
    # Re-ranking through the API restores the served model's top-1.
    assert client.post(f"/api/v1/cases/{case['id']}/predictions", headers=alice.headers).status_code == 201
    assert pseudonyms(client, alice, predicted=top["syndrome_id"]) == ["ranked"]


def test_case_page_history_merges_every_source_in_time_order(
    app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    case = upload(client, alice, astronaut_jpeg, pseudonym="story").json()
    case_id = case["id"]
    assert client.post(f"/api/v1/cases/{case_id}/predictions", headers=alice.headers).status_code == 201
    assert client.put(f"/api/v1/cases/{case_id}/diagnosis", json={"name": "Kabuki syndrome 1", "omim": "147920"},
                      headers=alice.headers).status_code == 200
    with app.state.sessions() as session:
        job = Job(kind="explain", case_id=case_id, state="done", progress=1.0)
        session.add(job)
        session.flush()
        session.add_all(
            Explanation(case_id=case_id, job_id=job.id, model_id="demo", model_version="1", method=m,
                        target_id="syn_a", target_index=1, target_name="Synthetic syndrome A", params={},
                        params_key=m, state="done" if m != "occlusion" else "failed")
            for m in ("saliency", "gradcam", "occlusion")
        )
        session.commit()
    for _ in range(3):
        client.get(f"/api/v1/cases/{case_id}", headers=alice.headers)

    with app.state.sessions() as session:
        entries = case_history(session, case=session.get(Case, case_id))
    kinds = [e.kind for e in entries]
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)  # newest first
    assert kinds.count("prediction") == 2 and "upload" in kinds and "diagnosis" in kinds
    explanation = next(e for e in entries if e.kind == "explanation")
    assert explanation.title == "Explained with 3 methods for target Synthetic syndrome A"
    assert explanation.detail == "gradcam, occlusion, saliency — 2 done, 1 failed"
    assert kinds.count("explanation") == 1  # the maps of one job are one entry
    titles = [e.title for e in entries]
    assert "Viewed 3 times" in titles  # repeated views by one person collapse
    assert not any(e.title == "Diagnosis recorded" for e in entries)  # the diagnosis source covers its audit

    login(client, alice)
    html = client.get(f"/cases/{case_id}").text
    assert 'id="history"' in html and "Diagnosis confirmed: Kabuki syndrome 1" in html
    assert "Explained with 3 methods" in html
    partial = client.get(f"/cases/{case_id}/history")
    # the inside of the card only: the page's #history stays in place and is refilled (no card nested in a card)
    assert partial.status_code == 200 and partial.text.lstrip().startswith("<h2>History</h2>")
    assert "<section" not in partial.text


def test_other_domains_can_add_history_entries(app, client: TestClient, alice: Account, astronaut_jpeg: bytes) -> None:
    case_id = upload(client, alice, astronaut_jpeg).json()["id"]

    def extra(session: Session, case: Case) -> Iterator[HistoryEntry]:
        yield HistoryEntry(at=datetime.now(UTC) + timedelta(days=1), kind="rating", title="Map A rated 4/5",
                           user="alice")

    from app.cases import history

    register_history_source(extra, covers=("upload",))
    try:
        register_history_source(extra, covers=("upload",))  # registering twice keeps one
        with app.state.sessions() as session:
            entries = case_history(session, case=session.get(Case, case_id))
        assert entries[0].title == "Map A rated 4/5"
        assert [e.title for e in entries].count("Map A rated 4/5") == 1
        assert "Photo uploaded" not in [e.title for e in entries]  # the covered audit action is left out
    finally:
        history._SOURCES[:] = [s for s in history._SOURCES if s.fn is not extra]


def test_other_users_history_and_rows_stay_hidden(
    client: TestClient, alice: Account, bob: Account, small_set: dict[str, str]
) -> None:
    assert client.get(f"/cases/{small_set['Anna']}/history", headers=bob.headers).status_code == 404


# --- 10,000 cases -----------------------------------------------------------------------------------------

N_CASES = 10_000
N_SYNDROMES = 100


@pytest.fixture
def ten_thousand(app, alice: Account, bob: Account, admin: Account) -> dict[str, Any]:
    """10,000 cases in bulk (a few seconds): 100 predicted syndromes, 5% confirmed, 2% rated, 3 owners."""
    ids = user_ids(app)
    owners = [ids["alice"], ids["bob"], ids["ada"]]
    cases, runs, diagnoses = [], [], []
    for i in range(N_CASES):
        syndrome = f"syn_{i % N_SYNDROMES:03d}"
        values: dict[str, Any] = {"predicted_syndrome_id": syndrome, "predicted_syndrome_name": f"Syndrome {syndrome}",
                                  "created_at": BASE_TIME + timedelta(minutes=37 * i)}
        if i % 20 == 0:
            values |= {"diagnosis_syndrome_id": syndrome, "diagnosis_name": f"Syndrome {syndrome}",
                       "diagnosis_omim": f"{100000 + i % N_SYNDROMES}"}
        row = case_row(owners[i % 3], i, **values)
        cases.append(row)
        runs.append({"case_id": row["id"], "created_at": row["created_at"], "model_id": "demo", "model_version": "1",
                     "ranked_by": "softmax",
                     "ranked": [{"rank": 1, "syndrome_id": syndrome, "name": f"Syndrome {syndrome}", "score": 0.5}]})
        if i % 20 == 0:
            diagnoses.append({"case_id": row["id"], "source": MODEL_LABEL, "syndrome_id": syndrome,
                              "name": f"Syndrome {syndrome}", "omim": f"{100000 + i % N_SYNDROMES}",
                              "model": "demo@1", "confirmed_by": owners[i % 3], "created_at": row["created_at"]})
    with app.state.sessions() as session:
        session.execute(insert(Case), cases)
        session.execute(insert(PredictionRun), runs)
        session.execute(insert(Diagnosis), diagnoses)
        rated = [cases[i]["id"] for i in range(0, N_CASES, 50)]
        if HAS_RATINGS:
            for case_id in rated:
                add_rating(session, case_id=case_id, rater_id=ids["ada"])
        session.commit()
        analyse(session)
    return {"cases": cases, "rated": set(rated) if HAS_RATINGS else set(), "ids": ids}


def analyse(session: Session) -> None:
    """Fresh planner statistics, as a deployed database has after autovacuum / ``ANALYZE``."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text("ANALYZE"))
    else:
        tables = ["cases", "prediction_runs", "diagnoses", "explanations", "users"]
        tables += ["ratings"] if HAS_RATINGS else []
        for table in tables:
            session.execute(text(f"ANALYZE {table}"))
    session.commit()


def query_plan(session: Session, statement: Any, *, no_seqscan: bool = False) -> str:
    """The backend's plan for a SQLAlchemy statement: EXPLAIN QUERY PLAN (SQLite) or EXPLAIN (PostgreSQL)."""
    conn = session.connection()
    compiled = statement.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    if conn.dialect.name == "sqlite":
        args = tuple(params[name] for name in compiled.positiontup or ())
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), args).all()
        return "\n".join(str(row[-1]) for row in rows)
    if no_seqscan:  # shows that an index *can* serve the query where a seq scan is also reasonable
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), params).all()
    if no_seqscan:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = on")
    return "\n".join(row[0] for row in rows)


def list_statements(user: User, filters: CaseFilters) -> list[Any]:
    """The two statements a list request runs: the count and the page."""
    query = case_service.filtered_query(user, filters)
    page = query.order_by(*case_service._ordering(filters)).limit(50)
    count = select(text("count(*)")).select_from(query.subquery())
    return [count, page]


def test_ten_thousand_cases_filter_on_indexes(app, ten_thousand: dict[str, Any]) -> None:
    ids = ten_thousand["ids"]
    with app.state.sessions() as session:
        alice = session.get(User, ids["alice"])
        admin = session.get(User, ids["ada"])
        backend = session.get_bind().dialect.name
        checks = [
            (admin, CaseFilters(predicted="syn_042"), "ix_cases_predicted_created"),
            (alice, CaseFilters(predicted="syn_042"), "ix_cases_"),
            (admin, CaseFilters(diagnosis="syn_007"), "ix_cases_diagnosis_syndrome"),
            (admin, CaseFilters(diagnosis="OMIM:100007"), "ix_cases_diagnosis_omim"),
            (admin, CaseFilters(created_from=datetime(2025, 3, 1).date(), created_to=datetime(2025, 3, 2).date()),
             "ix_cases_created"),
            (admin, CaseFilters(predicted="syn_042", sort="pseudonym", order="asc"), "ix_cases_predicted_created"),
        ]
        for user, filters, index in checks:
            for statement in list_statements(user, filters):
                plan = query_plan(session, statement)
                assert index in plan, f"{filters}: {plan}"
                if backend == "sqlite":
                    assert not re.search(r"\bSCAN cases\b(?! USING)", plan), f"{filters}: full scan\n{plan}"
                else:
                    assert "Seq Scan on cases" not in plan, f"{filters}: full scan\n{plan}"
        # Rated: an EXISTS probe of ratings.case_id per case, on its index.
        if HAS_RATINGS:
            plan = query_plan(session, list_statements(admin, CaseFilters(rated=True))[1], no_seqscan=True)
            assert "ix_ratings_case_id" in plan, plan
        session.rollback()


@contextmanager
def counting(engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def _count(conn, cursor, statement, parameters, context, executemany) -> None:
        # The inline runner's lane threads (gestaltlens-interactive/-batch) look for work every 2 s on the same
        # engine; their look is not the request's query.
        if threading.current_thread().name.startswith("gestaltlens-"):
            return
        if not statement.lstrip().upper().startswith(("PRAGMA", "SAVEPOINT", "RELEASE")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", _count)


def test_ten_thousand_cases_fixed_queries_per_request_and_right_totals(
    app, client: TestClient, alice: Account, admin: Account, ten_thousand: dict[str, Any]
) -> None:
    cases = ten_thousand["cases"]
    ids = ten_thousand["ids"]
    engine = app.state.engine

    def api_queries(account: Account, **params: Any) -> tuple[int, dict[str, Any]]:
        with counting(engine) as statements:
            body = listing(client, account, **params)
        return len(statements), body

    small, body_small = api_queries(admin, limit=5)
    large, body_large = api_queries(admin, limit=200)
    assert body_small["total"] == body_large["total"] == N_CASES and len(body_large["items"]) == 200
    assert small == large  # no query per row: owner, ranking and diagnosis come for the whole page at once
    assert large <= 8

    filtered, body = api_queries(admin, limit=200, predicted="syn_040", diagnosis="any", sort="predicted")
    expected = [c for i, c in enumerate(cases) if i % N_SYNDROMES == 40 and i % 20 == 0]
    assert body["total"] == len(expected) and filtered == large
    assert all(item["diagnosis"]["syndrome_id"] == "syn_040" for item in body["items"])
    assert all(item["predictions"][0]["syndrome_id"] == "syn_040" for item in body["items"])

    mine = listing(client, alice, limit=1, created_from="2025-01-01", created_to="2025-01-31")
    expected_mine = [c for c in cases if c["owner_id"] == ids["alice"] and c["created_at"] < datetime(2025, 2, 1,
                                                                                                     tzinfo=UTC)]
    assert mine["total"] == len(expected_mine)
    rated = listing(client, admin, limit=1, rated="true")
    assert rated["total"] == len(ten_thousand["rated"])
    assert listing(client, admin, limit=1, rated="false")["total"] == N_CASES - len(ten_thousand["rated"])

    # The page and its htmx partial: a fixed number of queries too.
    login(client, admin)
    with counting(engine) as page_statements:
        assert client.get("/cases", params={"predicted": "syn_001"}).status_code == 200
    with counting(engine) as partial_statements:
        response = client.get("/cases", params={"predicted": "syn_001", "page": 3}, headers={"HX-Target": "case-rows"})
    assert response.status_code == 200
    assert len(partial_statements) <= len(page_statements) <= 10
