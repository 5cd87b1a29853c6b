"""GestaltMatcher-service routes: what HTTP Basic costs per call with and without the credential cache.

Prints a table (never asserts timings): median wall time of ``POST /predict`` (one generated face, the demo
model) authenticated by Bearer token, by HTTP Basic with the cache, and by HTTP Basic with the cache
emptied before every call (what every call cost before the cache), plus one Argon2 verification alone,
and ``/encode`` and ``/crop``. Run: ``python bench/bench_gm_service.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.auth import service as auth_service
from app.auth.security import hash_password, verify_password
from app.migrate import upgrade
from app.settings import Settings
from app.synth.generate import generate_one
from app.web.factory import create_app

PASSWORD = "bench password 1234"  # noqa: S105 - a throwaway account in a temporary database


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        app = create_app(Settings(data_dir=Path(tmp) / "data", database_url=url, secret_key="b" * 40))
        with app.state.sessions() as session:
            user = auth_service.create_user(session, username="bench", password=PASSWORD, role="clinician")
            token = auth_service.create_api_token(session, user=user)
            session.commit()
        body = {"img": base64.b64encode(generate_one(seed=9100, class_id="syn_b", index=0).jpeg).decode()}
        bearer = {"Authorization": f"Bearer {token}"}
        basic = {"Authorization": "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()}
        hashed = hash_password(PASSWORD)
        with TestClient(app) as client:
            def call(route: str, headers: dict[str, str]):
                return lambda: client.post(route, json=body, headers=headers).raise_for_status()

            def uncached():
                app.state.basic_credentials = None  # the cache is made again, empty: a full Argon2 check
                call("/predict", basic)()

            call("/predict", bearer)()  # warm the model and the detector
            rows = [
                ("Argon2 verification alone", _median(lambda: verify_password(PASSWORD, hashed), args.repeats)),
                ("/predict, Bearer", _median(call("/predict", bearer), args.repeats)),
                ("/predict, Basic, no cache (before)", _median(uncached, args.repeats)),
                ("/predict, Basic, cached", _median(call("/predict", basic), args.repeats)),
                ("/encode, Basic, cached", _median(call("/encode", basic), args.repeats)),
                ("/crop, Basic, cached", _median(call("/crop", basic), args.repeats)),
            ]
        app.state.engine.dispose()
    load = os.getloadavg()[0]
    print(f"GestaltMatcher routes, demo model, median of {args.repeats}, {os.cpu_count()} CPUs, load {load:.1f}")
    print(f"| {'call':<36} | {'seconds':>8} |")
    print(f"|{'-' * 38}|{'-' * 10}|")
    for name, seconds in rows:
        print(f"| {name:<36} | {seconds:8.3f} |")


if __name__ == "__main__":
    main()
