"""The evaluation as a product feature: the job, the API, the page and `gestaltlens evaluate` give the same
numbers for the same model and spec; admins ask, everyone signed in reads; refusals are JSON.

One small spec (3 benchmark faces, two methods, one ROAD fraction, sanity on 3 faces) keeps it to a few
seconds of CPU; the full default run is what the page's button asks for.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Account, login
from tests.explanations.test_api import png_size, wait_for

SPEC = {"methods": ["gradcam", "guided_backprop"], "per_class": 1, "classes": ["syn_a", "syn_d", "syn_g"],
        "road_percentages": [0.5], "sanity_faces": 3}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """One thread here and in the CLI: torch's spinning threads crawl on shared cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal structure; floats within 1e-5 relative (the CLI runs in another process, other thread counts)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), f"{path}: {a} != {b}"
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def cli_card(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("evaluation")
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(out / "data"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "evaluate", "--model", "demo", "--methods", ",".join(SPEC["methods"]),
         "--per-class", "1", "--classes", ",".join(SPEC["classes"]), "--road", "0.5", "--sanity-faces", "3",
         "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "%" in done.stderr  # the progress bar
    assert f"scorecard: {out / 'scorecard.json'}" in done.stdout
    for name in ("localisation.png", "deletion.png", "deletion_signed.png", "insertion.png", "road.png",
                 "context.png", "sanity.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    # the paper table: CSV and LaTeX rows per method, a methods paragraph from the stored spec
    assert (out / "scorecard.csv").read_text().splitlines()[0].startswith("method,pointing,pointing_low")
    assert "guided\\_backprop" in (out / "scorecard.tex").read_text()
    assert "between-faces similarity" in (out / "methods.txt").read_text()
    return json.loads((out / "scorecard.json").read_text())


def test_job_api_page_and_cli_give_the_same_scorecard(client: TestClient, admin: Account, alice: Account,
                                                      cli_card: dict[str, Any]) -> None:
    answer = client.post("/api/v1/models/demo/evaluations", json=SPEC, headers=admin.headers)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert wait_for(client, admin, body["job_id"], timeout=600)["state"] == "done"
    again = client.post("/api/v1/models/demo/evaluations", json=SPEC, headers=admin.headers).json()
    assert again["job_id"] is None and again["evaluation"]["id"] == body["evaluation"]["id"]  # stored, not redone

    run = client.get(f"/api/v1/evaluations/{body['evaluation']['id']}", headers=alice.headers).json()
    assert run["state"] == "done" and run["model"]["id"] == "demo" and run["model"]["version"]
    card = run["result"]
    assert card["model"] == cli_card["model"] == run["model"]
    _close({k: v for k, v in card.items() if k != "timings"}, {k: v for k, v in cli_card.items() if k != "timings"})

    # the known result of Adebayo et al. comes out of our own cascade, as a comparison with the reference line
    assert card["sanity"]["gradcam"]["passes"] is True
    assert card["sanity"]["guided_backprop"]["passes"] is False
    assert card["sanity"]["guided_backprop"]["margin"]["low"] > 0 >= card["sanity"]["gradcam"]["margin"]["low"]
    assert card["sanity"]["gradcam"]["cascade"]["classifier"] and card["sanity"]["gradcam"]["random_logit"]
    # both maps cost ≤ 2 passes: the independent randomisation ran for them (occlusion, IG, SmoothGrad: not)
    assert all(card["sanity"][m]["independent"] and card["sanity"][m]["independent_not_run"] is None
               for m in SPEC["methods"])
    # the control's width was fitted on held-out faces, and it is reported
    assert all(f["sigma_px"] > 0 for f in card["chance"]["centre_prior"]["fit"].values())
    # every number is read beside its chance level
    assert 0 < card["chance"]["area_share"]["mean"] < card["chance"]["centre_prior"]["mass"]["mean"] < 1

    login(client, alice)
    page = client.get("/models/demo/evaluation")
    assert page.status_code == 200
    mass = card["scores"]["gradcam"]["localisation"]["mass"]["mean"]
    assert f"{mass:.3f}" in page.text and "FAILS" in page.text and "passes" in page.text
    gap = card["scores"]["guided_backprop"]["faithfulness"]["deletion_gap"]["mean"]
    assert f"{gap:+.2f}" in page.text and "signed order" in page.text
    assert "Synthetic faces are not patients" in page.text
    figure = client.get(f"/api/v1/evaluations/{run['id']}/figures/sanity.png")
    assert figure.status_code == 200 and png_size(figure.content)[0] > 300


def test_methods_paragraph_names_the_methods_without_independent_randomisation(cli_card: dict[str, Any]) -> None:
    from app.evaluate.paper import methods_paragraph

    text = methods_paragraph(cli_card)
    assert "independent re-initialisation of each stage alone (gradcam, guided backprop)" in text
    card = json.loads(json.dumps(cli_card))  # as if gradcam's map were a costly one
    card["sanity"]["gradcam"].update(independent={}, independent_not_run="not run: its map costs 121 passes")
    assert ("independent re-initialisation of each stage alone for guided backprop (not for gradcam, whose maps "
            "cost more than 2 passes)") in methods_paragraph(card)


def test_refusals(client: TestClient, admin: Account, alice: Account) -> None:
    refused = client.post("/api/v1/models/demo/evaluations", json=SPEC, headers=alice.headers)
    assert refused.status_code == 403 and refused.json()["code"]
    unknown = client.post("/api/v1/models/other/evaluations", json=SPEC, headers=admin.headers)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_model"
    bad = client.post("/api/v1/models/demo/evaluations", json={**SPEC, "methods": ["nope"]}, headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_params"
    extra = client.post("/api/v1/models/demo/evaluations", json={**SPEC, "colour": 1}, headers=admin.headers)
    assert extra.status_code == 422 and set(extra.json()) >= {"detail", "code"}
    assert client.get("/api/v1/models/demo/evaluations").status_code == 401
    missing = client.get("/api/v1/evaluations/nope/figures/sanity.png", headers=alice.headers)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get("/api/v1/models/demo/evaluations", headers=alice.headers).json() == {"items": []}


def test_page_without_a_scorecard_offers_admins_the_computation(client: TestClient, admin: Account,
                                                                 alice: Account) -> None:
    login(client, alice)
    page = client.get("/models/demo/evaluation")
    assert page.status_code == 200 and "No scorecard" in page.text and "evaluate-submit" not in page.text
    login(client, admin)
    page = client.get("/models/demo/evaluation")
    assert "evaluate-submit" in page.text


def test_case_maps_carry_completeness_and_a_deletion_curve(client: TestClient, alice: Account, bob: Account) -> None:
    from app.synth.generate import generate_one
    from tests.conftest import upload

    case = upload(client, alice, generate_one(seed=4242, class_id="syn_d", index=0, severity=1.0).jpeg).json()
    body = client.post(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers,
                       json={"methods": ["integrated_gradients", "deeplift", "gradcam"]}).json()
    assert wait_for(client, alice, body["job_id"])["state"] == "done"
    listed = {e["method"]: e for e in client.get(f"/api/v1/cases/{case['id']}/explanations",
                                                 headers=alice.headers).json()}
    ig, deeplift = listed["integrated_gradients"]["stats"], listed["deeplift"]["stats"]
    # IG at 50 steps is complete only to ~1-2 % on PReLU nets; DeepLIFT's rescale rule to float rounding
    assert 0 < ig["completeness_error"] < 0.05
    assert deeplift["completeness_error"] < 1e-3
    assert ig["completeness_error"] > deeplift["completeness_error"]
    assert "completeness_error" not in listed["gradcam"]["stats"]

    gradcam_id = listed["gradcam"]["id"]
    answer = client.get(f"/api/v1/explanations/{gradcam_id}/faithfulness", headers=alice.headers)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    measured = answer.json()
    assert measured["deletion_morf"]["fractions"][0] == 0.0 and len(measured["deletion_morf"]["scores"]) == 11
    assert measured["deletion_morf"]["scores"][0] == measured["deletion_lerf"]["scores"][0]  # nothing removed yet
    assert measured["deletion_morf"]["scores"][-1] == pytest.approx(measured["deletion_lerf"]["scores"][-1])
    assert sum(measured["context"]["areas"].values()) == pytest.approx(1.0)
    png = client.get(f"/api/v1/explanations/{gradcam_id}/deletion.png", headers=alice.headers)
    assert png.status_code == 200 and png.headers["cache-control"] == "no-store" and png_size(png.content)[0] > 200
    assert client.get(f"/api/v1/explanations/{gradcam_id}/faithfulness", headers=bob.headers).status_code == 404

    login(client, alice)
    card = client.get(f"/explanations/{gradcam_id}/card")
    assert "Deletion curve" in card.text and f"/explanations/{gradcam_id}/faithfulness" in card.text
    ig_card = client.get(f"/explanations/{listed['integrated_gradients']['id']}/card")
    assert "sum error" in ig_card.text
    partial = client.get(f"/explanations/{gradcam_id}/faithfulness")
    assert partial.status_code == 200 and "Deletion gap" in partial.text


def test_navigation_leads_to_the_served_models_page(client: TestClient, alice: Account) -> None:
    login(client, alice)
    assert 'href="/evaluation"' in client.get("/cases").text
    answer = client.get("/evaluation", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/models/demo/evaluation"
