"""Load bench: concurrent uploaders and a 10,000-case list, on SQLite and PostgreSQL, against a real server.

    python bench/bench_load.py [--backends sqlite,postgres] [--uploaders 20] [--uploads-each 2]
                               [--cases 10000] [--list-requests 40]

For each backend a fresh database (SQLite file / PostgreSQL schema, migrated) and a real ``gestaltlens serve``
process (uvicorn, one worker, inline job runner) on a free port. Then:

* **uploads**: N threads each upload M generated face photos at once (multipart, Bearer token, the whole
  intake: type sniffing, de-identification, YuNet detection with roll correction, alignment, ranking by the
  demo model, files and rows). Errors, p50 / p95 of each request's latency, uploads per second.
* **case list**: 10,000 case rows bulk-inserted (with rankings and 5% confirmed diagnoses), then the list
  API with the page's common queries (first page, search, date range, predicted syndrome, diagnosis, a deep
  offset, sorted by pseudonym), each timed sequentially; p50 / p95 per query.

Prints tables; asserts nothing about time (the README keeps the numbers of one run).
"""

from __future__ import annotations

import argparse
import os
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


def bench_uploads(base: str, token: str, uploaders: int, each: int) -> dict[str, Any]:
    photos = [generate_one(seed=900 + i, class_id="syn_" + "abcdefgh"[i % 8], index=0, severity=1.0).jpeg
              for i in range(uploaders)]
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(uploaders)
    lock = threading.Lock()

    def uploader(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=300) as client:
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


def run_backend(backend: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, tuple[float, float, int]]]:
    with tempfile.TemporaryDirectory(prefix=f"bench-load-{backend}-") as tmp:
        folder = Path(tmp)
        url, cleanup = fresh_database(backend, folder)
        try:
            engine = make_engine(url)
            with make_sessionmaker(engine)() as session:
                user = auth_service.create_user(session, username="bench", password=secrets.token_urlsafe(16),
                                                role="admin")
                token = auth_service.create_api_token(session, user=user)
                owner_id = user.id
                session.commit()
            engine.dispose()
            env = {**os.environ, "GESTALTLENS_DATABASE_URL": url, "GESTALTLENS_DATA_DIR": str(folder / "data"),
                   "GESTALTLENS_SECRET_KEY": "bench-secret-key-long-enough-to-sign"}
            port = free_port()
            server = serve(env, folder / "server.log", port)
            base = f"http://127.0.0.1:{port}"
            try:
                uploads = bench_uploads(base, token, args.uploaders, args.uploads_each)
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
    parser.add_argument("--uploads-each", type=int, default=2)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--list-requests", type=int, default=40)
    args = parser.parse_args()
    results = {backend: run_backend(backend, args) for backend in args.backends.split(",") if backend}
    load = os.getloadavg()[0]
    print(f"\n{args.uploaders} concurrent uploaders x {args.uploads_each} photos, one server process "
          f"({os.cpu_count()} cores, load {load:.1f} at the end)")
    print("| backend | uploads | errors | p50 | p95 | uploads/s |")
    print("|---|---|---|---|---|---|")
    for backend, (uploads, _) in results.items():
        print(f"| {backend} | {uploads['n']} | {uploads['errors']} | {uploads['p50']:.2f} s | {uploads['p95']:.2f} s "
              f"| {uploads['per_s']:.2f} |")
        if uploads["first_error"]:
            print(f"|   first error: {uploads['first_error']} |")
    print(f"\ncase list with {args.cases + args.uploaders * args.uploads_each:,} cases, "
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
