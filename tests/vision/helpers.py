"""Builders for test inputs: encoded images, hand-made file headers, ICC profiles, known transforms."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

from app.vision.geometry import apply_matrix, compose, rotation_about


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def encode_image(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, *, idat: bytes = b"") -> bytes:
    """A PNG that declares ``width`` x ``height`` 8-bit grayscale but carries (almost) no pixel data.

    Refusing it as ``image_too_large`` (rather than ``corrupt_image``) proves the size was checked from
    the header, before decoding was attempted.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF header is patched to declare another size."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8), "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) for every JPEG segment up to the start of scan."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"bad marker at {pos}"
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    return segments


def linear_rgb_icc_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries with a *linear* (gamma 1.0) tone curve.

    Pixels tagged with it are linear-light, so converting them to sRGB must brighten mid-grey
    (0.5 linear -> ~188 in sRGB). Built by hand because no non-sRGB profile ships with the test deps.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + b"\x00" * 4 + s15(x) + s15(y) + s15(z)

    text = b"linear sRGB test profile\x00"
    desc = b"desc" + b"\x00" * 4 + struct.pack(">I", len(text)) + text + b"\x00" * (4 + 4 + 2 + 1 + 67)
    curve = b"curv" + b"\x00" * 4 + struct.pack(">IH", 1, 256) + b"\x00\x00"  # gamma 1.0 (u8Fixed8)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + b"\x00" * 4 + b"none\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        payload += b"\x00" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\x00" * 12
        + b"acsp"
        + b"\x00" * 28  # platform, flags, manufacturer, model, attributes, rendering intent
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\x00" * 4
        + b"\x00" * 44
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def place(
    rgb: np.ndarray,
    *,
    angle: float = 0.0,
    scale: float = 1.0,
    mirror: bool = False,
    shift: tuple[float, float] = (0.0, 0.0),
    margin: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror, rotate (counter-clockwise on screen), scale and shift ``rgb`` onto a canvas that holds it.

    Returns the canvas and the 2x3 matrix mapping original pixel coordinates to canvas coordinates.
    """
    height, width = rgb.shape[:2]
    source = np.ascontiguousarray(rgb[:, ::-1]) if mirror else rgb
    matrix = rotation_about(((width - 1) / 2.0, (height - 1) / 2.0), angle)
    matrix[:, :2] *= scale
    matrix[:, 2] = 0.0
    outline = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]])
    corners = apply_matrix(matrix, outline)
    offset = -corners.min(axis=0) + margin + np.asarray(shift, dtype=np.float64)
    matrix[:, 2] = offset
    extent = corners.max(axis=0) - corners.min(axis=0) + 2 * margin + np.abs(shift)
    size = (int(np.ceil(extent[0])) + 1, int(np.ceil(extent[1])) + 1)
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = cv2.warpAffine(source, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    if mirror:  # original -> mirrored source -> canvas
        matrix = compose(matrix, np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]]))
    return canvas, matrix
