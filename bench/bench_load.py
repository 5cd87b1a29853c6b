"""Load bench: concurrent uploaders and a 10,000-case list, on SQLite and PostgreSQL, against a real server.

    python bench/bench_load.py [--backends sqlite,postgres] [--uploaders 20] [--uploads-each 5]
                               [--auth token,cookie] [--cases 10000] [--list-requests 40]

For each backend a fresh database (SQLite file / PostgreSQL schema, migrated) and a real ``gestaltlens serve``
process (uvicorn, one worker, inline job runner) on a free port. Then:

* **uploads**: N users (one account each) upload M generated face photos each at once (multipart, the whole
  intake: type sniffing, de-identification, YuNet detection with roll correction, alignment, ranking by the
  demo model, files and rows), once with Bearer tokens and once through browser sessions (form login, session
  cookie, CSRF header), on the same server one after the other. Errors, p50 / p95 of each request's latency,
  uploads per second, and the cookie/token p95 ratio of that run.
* **case list**: 10,000 case rows bulk-inserted (with rankings and 5% confirmed diagnoses), then the list
  API with the page's common queries (first page, search, date range, predicted syndrome, diagnosis, a deep
  offset, sorted by pseudonym), each timed sequentially; p50 / p95 per query.

Prints tables; asserts nothing about time (the README keeps the numbers of one run).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.auth import service as auth_service
from app.cases.models import Case
from app.db import make_engine, make_sessionmaker, new_id
from app.migrate import upgrade
from app.predictions.models import PredictionRun
from app.synth.generate import generate_one
from tests.fault_support import free_port, serve, stop

CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')
POSTGRES_URL = os.environ.get("GESTALTLENS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
LIST_QUERIES = {
    "first page": "",
    "search pseudonym": "q=P-0421",
    "date range": "created_from=2024-03-01&created_to=2024-04-30",
    "predicted syndrome": "predicted=syn_042",
    "confirmed diagnosis": "diagnosis=any",
    "offset 9,000": "offset=9000",
    "sort pseudonym": "sort=pseudonym&order=asc",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fresh_database(backend: str, folder: Path) -> tuple[str, object]:
    """(url, cleanup) of a migrated empty database."""
    if backend == "sqlite":
        url = f"sqlite:///{(folder / 'bench.db').as_posix()}"
        upgrade(url)
        return url, lambda: None
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    upgrade(url)

    def cleanup() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return url, cleanup


def browser_client(base: str, username: str, password: str) -> httpx.Client:
    """A client logged in like a browser: the login form's CSRF token, the session cookie, the CSRF header."""
    client = httpx.Client(base_url=base, timeout=600)
    page = client.get("/login")
    match = CSRF_META.search(page.text)
    assert match, "no CSRF token on /login"
    headers = {"X-CSRF-Token": match.group(1), "Origin": base}
    response = client.post("/login", data={"username": username, "password": password, "next": "/cases"},
                           headers={**headers, "HX-Request": "true"})
    assert response.status_code == 204, response.text
    client.headers.update(headers)
    return client


def bench_uploads(base: str, users: list[tuple[str, str, str]], each: int, auth: str) -> dict[str, Any]:
    """``users``: (username, password, token); ``auth``: "token" or "cookie"."""
    uploaders = len(users)
    photos = [generate_one(seed=900 + i, class_id="syn_" + "abcdefgh"[i % 8], index=0, severity=1.0).jpeg
              for i in range(uploaders)]
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(uploaders)
    lock = threading.Lock()

    def uploader(i: int) -> None:
        username, password, token = users[i]
        if auth == "cookie":
            client = browser_client(base, username, password)
        else:
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        try:
            barrier.wait()
            for _ in range(each):
                started = time.perf_counter()
                try:
                    response = client.post("/api/v1/cases", files={"photo": ("p.jpg", photos[i], "image/jpeg")})
                    ok = response.status_code == 201
                    problem = None if ok else f"{response.status_code} {response.text[:80]}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if problem:
                        errors.append(problem)
        finally:
            client.close()

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(uploaders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"n": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else "",
            "p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "per_s": len(latencies) / wall, "wall": wall}


def seed_cases(url: str, owner_id: int, count: int) -> None:
    engine = make_engine(url)
    cases, runs = [], []
    for i in range(count):
        syndrome = f"syn_{i % 100:03d}"
        row: dict[str, Any] = {
            "id": new_id(), "owner_id": owner_id, "pseudonym": f"P-{i:05d}",
            "created_at": BASE_TIME + timedelta(minutes=37 * i), "photo_path": "none/photo.jpg",
            "photo_media_type": "image/jpeg", "photo_sha256": f"{i:064x}", "photo_width": 512, "photo_height": 512,
            "source_format": "jpeg", "aligned_path": "none/aligned.png", "face_count": 1, "face_index": 0,
            "face_box": [180.0, 60.0, 100.0, 120.0],
            "landmarks": [[200.0, 100.0], [240.0, 100.0], [220.0, 120.0], [205.0, 145.0], [235.0, 145.0]],
            "detector_score": 0.9, "align_matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "align_residual": 1.0,
            "predicted_syndrome_id": syndrome, "predicted_syndrome_name": f"Syndrome {syndrome}",
        }
        if i % 20 == 0:
            row |= {"diagnosis_syndrome_id": syndrome, "diagnosis_name": f"Syndrome {syndrome}",
                    "diagnosis_omim": f"{100000 + i % 100}"}
        cases.append(row)
        runs.append({"case_id": row["id"], "created_at": row["created_at"], "model_id": "demo", "model_version": "1",
                     "ranked_by": "softmax",
                     "ranked": [{"rank": 1, "syndrome_id": syndrome, "name": f"Syndrome {syndrome}", "score": 0.5}]})
    with make_sessionmaker(engine)() as session:
        session.execute(insert(Case), cases)
        session.execute(insert(PredictionRun), runs)
        session.commit()
    engine.dispose()


def bench_list(base: str, token: str, requests: int) -> dict[str, tuple[float, float, int]]:
    out = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for name, query in LIST_QUERIES.items():
            client.get(f"/api/v1/cases?{query}")  # warm
            times = []
            total = 0
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(f"/api/v1/cases?{query}")
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                total = response.json()["total"]
            out[name] = (pct(times, 0.5), pct(times, 0.95), total)
    return out


def run_backend(backend: str, args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]],
                                                                 dict[str, tuple[float, float, int]]]:
    with tempfile.TemporaryDirectory(prefix=f"bench-load-{backend}-") as tmp:
        folder = Path(tmp)
        url, cleanup = fresh_database(backend, folder)
        try:
            engine = make_engine(url)
            users = []
            with make_sessionmaker(engine)() as session:
                user = auth_service.create_user(session, username="bench", password=secrets.token_urlsafe(16),
                                                role="admin")
                token = auth_service.create_api_token(session, user=user)
                owner_id = user.id
                for i in range(args.uploaders):
                    password = secrets.token_urlsafe(16)
                    clinician = auth_service.create_user(session, username=f"user{i:02d}", password=password,
                                                         role="clinician")
                    users.append((clinician.username, password, auth_service.create_api_token(session,
                                                                                              user=clinician)))
                session.commit()
            engine.dispose()
            env = {**os.environ, "GESTALTLENS_DATABASE_URL": url, "GESTALTLENS_DATA_DIR": str(folder / "data"),
                   "GESTALTLENS_SECRET_KEY": "bench-secret-key-long-enough-to-sign"}
            port = free_port()
            server = serve(env, folder / "server.log", port)
            base = f"http://127.0.0.1:{port}"
            try:
                warm = generate_one(seed=899, class_id="syn_a", index=0, severity=1.0).jpeg  # load model, detector
                httpx.post(f"{base}/api/v1/cases", files={"photo": ("w.jpg", warm, "image/jpeg")}, timeout=600,
                           headers={"Authorization": f"Bearer {token}"}).raise_for_status()
                uploads = {auth: bench_uploads(base, users, args.uploads_each, auth)
                           for auth in args.auth.split(",") if auth}
                listing = {}
                if args.list_requests:
                    seed_cases(url, owner_id, args.cases)
                    listing = bench_list(base, token, args.list_requests)
            finally:
                stop(server)
            return uploads, listing
        finally:
            cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--uploads-each", type=int, default=5)
    parser.add_argument("--auth", default="token,cookie", help="token, cookie or both, in this order")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--list-requests", type=int, default=40, help="0 skips the case list")
    args = parser.parse_args()
    results = {backend: run_backend(backend, args) for backend in args.backends.split(",") if backend}
    load = os.getloadavg()
    print(f"\n{args.uploaders} users uploading {args.uploads_each} photos each at once, one server process "
          f"({os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end)")
    print("| backend | auth | uploads | errors | p50 | p95 | uploads/s | p95 vs token |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, (uploads, _) in results.items():
        for auth, row in uploads.items():
            token_p95 = uploads.get("token", {}).get("p95")
            ratio = f"{row['p95'] / token_p95:.2f}x" if token_p95 else "-"
            print(f"| {backend} | {auth} | {row['n']} | {row['errors']} | {row['p50']:.2f} s | {row['p95']:.2f} s "
                  f"| {row['per_s']:.2f} | {ratio} |")
            if row["first_error"]:
                print(f"|   first error: {row['first_error']} |")
    if not args.list_requests:
        return
    print(f"\ncase list with {args.cases:,} cases more, "
          f"{args.list_requests} sequential requests per query (p50 / p95)")
    backends = list(results)
    print("| query | " + " | ".join(f"{b} p50 | {b} p95" for b in backends) + " | matches |")
    print("|---|" + "---|---|" * len(backends) + "---|")
    for name in LIST_QUERIES:
        cells = []
        for backend in backends:
            p50, p95, total = results[backend][1][name]
            cells.append(f"{p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms")
        print(f"| {name} | " + " | ".join(cells) + f" | {total:,} |")


if __name__ == "__main__":
    main()
