"""Photo intake: type by content, refusal of bad files, pixel-format normalisation, de-identification."""

from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from app.vision.errors import STATUS_BY_CODE, IntakeError
from app.vision.intake import load_photo
from app.vision.sniff import sniff
from tests.vision.helpers import (
    encode,
    encode_image,
    jpeg_segments,
    jpeg_with_declared_size,
    linear_rgb_icc_profile,
    png_header_only,
)


def refused(data: bytes, code: str, **kwargs: object) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        load_photo(data, **kwargs)
    error = caught.value
    assert error.code == code, error.detail
    assert error.status_code == STATUS_BY_CODE[code]
    assert error.detail and str(error) == error.detail
    return error


@pytest.fixture(scope="module")
def face_jpeg(astronaut: np.ndarray) -> bytes:
    return encode(astronaut, "JPEG", quality=90)


# --- errors ------------------------------------------------------------------------------------------


def test_error_statuses_follow_the_contract() -> None:
    assert STATUS_BY_CODE == {
        "unsupported_type": 415,
        "too_large": 413,
        "corrupt_image": 422,
        "image_too_large": 413,
        "no_face": 422,
        "multiple_faces": 422,
        "face_too_small": 422,
        "invalid_face_index": 422,
    }
    error = IntakeError("multiple_faces", "two faces", extra={"faces": [1, 2]})
    assert error.to_dict() == {"detail": "two faces", "code": "multiple_faces", "faces": [1, 2]}
    with pytest.raises(ValueError):
        IntakeError("nonsense", "x")


# --- what is refused -----------------------------------------------------------------------------------


def test_empty_file_is_corrupt() -> None:
    error = refused(b"", "corrupt_image")
    assert "empty" in error.detail


def test_text_is_unsupported() -> None:
    error = refused(b"Patient: Jane Doe\nDOB 2019-01-01\n", "unsupported_type")
    assert "text" in error.detail and "JPEG, PNG, WebP, HEIC, BMP or TIFF" in error.detail


def test_svg_is_unsupported() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    assert "SVG" in refused(svg, "unsupported_type").detail


def test_gif_is_unsupported(astronaut: np.ndarray) -> None:
    assert "GIF" in refused(encode(astronaut, "GIF"), "unsupported_type").detail


def test_pdf_is_unsupported(astronaut: np.ndarray) -> None:
    assert "PDF" in refused(encode(astronaut, "PDF"), "unsupported_type").detail


@pytest.mark.parametrize(("fmt", "kind"), [("TIFF", "tiff"), ("BMP", "bmp")])
def test_bmp_and_tiff_are_accepted_and_re_encoded(astronaut: np.ndarray, fmt: str, kind: str) -> None:
    """The GestaltMatcher service reads them (cv2.imdecode); like every photo they become a bare JPEG."""
    image = Image.fromarray(astronaut)
    exif = image.getexif()
    exif[0x010E] = "patient name in the description"  # ImageDescription, a tag TIFF and BMP writers may carry
    data = encode_image(image, fmt, exif=exif) if fmt == "TIFF" else encode(astronaut, fmt)
    photo = load_photo(data)
    assert photo.source_format == kind and photo.media_type == "image/jpeg"
    assert photo.encoded.startswith(b"\xff\xd8\xff") and b"patient name" not in photo.encoded
    assert b"Exif" not in photo.encoded
    assert photo.rgb.shape == astronaut.shape
    assert np.abs(photo.rgb.astype(int) - astronaut.astype(int)).mean() < 3.0  # only JPEG's loss


def test_a_multi_page_tiff_uses_its_first_page(astronaut: np.ndarray) -> None:
    first, second = Image.fromarray(astronaut), Image.fromarray(255 - astronaut)
    photo = load_photo(encode_image(first, "TIFF", save_all=True, append_images=[second]))
    assert np.abs(photo.rgb.astype(int) - astronaut.astype(int)).mean() < 3.0


def test_html_and_binary_junk_are_unsupported() -> None:
    refused(b"<!DOCTYPE html><html><body>hi</body></html>", "unsupported_type")
    refused(bytes(range(256)) * 4, "unsupported_type")


def test_too_many_bytes(face_jpeg: bytes) -> None:
    refused(face_jpeg, "too_large", max_bytes=len(face_jpeg) - 1)
    assert load_photo(face_jpeg, max_bytes=len(face_jpeg)).source_format == "jpeg"


def test_truncated_jpeg_is_corrupt(face_jpeg: bytes) -> None:
    refused(face_jpeg[: len(face_jpeg) // 2], "corrupt_image")


def test_truncated_png_is_corrupt(astronaut_png: bytes) -> None:
    refused(astronaut_png[: len(astronaut_png) // 2], "corrupt_image")


def test_png_with_bad_crc_is_corrupt(astronaut_png: bytes) -> None:
    damaged = bytearray(astronaut_png)
    damaged[29] ^= 0xFF  # the IHDR chunk's CRC (8 signature + 4 length + 4 type + 13 data)
    refused(bytes(damaged), "corrupt_image")


def test_garbage_after_a_jpeg_signature_is_corrupt() -> None:
    refused(b"\xff\xd8\xff\xe0" + b"\x00" * 200, "corrupt_image")


def test_pixel_cap_applies_to_a_real_image() -> None:
    # 3000 x 3000 of one colour: a few kB of PNG that would decode to 9 megapixels.
    bomb = encode_image(Image.new("L", (3000, 3000), 90), "PNG")
    assert len(bomb) < 50_000
    error = refused(bomb, "image_too_large", max_pixels=1_000_000)
    assert "3000x3000" in error.detail


def test_pixel_cap_is_checked_from_the_header_before_decoding() -> None:
    # Declares 8000 x 8000 (64 MP: over our 40 MP cap, under Pillow's own ~89 MP limit) but holds no real
    # pixel data: decoding it would fail as corrupt, so image_too_large shows the header check came first.
    refused(png_header_only(8_000, 8_000), "image_too_large")
    refused(jpeg_with_declared_size(8_000, 6_000), "image_too_large")  # 48 MP


def test_pillow_decompression_bomb_warning_and_error_are_refused() -> None:
    # Caps raised above Pillow's own limit (~89 MP), so Pillow's check is what fires: its warning
    # (89-179 MP) and its error (above 179 MP).
    refused(png_header_only(10_000, 10_000), "image_too_large", max_pixels=10**10)
    refused(png_header_only(20_000, 20_000), "image_too_large", max_pixels=10**10)


def test_tiny_image_is_face_too_small() -> None:
    error = refused(encode(np.full((8, 8, 3), 200, np.uint8), "PNG"), "face_too_small")
    assert "8x8" in error.detail


# --- what is accepted ----------------------------------------------------------------------------------


def test_type_comes_from_content(astronaut: np.ndarray, astronaut_png: bytes) -> None:
    photo = load_photo(astronaut_png)
    assert photo.source_format == "png"
    assert photo.media_type == "image/jpeg"
    assert photo.rgb.shape == astronaut.shape and photo.rgb.dtype == np.uint8
    assert np.abs(photo.rgb.astype(int) - astronaut).mean() < 2.0
    assert load_photo(encode(astronaut, "WEBP", quality=95)).source_format == "webp"


def test_output_is_what_is_stored(astronaut_png: bytes) -> None:
    photo = load_photo(astronaut_png)
    assert photo.sha256 == hashlib.sha256(photo.encoded).hexdigest()
    stored = np.asarray(Image.open(io.BytesIO(photo.encoded)).convert("RGB"))
    np.testing.assert_array_equal(stored, photo.rgb)
    assert not photo.rgb.flags.writeable


def test_heic_is_accepted(astronaut: np.ndarray) -> None:
    heic = encode(astronaut, "HEIF", quality=90)
    assert sniff(heic).kind == "heif"
    photo = load_photo(heic)
    assert photo.source_format == "heif"
    assert np.abs(photo.rgb.astype(int) - astronaut).mean() < 6.0


def test_grayscale_becomes_three_channels(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    photo = load_photo(encode(gray, "PNG"))
    assert photo.rgb.shape == (*gray.shape, 3)
    channels = photo.rgb.astype(int)
    assert np.abs(channels[..., 0] - channels[..., 2]).max() <= 2  # still grey
    assert np.abs(channels - gray[..., None]).mean() < 2.0  # JPEG q95 error only


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    data = encode(ramp, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = load_photo(data).rgb.astype(np.float64)
    assert rgb.mean() == pytest.approx(127.5, abs=1.5)  # clipping would give ~254
    np.testing.assert_allclose(rgb[32, :, 0], np.linspace(0, 255, 256), atol=3)


def test_16_bit_rgb_is_scaled() -> None:
    bgr16 = np.zeros((48, 48, 3), np.uint16)
    bgr16[...] = (10_000, 30_000, 60_000)  # B, G, R
    ok, png = cv2.imencode(".png", bgr16)
    assert ok
    rgb = load_photo(png.tobytes()).rgb.astype(np.float64)
    expected = [60_000 / 257, 30_000 / 257, 10_000 / 257]
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), expected, atol=2)


def test_cmyk_jpeg_is_converted() -> None:
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # full magenta + yellow = red
    photo = load_photo(encode_image(cmyk, "JPEG", quality=95))
    np.testing.assert_allclose(photo.rgb.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=8)


def test_rgba_is_flattened_on_white() -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (200, 0, 0, 255)  # opaque red
    rgba[:, 32:] = (0, 0, 0, 0)  # transparent black
    rgb = load_photo(encode(rgba, "PNG")).rgb.astype(int)
    np.testing.assert_allclose(rgb[:, 4:28].reshape(-1, 3).mean(axis=0), [200, 0, 0], atol=4)
    np.testing.assert_allclose(rgb[:, 36:].reshape(-1, 3).mean(axis=0), [255, 255, 255], atol=2)


def test_gray_with_alpha_is_flattened_on_white() -> None:
    la = Image.new("LA", (64, 64), (40, 255))
    la.paste((40, 0), (0, 0, 64, 32))
    rgb = load_photo(encode_image(la, "PNG")).rgb.astype(int)
    assert rgb[:28].mean() > 250 and abs(rgb[36:].mean() - 40) < 3


def test_palette_with_transparency_is_flattened_on_white() -> None:
    pal = Image.new("P", (64, 64), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(0, (0, 0, 32, 64))
    data = encode_image(pal, "PNG", transparency=0)
    rgb = load_photo(data).rgb.astype(int)
    np.testing.assert_allclose(rgb[:, :28].reshape(-1, 3).mean(axis=0), [255, 255, 255], atol=2)
    np.testing.assert_allclose(rgb[:, 36:].reshape(-1, 3).mean(axis=0), [0, 0, 255], atol=4)


def test_plain_palette_image_is_converted(astronaut: np.ndarray) -> None:
    pal = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    photo = load_photo(encode_image(pal, "PNG"))
    assert np.abs(photo.rgb.astype(int) - np.asarray(pal.convert("RGB"), dtype=int)).mean() < 2.0


def test_icc_profile_is_converted_to_srgb() -> None:
    # Mid-grey in a linear-light profile is much brighter once expressed in sRGB (0.5 -> 188).
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    tagged = load_photo(encode_image(image, "PNG", icc_profile=linear_rgb_icc_profile()))
    untagged = load_photo(encode_image(image, "PNG"))
    assert untagged.rgb.mean() == pytest.approx(128, abs=1)
    assert tagged.rgb.mean() == pytest.approx(188, abs=2)


def test_broken_icc_profile_falls_back_to_srgb() -> None:
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    photo = load_photo(encode_image(image, "PNG", icc_profile=b"not a profile at all" * 10))
    assert photo.rgb.mean() == pytest.approx(128, abs=1)


def test_long_side_is_bounded() -> None:
    photo = load_photo(encode(np.full((600, 1000, 3), 77, np.uint8), "PNG"), max_side=500)
    assert photo.rgb.shape == (300, 500, 3)


def test_large_jpeg_is_drafted_and_bounded(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (2400, 2400), interpolation=cv2.INTER_CUBIC)
    photo = load_photo(encode(big, "JPEG", quality=90), max_side=512)
    assert photo.rgb.shape == (512, 512, 3)
    assert np.abs(photo.rgb.astype(int) - astronaut).mean() < 8.0


# --- de-identification ---------------------------------------------------------------------------------


def test_orientation_applied_and_all_metadata_removed(astronaut: np.ndarray) -> None:
    # Stored sideways with orientation 6 ("rotate 90 degrees clockwise to display"), as phones do.
    stored = np.ascontiguousarray(np.rot90(astronaut, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "SecretCam Maker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.25), 3: "E", 4: (13.0, 24.0, 36.5)}  # GPS IFD
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description dc:creator="Jane Doe"/></x:xmpmeta>'
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = encode(
        stored,
        "JPEG",
        quality=95,
        exif=exif.tobytes(),
        icc_profile=srgb,
        comment=b"Patient Jane Doe",
        xmp=xmp,
    )
    source_info = Image.open(io.BytesIO(source))
    assert source_info.getexif().get_ifd(0x8825), "the test input must really carry GPS data"
    assert {"icc_profile", "comment", "xmp"} <= set(source_info.info)

    photo = load_photo(source)

    assert photo.rgb.shape == astronaut.shape  # rotated back upright
    assert np.abs(photo.rgb.astype(int) - astronaut).mean() < 4.0
    reopened = Image.open(io.BytesIO(photo.encoded))
    assert not reopened.getexif()
    assert not set(reopened.info) & {"exif", "icc_profile", "comment", "xmp", "dpi", "photoshop", "adobe"}
    markers = {marker for marker, _ in jpeg_segments(photo.encoded)}
    assert markers <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}, [hex(m) for m in sorted(markers)]  # JFIF + image data
    for needle in (
        b"Exif",
        b"ICC_PROFILE",
        b"http://ns.adobe.com/xap",
        b"xmpmeta",
        b"Jane Doe",
        b"SecretCam",
    ):
        assert needle not in photo.encoded, needle


def test_png_text_and_exif_chunks_are_removed(astronaut: np.ndarray) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>Jane Doe</x:xmpmeta>")
    exif = Image.Exif()
    exif[0x010F] = "SecretCam Maker"
    photo = load_photo(encode(astronaut, "PNG", pnginfo=info, exif=exif.tobytes()))
    assert b"Jane Doe" not in photo.encoded and b"SecretCam" not in photo.encoded
    assert not Image.open(io.BytesIO(photo.encoded)).getexif()
