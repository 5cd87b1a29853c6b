"""Lanes bench (issue 21): do clinicians' panels stay fast while batch work runs?

    python bench/bench_lanes.py [--runners inline,celery] [--clinicians 5] [--per-class 2] [--cohort-cases 5]

Real processes on this machine, the demo model, PostgreSQL (a fresh schema per runner) and, for Celery, Redis
with one ``gestaltlens worker`` per lane (``--lanes interactive`` and ``--lanes batch``, one process each).
For each runner:

1. **idle**: N clinicians (one account each) ask at the same moment for the ten-method panel of one of their own
   cases; per clinician the time from the request to the first map stored and to the whole panel.
2. **batch alone**: an evaluation (the scorecard on ``--per-class`` faces per syndrome) and a syndrome cohort
   (composite and ten maps per case of ``--cohort-cases`` demo cases) run with nothing else; their durations.
3. **loaded**: the same two batch jobs again (a new seed and the other objective, so nothing is reused), and once
   both run, the N clinicians ask for the panels of another case each; the same timings, and the batch jobs'
   durations (their slowdown against 2).

The goals (issue 21): first map p95 ≤ 3 s and whole panel p95 ≤ 2× the idle figure while batch work runs, batch
work still finishing. Also the estimates' error: the end each panel job showed when it was queued
(``estimated_end_at``) against when it really ended. Prints the CPU and load; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.auth import service as auth_service
from app.db import make_engine, make_sessionmaker
from app.machine import cpu_name
from app.settings import PROJECT_ROOT
from app.synth.generate import generate_one
from bench.bench_load import fresh_database, pct
from tests.conftest import PASSWORD
from tests.fault_support import free_port, serve, spawn, stop

REDIS_URL = os.environ.get("GESTALTLENS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def accounts(url: str, clinicians: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        admin = auth_service.create_user(session, username="ada", password=PASSWORD, role="admin")
        admin_headers = {"Authorization": f"Bearer {auth_service.create_api_token(session, user=admin)}"}
        users = []
        for i in range(clinicians):
            user = auth_service.create_user(session, username=f"clin{i}", password=PASSWORD, role="clinician")
            users.append({"Authorization": f"Bearer {auth_service.create_api_token(session, user=user)}"})
        session.commit()
    engine.dispose()
    return admin_headers, users


def wait_job(base: str, headers: dict[str, str], job_id: str, timeout: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not finish")


def panel(base: str, headers: dict[str, str], case_id: str, out: dict[str, Any]) -> None:
    """Ask for the default panel and time the first map and the whole panel (polling every 0.1 s)."""
    started = time.monotonic()
    asked = httpx.post(f"{base}/api/v1/cases/{case_id}/explanations", json={}, headers=headers, timeout=60).json()
    job = httpx.get(f"{base}/api/v1/jobs/{asked['job_id']}", headers=headers, timeout=30).json()
    out["estimated_end_at"] = job.get("estimated_end_at")
    out["position"] = job.get("position")
    first = None
    while True:
        rows = httpx.get(f"{base}/api/v1/cases/{case_id}/explanations", headers=headers, timeout=30).json()
        done = [r for r in rows if r["status"] in ("done", "failed")]
        now = time.monotonic()
        if done and first is None:
            first = now - started
        if len(done) == len(rows) and rows:
            break
        time.sleep(0.1)
    out["first"], out["whole"] = first, time.monotonic() - started
    finished = wait_job(base, headers, asked["job_id"])
    out["finished_at"], out["duration_s"], out["estimated_s"] = (finished["finished_at"], finished["duration_s"],
                                                                 finished["estimated_s"])


def panels(base: str, users: list[dict[str, str]], cases: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in users]
    threads = [threading.Thread(target=panel, args=(base, h, c, r)) for h, c, r in zip(users, cases, results,
                                                                                       strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def start_batch(base: str, admin: dict[str, str], *, seed: int, objective: str, per_class: int) -> list[str]:
    evaluation = httpx.post(f"{base}/api/v1/models/demo/evaluations", headers=admin, timeout=60,
                            json={"per_class": per_class, "seed": seed, "sanity_faces": 2, "robustness_samples": 0})
    assert evaluation.status_code == 202, evaluation.text
    cohort = httpx.post(f"{base}/api/v1/syndromes/syn_a/cohort", headers=admin, timeout=60,
                        json={"objective": objective})
    assert cohort.status_code == 202, cohort.text
    return [evaluation.json()["job_id"], cohort.json()["job_id"]]


def run(runner: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    url, cleanup = fresh_database("postgres", folder)
    data = folder / f"data-{runner}"
    admin, users = accounts(url, args.clinicians)
    env = {**os.environ, "GESTALTLENS_DATABASE_URL": url, "GESTALTLENS_DATA_DIR": str(data),
           "GESTALTLENS_SECRET_KEY": "bench-secret-key-that-is-long-enough", "GESTALTLENS_DEVICE": "cpu",
           "PYTHONPATH": str(PROJECT_ROOT)}
    workers: list[subprocess.Popen] = []
    if runner == "celery":
        env.update(GESTALTLENS_JOB_RUNNER="celery", GESTALTLENS_BROKER_URL=REDIS_URL,
                   GESTALTLENS_JOB_QUEUE=f"bench-{uuid.uuid4().hex[:8]}")
    command = [sys.executable, "-m", "app.cli", "demo-cohort", "ada", "--per-syndrome", str(args.cohort_cases),
               "--syndromes", "syn_a"]
    demo = subprocess.run(command, env=env, capture_output=True, text=True)  # noqa: S603 (our own command)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    port = free_port()
    server = serve(env, folder / f"server-{runner}.log", port)
    base = f"http://127.0.0.1:{port}"
    try:
        if runner == "celery":
            for lane in ("interactive", "batch"):
                workers.append(spawn(["worker", "--lanes", lane, "--concurrency", "1", "--loglevel", "WARNING"],
                                     env, folder / f"worker-{lane}.log"))
        cases: list[list[str]] = []
        for i, headers in enumerate(users):
            mine = []
            for round_ in range(2):
                face = generate_one(seed=900 + 10 * i + round_, class_id=f"syn_{'bcdef'[i % 5]}", index=round_,
                                    severity=1.0).jpeg
                made = httpx.post(f"{base}/api/v1/cases", headers=headers, timeout=120,
                                  files={"photo": ("p.jpg", face, "image/jpeg")})
                assert made.status_code == 201, made.text
                mine.append(made.json()["id"])
            cases.append(mine)
        # Warm-up: the worker loads and compiles nothing twice (one cheap map per lane process).
        warm = httpx.post(f"{base}/api/v1/cases/{cases[0][0]}/explanations", headers=users[0], timeout=60,
                          json={"methods": ["saliency"]}).json()
        wait_job(base, users[0], warm["job_id"])

        idle = panels(base, users, [c[0] for c in cases])
        alone_ids = start_batch(base, admin, seed=11, objective="logit", per_class=args.per_class)
        alone = [wait_job(base, admin, j) for j in alone_ids]

        loaded_ids = start_batch(base, admin, seed=12, objective="similarity", per_class=args.per_class)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # both batch jobs running (a worker each, or the inline batch lane)
            states = [httpx.get(f"{base}/api/v1/jobs/{j}", headers=admin, timeout=30).json()["state"]
                      for j in loaded_ids]
            if "running" in states:
                break
            time.sleep(0.2)
        loaded = panels(base, users, [c[1] for c in cases])
        batch_loaded = [wait_job(base, admin, j) for j in loaded_ids]
        return {"idle": idle, "loaded": loaded, "alone": alone, "batch_loaded": batch_loaded}
    finally:
        for worker in workers:
            stop(worker)
        stop(server)
        cleanup()


def _error_s(result: dict[str, Any]) -> float | None:
    if not result.get("estimated_end_at") or not result.get("finished_at"):
        return None
    return (datetime.fromisoformat(result["estimated_end_at"]) - datetime.fromisoformat(result["finished_at"])
            ).total_seconds()


def report(runner: str, out: dict[str, Any]) -> None:
    def row(name: str, values: list[float]) -> str:
        return f"| {runner} | {name} | {pct(values, 0.5):.2f} | {pct(values, 0.95):.2f} |"

    print(f"\n### {runner}\n\n| runner | measure (s) | p50 | p95 |\n|---|---|---|---|")
    for phase in ("idle", "loaded"):
        print(row(f"{phase}: first map", [r["first"] for r in out[phase]]))
        print(row(f"{phase}: whole panel", [r["whole"] for r in out[phase]]))
    idle95 = pct([r["whole"] for r in out["idle"]], 0.95)
    loaded95 = pct([r["whole"] for r in out["loaded"]], 0.95)
    first95 = pct([r["first"] for r in out["loaded"]], 0.95)
    print(f"\nloaded/idle whole-panel p95: **{loaded95 / idle95:.2f}×** (goal ≤ 2×); loaded first map p95 "
          f"{first95:.2f} s (goal ≤ 3 s)")
    for name, alone, loaded in zip(("evaluation", "cohort"), out["alone"], out["batch_loaded"], strict=True):
        slowdown = loaded["duration_s"] / alone["duration_s"]
        print(f"{name}: alone {alone['duration_s']:.1f} s ({alone['state']}), with the panels "
              f"{loaded['duration_s']:.1f} s ({loaded['state']}): slowdown {slowdown:.2f}×;"
              f" estimate at queueing {alone['estimated_s']} s")
    errors = [e for r in out["idle"] + out["loaded"] if (e := _error_s(r)) is not None]
    if errors:
        print(f"panel end estimates (shown when queued) minus the real end: median {statistics.median(errors):+.1f} s,"
              f" median |error| {statistics.median(abs(e) for e in errors):.1f} s over {len(errors)} jobs")
    else:
        print("panel end estimates: none shown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default="inline,celery")
    parser.add_argument("--clinicians", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--cohort-cases", type=int, default=5)
    args = parser.parse_args()
    print(f"# bench_lanes {datetime.now().isoformat(timespec='seconds')}")
    print(f"CPU: {cpu_name()} · {os.cpu_count()} cores · load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-lanes-") as tmp:
        for runner in args.runners.split(","):
            began = time.monotonic()
            out = run(runner, args, Path(tmp))
            report(runner, out)
            print(f"({runner}: {time.monotonic() - began:.0f} s wall, load average now {os.getloadavg()})")


if __name__ == "__main__":
    main()
