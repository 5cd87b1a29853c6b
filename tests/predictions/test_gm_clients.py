"""The GestaltMatcher-Arc service's client calls, made the way its scripts make them, over real HTTP against
a real `gestaltlens serve` process: `send_image_api.py` (requests + HTTPBasicAuth, `/predict` per photo,
the answer's keys copied into a JSON file) and `test_api.py` (`/crop` decoded with OpenCV and written as
an image, `/encode` turned into a table; it sends no credentials, so they come from a netrc file, as
`requests` reads them). One face, several faces and no face."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from app.synth.generate import generate_one
from tests.browser_support import Server
from tests.conftest import encode

USER, SECRET = "your_username", "your_password"  # the scripts' own placeholders, used unchanged


def _photos(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    one = generate_one(seed=9100, class_id="syn_b", index=0, severity=1.0)
    left = generate_one(seed=9101, class_id="syn_a", index=0, severity=1.0).rgb
    right = generate_one(seed=9102, class_id="syn_c", index=0, severity=1.0).rgb
    canvas = np.full((max(left.shape[0], right.shape[0]), left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1]:] = right
    files = {"one_face.jpg": one.jpeg, "two_faces.jpg": encode(canvas, "JPEG", quality=92),
             "no_face.png": encode(np.full((240, 320, 3), 170, np.uint8), "PNG")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {Path(name).stem: folder / name for name in files}


@pytest.fixture(scope="module")
def gm_server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("gm") / "data"
    running = Server(data)
    env = {**os.environ, "GESTALTLENS_DATA_DIR": str(data)}
    env.pop("GESTALTLENS_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "app.cli", "user", "add", USER, "--password-stdin"], input=SECRET,
                   text=True, env=env, check=True, capture_output=True)
    yield running
    running.stop()


def test_send_image_api_flow(gm_server: Server, tmp_path: Path) -> None:
    """analyze_image() for each photo of a folder, as send_image_api.py does it."""
    output_dir = tmp_path / "demo_output"
    output_dir.mkdir()
    for stem, path in _photos(tmp_path / "cases").items():
        params = {"img": base64.b64encode(path.read_bytes()).decode("utf-8")}
        r = requests.post(url=f"{gm_server.url}/predict", json=params,
                          auth=requests.auth.HTTPBasicAuth(USER, SECRET), timeout=120)
        assert r.status_code == 200, (stem, r.text)  # the script prints the body otherwise and writes nothing
        output = {"case_id": stem, **r.json()}
        (output_dir / f"{stem}.json").write_text(json.dumps(output, ensure_ascii=False, indent=4))
    results = {p.stem: json.loads(p.read_text()) for p in output_dir.iterdir()}
    assert results["no_face"]["message"] == "Face alignment error."
    for stem in ("one_face", "two_faces"):
        syndromes = results[stem]["suggested_syndromes_list"]
        assert syndromes and isinstance(results[stem]["suggested_genes_list"], list)
        assert all(round(s["distance"], 3) == s["distance"] for s in syndromes)
    assert results["one_face"]["suggested_syndromes_list"][0]["syndrome_name"] == "Synthetic syndrome B"


def test_test_api_flow_with_netrc_credentials(gm_server: Server, tmp_path: Path, monkeypatch) -> None:
    """test_api.py's /crop and /encode calls, credentials from a netrc file (the script sends none)."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {SECRET}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    photo = _photos(tmp_path / "demo_images")["one_face"]
    params = {"img": base64.b64encode(photo.read_bytes()).decode("utf-8")}
    r = requests.post(url=f"{gm_server.url}/crop", json=params, timeout=120)
    assert r.status_code == 200, r.text
    img = cv2.imdecode(np.frombuffer(base64.b64decode(r.json()["crop"]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (112, 112, 3) and cv2.imwrite(str(tmp_path / "1_aligned.jpg"), img)
    r = requests.post(url=f"{gm_server.url}/encode", json=params, timeout=120)
    assert r.status_code == 200, r.text
    table = r.json()["encodings"]  # what pd.DataFrame(data["encodings"]) reads: column -> {row -> value}
    rows = {tuple(column) for column in table.values()}
    assert len(rows) == 1 and len(next(iter(rows))) == 4
    assert all(len(v) == 512 for v in table["representations"].values())
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    assert requests.post(url=f"{gm_server.url}/crop", json=params, timeout=120).status_code == 401
