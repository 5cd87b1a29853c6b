"""Explaining an ensemble through the API: ``member`` chooses one network or averages the logit over the
members; each is its own stored map (cache key), computed by the explanation worker, named in the map JSON;
methods that cannot be averaged and unknown members are refused with 422; single-network models unchanged."""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.cases.models import Case
from app.explain.engine import Explainer
from app.explain.ensemble import LINEAR_METHODS
from app.explain.registry import DEFAULT_PANEL
from app.explanations import service
from app.migrate import upgrade
from app.nets.checkpoint import export_state_dict
from app.nets.ensemble import Augmentation, Member, encode_views
from app.nets.gallery import write_gallery
from app.nets.registry import read_model_folder, sha256_file
from app.predictions.service import decode_png
from app.settings import Settings
from app.synth.generate import generate_one
from app.web.factory import create_app
from tests.conftest import Account, make_account, upload
from tests.explanations.test_api import wait_for
from tests.nets.test_ensemble import DEMO, gallery_crops

LINEAR = ["input_x_gradient", "gradcam"]


def _sibling() -> torch.nn.Module:
    """The demo network with clearly perturbed weights: a second fine-tuned member with its own head."""
    sibling = copy.deepcopy(DEMO.network)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for parameter in sibling.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3 * parameter.abs().mean())
    return sibling.eval()


def build_two_head_folder(root: Path) -> Path:
    """``root/ens2``: the demo network (m0) and its perturbed sibling (m1, with a head), no TTA, a small gallery."""
    folder = root / "ens2"
    folder.mkdir(parents=True)
    for name in ("weights.pt", "labels.json"):
        shutil.copy(DEMO.folder / name, folder / name)
    sibling = _sibling()
    torch.save(export_state_dict(sibling), folder / "sibling.pt")
    card = json.loads((DEMO.folder / "model.json").read_text())
    for key in ("calibration", "out_of_distribution"):
        card.pop(key, None)
    card.update(id="ens2", gallery="gallery.npz")
    card["ensemble"] = {"members": [{"id": "sibling", "architecture": {"name": "iresnet18", "width": 0.25},
                                     "weights": "sibling.pt", "has_head": True}],
                        "tta": {"flip": False, "gray": False}}
    crops, labels, ids = gallery_crops(per_class=1)
    members = (Member("m0", "demo", DEMO.network), Member("m1", "sibling", sibling))
    views = np.stack([np.stack([v.embedding for v in encode_views(members, crop, [Augmentation()])])
                      for crop in crops])  # (N, 2, 512)
    write_gallery(folder / "gallery.npz", views, labels, ids)
    card["sha256"] = {name: sha256_file(folder / name) for name in ("weights.pt", "labels.json", "sibling.pt",
                                                                     "gallery.npz")}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def _npy(client: TestClient, account: Account, item: dict) -> np.ndarray:
    response = client.get(item["urls"]["npy"], headers=account.headers)
    assert response.status_code == 200
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def _explain(client: TestClient, account: Account, case_id: str, **body) -> dict:
    response = client.post(f"/api/v1/cases/{case_id}/explanations", json=body, headers=account.headers)
    assert response.status_code == 202, response.text
    data = response.json()
    if data["job_id"]:
        assert wait_for(client, account, data["job_id"])["state"] == "done"
    listed = {e["id"]: e for e in client.get(f"/api/v1/cases/{case_id}/explanations", headers=account.headers).json()}
    return {e["method"]: listed[e["id"]] for e in data["explanations"]} | {"_job": data["job_id"]}


def test_ensemble_members_and_mean_through_the_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ens.db'}"
    upgrade(url)
    folder = build_two_head_folder(tmp_path / "models")
    settings = Settings(data_dir=tmp_path / "d", database_url=url, secret_key="k" * 40, models_dir=folder.parent,
                        model="ens2")
    app = create_app(settings)
    account = make_account(app, "ensuser", "clinician")
    face = generate_one(seed=777, class_id="syn_b", index=0, severity=1.0).jpeg
    with TestClient(app) as client:
        case = upload(client, account, face).json()
        cid, target = case["id"], case["predictions"][0]["syndrome_id"]

        def refused(**body) -> dict:
            response = client.post(f"/api/v1/cases/{cid}/explanations", json=body, headers=account.headers)
            assert response.status_code == 422, response.text
            return response.json()

        # The mean of saliency maps is not the saliency of the mean logit: refused, naming a way out.
        error = refused(methods=["saliency", "gradcam"], target=target)
        assert error["code"] == "invalid_params" and "saliency" in error["detail"] and "member" in error["detail"]
        for member in ("m7", "nobody", 5):
            error = refused(methods=LINEAR, target=target, member=member)
            assert error["code"] == "invalid_params" and "m1 (sibling)" in error["detail"]

        mean = _explain(client, account, cid, methods=LINEAR, target=target)  # member omitted: the mean
        first = _explain(client, account, cid, methods=LINEAR, target=target, member=0)
        second = _explain(client, account, cid, methods=LINEAR, target=target, member="sibling")
        assert {mean[m]["member"] for m in LINEAR} == {"mean"}
        assert {first[m]["member"] for m in LINEAR} == {"m0"} and {second[m]["member"] for m in LINEAR} == {"m1"}
        assert len({mean[m]["id"] for m in LINEAR} | {first[m]["id"] for m in LINEAR}
                   | {second[m]["id"] for m in LINEAR}) == 3 * len(LINEAR)  # three different stored maps each
        again = _explain(client, account, cid, methods=LINEAR, target=target, member=None)
        assert again["_job"] is None and [again[m]["id"] for m in LINEAR] == [mean[m]["id"] for m in LINEAR]
        # A member chosen may use any method (saliency is fine for one network).
        chosen = _explain(client, account, cid, methods=["saliency"], target=target, member="m1")
        maps = {(name, m): _npy(client, account, item[m]) for name, item in
                (("mean", mean), ("m0", first), ("m1", second)) for m in LINEAR}
        saliency_m1 = _npy(client, account, chosen["saliency"])
        with app.state.sessions() as session:
            crop = decode_png(app.state.photo_store.read(session.get(Case, cid).aligned_path))
        # The case page's panel offers the networks and names each card's member (newest request per method: m1).
        panel = client.get(f"/cases/{cid}/explanations/panel", headers=account.headers)
        assert panel.status_code == 200, panel.text
        assert 'name="member"' in panel.text and "m1 (sibling)" in panel.text
        assert "averaged over the members" in panel.text and "(member m1)" in panel.text
        # The form's "mean" is the API's null: the same stored averaged maps, no new job.
        form = client.post(f"/cases/{cid}/explanations", headers={**account.headers, "HX-Request": "true"},
                           data={"methods": LINEAR, "target": target, "member": "mean"})
        assert form.status_code == 200, form.text
        assert "(averaged over the members)" in form.text
        figure = client.get(f"/api/v1/cases/{cid}/explanations/figure.png?target={target}", headers=account.headers)
        assert figure.status_code == 200 and figure.content[:4] == b"\x89PNG"
    app.state.engine.dispose()

    model = read_model_folder(folder)
    index = [label.id for label in model.labels].index(target)
    want = {name: Explainer(m.network).explain(crop, target=index, methods=[*LINEAR, "saliency"])
            for name, m in (("m0", model.ensemble[0]), ("m1", model.ensemble[1]))}
    for method in LINEAR:
        # Each member's stored map is that network's own map; the members differ; the mean is their mean.
        np.testing.assert_allclose(maps[("m0", method)], want["m0"][method], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(maps[("m1", method)], want["m1"][method], rtol=1e-4, atol=1e-6)
        assert not np.allclose(maps[("m0", method)], maps[("m1", method)], atol=1e-4)
        np.testing.assert_allclose(maps[("mean", method)], (want["m0"][method] + want["m1"][method]) / 2,
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saliency_m1, want["m1"]["saliency"], rtol=1e-4, atol=1e-6)

    # The default panel of the mean shrinks to the methods that average; a chosen member keeps all of them.
    member, methods = service.resolve_member(model, None, list(DEFAULT_PANEL), default_panel=True)
    assert member == "mean" and methods == [m for m in DEFAULT_PANEL if m in LINEAR_METHODS] and methods
    assert service.resolve_member(model, 1, list(DEFAULT_PANEL), default_panel=True) == ("m1", list(DEFAULT_PANEL))


@pytest.mark.parametrize("member", [None, 0, "m0", "demo"])
def test_single_network_ignores_the_one_member(client: TestClient, alice: Account, member) -> None:
    """One network: null, 0, "m0" and the model id are that network, stored exactly as before (no member key)."""
    case = upload(client, alice, generate_one(seed=778, class_id="syn_c", index=0).jpeg).json()
    body = {"methods": ["saliency"], "target": case["predictions"][0]["syndrome_id"], "member": member}
    response = client.post(f"/api/v1/cases/{case['id']}/explanations", json=body, headers=alice.headers)
    assert response.status_code == 202, response.text
    item = response.json()["explanations"][0]
    assert item["member"] is None and "member" not in item["params"]
    plain = client.post(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers,
                        json={"methods": ["saliency"], "target": body["target"]}).json()
    assert plain["explanations"][0]["id"] == item["id"]  # the same stored map as a request without member
    if response.json()["job_id"]:
        wait_for(client, alice, response.json()["job_id"])


def test_single_network_refuses_other_members(client: TestClient, alice: Account) -> None:
    case = upload(client, alice, generate_one(seed=779, class_id="syn_d", index=0).jpeg).json()
    for member in ("m1", 1, "mean", True):
        response = client.post(f"/api/v1/cases/{case['id']}/explanations", headers=alice.headers,
                               json={"methods": ["saliency"], "member": member})
        assert response.status_code == 422, response.text
        assert response.json()["code"] in ("invalid_params", "invalid_request"), response.json()
