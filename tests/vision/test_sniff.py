"""File type from content: signatures of what is accepted and of what people upload by mistake."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import features

from app.vision.errors import IntakeError
from app.vision.intake import load_photo
from app.vision.sniff import sniff
from tests.vision.helpers import encode

RED = np.full((40, 40, 3), (200, 0, 0), np.uint8)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "heif"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "avif"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "video"),
        (b"GIF89a\x01\x00\x01\x00", "gif"),
        (b"%PDF-1.7\n", "pdf"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"\x00" * 128 + b"DICM" + b"\x00" * 8, "dicom"),
        (b"PK\x03\x04\x14\x00\x06\x00", "zip"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "svg"),
        (b"<?xml version='1.0'?><note/>", "xml"),
        (b"BMI 21.4, weight 60 kg", "text"),
        (b"\x00\x01\x02\x03\xfe\xfd", "unknown"),
    ],
)
def test_signatures(data: bytes, kind: str) -> None:
    assert sniff(data).kind == kind


def test_real_bmp_is_recognised() -> None:
    assert sniff(encode(RED, "BMP")).kind == "bmp"


def test_name_and_claimed_type_play_no_part() -> None:
    """There is no name to pass: a PNG is a PNG because its bytes say so."""
    assert load_photo(encode(RED, "PNG")).source_format == "png"
    assert load_photo(encode(RED, "JPEG")).source_format == "jpeg"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_avif_is_refused_even_though_pillow_could_read_it() -> None:
    with pytest.raises(IntakeError) as caught:
        load_photo(encode(RED, "AVIF"))
    assert caught.value.code == "unsupported_type"
    assert "AVIF" in caught.value.detail
