"""The cases API of the contract: upload → de-identified case with face and alignment; access rules;
every bad input answers a clear 4xx, stores nothing, and leaves the server healthy."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.cases.models import Case
from tests.conftest import Account, encode, upload


def _count_cases(app) -> int:
    with app.state.sessions() as session:
        return session.scalar(select(func.count()).select_from(Case))


def _stored_files(app) -> list[Path]:
    root: Path = app.state.photo_store.root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_creates_a_case_with_face_landmarks_alignment_and_urls(
    app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    response = upload(client, alice, astronaut_jpeg, pseudonym="P-001")
    assert response.status_code == 201, response.text
    case = response.json()
    assert case["pseudonym"] == "P-001" and case["owner"] == "alice"
    x, y, w, h = case["face"]["box"]
    assert 150 < x < 210 and 40 < y < 90 and 70 < w < 120 and 90 < h < 140  # the astronaut's face
    assert len(case["face"]["landmarks"]) == 5 and case["face"]["score"] > 0.8
    assert np.asarray(case["alignment"]["matrix"]).shape == (2, 3)
    assert case["alignment"]["residual_px"] < 6
    # The aligned landmarks sit near the ArcFace template.
    gap = np.abs(np.asarray(case["alignment"]["landmarks"]) - np.asarray(case["alignment"]["template"]))
    assert gap.max() < 8
    assert [p["rank"] for p in case["predictions"]] == list(range(1, len(case["predictions"]) + 1))
    assert case["prediction"]["model_id"] == "demo"  # the bundled model ranks every new case
    assert set(case["urls"]) == {"self", "page", "image", "aligned"}

    image = client.get(case["urls"]["image"], headers=alice.headers)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    aligned = client.get(case["urls"]["aligned"], headers=alice.headers)
    assert aligned.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(aligned.content)).size == (112, 112)
    assert client.get(case["urls"]["self"], headers=alice.headers).json()["id"] == case["id"]


def test_stored_photo_carries_no_metadata_and_no_file_name(
    app, client: TestClient, alice: Account, astronaut_rgb: np.ndarray
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x9286] = "patient Jane Doe"  # UserComment
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    buffer = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(buffer, "JPEG", exif=exif.tobytes(), comment=b"Jane Doe")
    response = client.post(
        "/api/v1/cases",
        files={"photo": ("Jane_Doe_2026.jpg", buffer.getvalue(), "image/jpeg")},
        headers=alice.headers,
    )
    assert response.status_code == 201
    stored = client.get(response.json()["urls"]["image"], headers=alice.headers).content
    for needle in (b"Exif", b"SecretCam", b"Jane", b"GPS"):
        assert needle not in stored
    assert not Image.open(io.BytesIO(stored)).getexif()
    for path in _stored_files(app):
        assert "Jane" not in str(path) and b"Jane" not in path.read_bytes()


def test_list_search_and_pagination(client: TestClient, alice: Account, astronaut_jpeg: bytes) -> None:
    ids = [upload(client, alice, astronaut_jpeg, pseudonym=f"P-{i}").json()["id"] for i in range(3)]
    listing = client.get("/api/v1/cases?limit=2", headers=alice.headers).json()
    assert listing["total"] == 3 and len(listing["items"]) == 2
    assert [c["id"] for c in listing["items"]] == ids[::-1][:2]  # newest first
    assert client.get("/api/v1/cases?q=P-1", headers=alice.headers).json()["total"] == 1
    assert client.get(f"/api/v1/cases?q={ids[0][:8]}", headers=alice.headers).json()["items"][0]["id"] == ids[0]
    assert client.get("/api/v1/cases?q=%25", headers=alice.headers).json()["total"] == 0  # LIKE wildcards escaped


def test_other_users_cases_are_invisible_on_every_case_route(
    client: TestClient, alice: Account, bob: Account, admin: Account, astronaut_jpeg: bytes
) -> None:
    case_id = upload(client, alice, astronaut_jpeg).json()["id"]
    for method, path in [
        ("GET", f"/api/v1/cases/{case_id}"),
        ("GET", f"/api/v1/cases/{case_id}/image"),
        ("GET", f"/api/v1/cases/{case_id}/aligned"),
        ("DELETE", f"/api/v1/cases/{case_id}"),
        ("GET", f"/cases/{case_id}"),
    ]:
        response = client.request(method, path, headers=bob.headers)
        assert response.status_code == 404, f"{method} {path}"  # 404, not 403: existence is not leaked
    assert client.get("/api/v1/cases", headers=bob.headers).json()["total"] == 0
    # Administrators see every case.
    assert client.get(f"/api/v1/cases/{case_id}", headers=admin.headers).status_code == 200
    assert client.get("/api/v1/cases", headers=admin.headers).json()["total"] == 1
    assert client.get(f"/api/v1/cases/{case_id}", headers=alice.headers).status_code == 200


def test_delete_erases_row_and_files_and_keeps_the_audit_trail(
    app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    case_id = upload(client, alice, astronaut_jpeg).json()["id"]
    client.get(f"/api/v1/cases/{case_id}", headers=alice.headers)
    assert _stored_files(app)
    assert client.delete(f"/api/v1/cases/{case_id}", headers=alice.headers).status_code == 204
    assert client.get(f"/api/v1/cases/{case_id}", headers=alice.headers).status_code == 404
    assert _count_cases(app) == 0 and _stored_files(app) == []
    with app.state.sessions() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.case_id == case_id)).all()
    assert {"upload", "view", "delete"} <= set(actions)


def test_several_faces_are_listed_and_one_can_be_chosen(
    app, client: TestClient, alice: Account, astronaut_rgb: np.ndarray
) -> None:
    pair = np.concatenate([astronaut_rgb, astronaut_rgb[:, ::-1]], axis=1)
    data = encode(np.ascontiguousarray(pair))
    response = upload(client, alice, data)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "multiple_faces" and len(body["faces"]) == 2
    assert {"index", "box", "score"} <= set(body["faces"][0])
    assert body["image_size"] == [1024, 512]
    assert _count_cases(app) == 0
    right = max(body["faces"], key=lambda f: f["box"][0])
    chosen = upload(client, alice, data, face_index=str(right["index"]))
    assert chosen.status_code == 201
    assert chosen.json()["face"]["box"][0] > 512  # the face on the right half


def _png_header_only(width: int, height: int) -> bytes:
    """A syntactically valid PNG that claims huge dimensions (a decompression-bomb probe)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_inputs(astronaut_jpeg: bytes) -> dict[str, tuple[bytes, int, str]]:
    gif = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(gif, "GIF")
    tiny = encode(np.full((8, 8, 3), 128, np.uint8), "PNG")
    blank = encode(np.full((400, 400, 3), 200, np.uint8), "PNG")
    return {
        "empty": (b"", 422, "corrupt_image"),
        "text": (b"patient notes, definitely not a photo\n" * 20, 415, "unsupported_type"),
        "svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', 415,
                "unsupported_type"),
        "gif": (gif.getvalue(), 415, "unsupported_type"),
        "pdf": (b"%PDF-1.7\n1 0 obj<<>>endobj\n", 415, "unsupported_type"),
        "truncated_jpeg": (astronaut_jpeg[: len(astronaut_jpeg) // 2], 422, "corrupt_image"),
        "bomb": (_png_header_only(50_000, 50_000), 413, "image_too_large"),
        "tiny": (tiny, 422, "face_too_small"),
        "no_face": (blank, 422, "no_face"),
    }


BAD_CASES = ["empty", "text", "svg", "gif", "pdf", "truncated_jpeg", "bomb", "tiny", "no_face"]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_gets_a_clear_4xx_and_leaves_nothing(
    name: str, app, client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    data, status, code = _bad_inputs(astronaut_jpeg)[name]
    response = upload(client, alice, data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and len(body["detail"]) > 10
    assert _count_cases(app) == 0 and _stored_files(app) == []
    assert client.get("/healthz").status_code == 200


def test_fifty_megabyte_body_is_refused_while_reading(app, client: TestClient, alice: Account) -> None:
    response = upload(client, alice, b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert _count_cases(app) == 0 and _stored_files(app) == []
    assert client.get("/healthz").status_code == 200


def test_body_limit_holds_without_a_content_length(app, client: TestClient, alice: Account) -> None:
    """A chunked upload gives no Content-Length; the limit must be enforced while reading."""
    boundary = "XyZ"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(20):
            yield b"\0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/v1/cases",
        content=body(),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert _count_cases(app) == 0


@pytest.mark.parametrize("variant", ["grayscale", "rgba", "cmyk", "gray16", "webp", "palette"])
def test_unusual_but_valid_images_are_accepted(
    variant: str, client: TestClient, alice: Account, astronaut_rgb: np.ndarray
) -> None:
    image = Image.fromarray(astronaut_rgb)
    buffer = io.BytesIO()
    if variant == "grayscale":
        image.convert("L").save(buffer, "JPEG")
    elif variant == "rgba":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.new("L", image.size, 255))
        rgba.save(buffer, "PNG")
    elif variant == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG")
    elif variant == "gray16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(gray).save(buffer, "PNG")
    elif variant == "webp":
        image.save(buffer, "WEBP", quality=90)
    elif variant == "palette":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    response = upload(client, alice, buffer.getvalue())
    assert response.status_code == 201, response.text
    stored = client.get(response.json()["urls"]["image"], headers=alice.headers).content
    decoded = Image.open(io.BytesIO(stored))
    assert decoded.mode == "RGB" and decoded.format == "JPEG"
    # 16-bit must be scaled, not clipped to white.
    assert 40 < np.asarray(decoded).mean() < 200


def test_case_page_shows_photo_landmarks_and_aligned_crop(
    client: TestClient, alice: Account, astronaut_jpeg: bytes
) -> None:
    from tests.conftest import login

    case = upload(client, alice, astronaut_jpeg, pseudonym="P-page").json()
    login(client, alice)
    page = client.get(case["urls"]["page"])
    assert page.status_code == 200
    assert case["urls"]["aligned"] in page.text and case["urls"]["image"] in page.text
    assert page.text.count('class="lm lm-') == 5
    listing = client.get("/cases")
    assert "P-page" in listing.text
