"""Decode an uploaded photo and turn it into a de-identified sRGB JPEG.

Every photo that enters GestaltLens passes through :func:`load_photo`. It

* decides the type from the content (see :mod:`app.vision.sniff`) and opens it with that decoder only;
* refuses decompression bombs from the header, before any pixels are decoded;
* applies the EXIF orientation (phones store portrait photos sideways and rely on this tag; dropping the
  tag without applying it would hand the detector a face lying on its side);
* converts an embedded ICC profile to sRGB, because the networks were trained on sRGB pixels;
* normalises every pixel layout (16-bit, grayscale, CMYK, alpha, palette) to 8-bit RGB;
* bounds the long side (``max_side``): storage and compute stay predictable, and no face needs more than
  a few hundred pixels to be aligned to 112x112;
* re-encodes from a bare pixel array, so no EXIF (GPS!), XMP, ICC, comment or maker note survives.

The returned pixels are decoded from the re-encoded JPEG, so what is analysed is exactly what is stored:
re-running the pipeline later on the stored file reproduces the stored landmarks.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from app.vision.errors import IntakeError
from app.vision.sniff import sniff

try:  # HEIC is what iPhones save by default; without pillow-heif it is simply not accepted.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # ImportError, or a wheel whose native library fails to load
    HEIF_AVAILABLE = False

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 4096
MIN_SIDE = 32
JPEG_QUALITY = 95
ACCEPTED_TYPES = "JPEG, PNG, WebP, HEIC, BMP or TIFF"

# Pillow's decompression-bomb check fires inside Image.open as a *warning* (errors only above twice
# Image.MAX_IMAGE_PIXELS). We turn it into an error with warnings.catch_warnings, which edits the
# process-wide warning filters; the lock keeps two of our own threads from interleaving those edits.
# It guards only Image.open, which reads the header and is cheap. Image.MAX_IMAGE_PIXELS itself is
# left alone: it is global state other code may rely on, and our own explicit pixel check below is
# what enforces ``max_pixels``.
_OPEN_LOCK = threading.Lock()

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# ICC colour-space signatures and the Pillow modes a transform from them can read.
_ICC_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded, de-identified photo.

    ``rgb`` is read-only: the same array backs every later step, and an in-place edit would silently
    desynchronise it from ``encoded`` and ``sha256``.
    """

    rgb: np.ndarray
    encoded: bytes
    media_type: str
    sha256: str
    source_format: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def load_photo(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    max_bytes: int | None = None,
) -> Photo:
    """Validate, decode, orient, colour-manage, downscale and de-identify an uploaded photo.

    Raises :class:`IntakeError` (``corrupt_image``, ``too_large``, ``unsupported_type``,
    ``image_too_large`` or ``face_too_small``) for anything that cannot become a usable photo.
    ``max_bytes`` is for callers that have not already bounded the upload size. Pillow's own
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, ~89 MP by default) is honoured too, so a
    ``max_pixels`` above it has no effect beyond it.
    """
    if not data:
        raise IntakeError("corrupt_image", "The file is empty (0 bytes); upload the photo again.")
    if max_bytes is not None and len(data) > max_bytes:
        raise IntakeError(
            "too_large",
            f"The file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB. "
            "Upload a smaller export of the photo.",
        )
    sniffed = sniff(data)
    if not sniffed.accepted or (sniffed.kind == "heif" and not HEIF_AVAILABLE):
        raise IntakeError(
            "unsupported_type",
            f"This looks like a {sniffed.label}, which is not accepted; upload a {ACCEPTED_TYPES} photo.",
        )
    image = _open(data, sniffed.pillow_format, sniffed.label, max_pixels)
    rgb = _decode(image, sniffed.label, max_side)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise IntakeError(
            "face_too_small",
            f"The image is {width}x{height} pixels; a face cannot be analysed in an image smaller than "
            f"{MIN_SIDE} pixels on a side. Upload the original, full-resolution photo.",
        )
    encoded = _encode_jpeg(rgb)
    stored = _decode_own_jpeg(encoded)
    return Photo(
        rgb=stored,
        encoded=encoded,
        media_type="image/jpeg",
        sha256=hashlib.sha256(encoded).hexdigest(),
        source_format=sniffed.kind,
    )


def _open(data: bytes, pillow_format: str, label: str, max_pixels: int) -> Image.Image:
    """Parse the header only, and refuse oversized images before any pixel is decoded."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[pillow_format])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(None, max_pixels) from None
        except Exception:  # any decoder failure on untrusted bytes is a bad file
            raise _corrupt(label) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _corrupt(label)
    if width * height > max_pixels:
        image.close()
        raise _too_many_pixels((width, height), max_pixels)
    return image


def _decode(image: Image.Image, label: str, max_side: int) -> np.ndarray:
    """Decode pixels into an upright, sRGB, 8-bit RGB array with the long side at most ``max_side``."""
    try:
        if image.format == "JPEG":
            _request_jpeg_draft(image, max_side)
        image.seek(0)  # animated WebP/PNG: the first frame is the photo
        image.load()
        icc = image.info.get("icc_profile")
        image = _upright(image)
        rgb = _to_srgb_array(image, icc)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(image.size, None) from None
    except Exception:  # truncated data, bad CRC, decoder errors: all mean a bad file
        raise _corrupt(label) from None
    return _bound_long_side(rgb, max_side)


def _request_jpeg_draft(image: Image.Image, max_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result still exceeds ``max_side``.

    A 40-megapixel JPEG then costs a fraction of the memory and time, and the DCT-domain reduction is
    a proper low-pass; INTER_AREA does the remaining step.
    """
    width, height = image.size
    factor = max_side / max(width, height)
    if factor < 0.5:
        image.draft(image.mode, (max(1, int(width * factor + 1)), max(1, int(height * factor + 1))))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag to the pixels.

    If the EXIF block is too damaged to read, the pixels are kept as stored, which is what most viewers
    do; refusing the photo would be worse than leaving an odd one sideways (the detector also tries
    rotated copies).
    """
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF
        return image
    return transposed if transposed is not None else image


def _to_srgb_array(image: Image.Image, icc: bytes | None) -> np.ndarray:
    """Convert any supported mode to an 8-bit sRGB array, flattening transparency onto white.

    White, not black, because transparent regions in clinical uploads are cut-out backgrounds, and a
    white background is what clinical photos normally have.
    """
    image, alpha = _split_alpha(image)
    image = _to_eight_bit(image)
    if image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    converted = _apply_icc(image, icc)
    if converted is None:
        converted = image.convert("RGB")
    rgb = np.asarray(converted, dtype=np.uint8)
    if alpha is not None:
        weight = alpha[..., None]
        rgb = np.rint(rgb * weight + 255.0 * (1.0 - weight)).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _split_alpha(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """Separate transparency (alpha channel, tRNS colour key or palette transparency) from colour."""
    mode = image.mode
    has_key = "transparency" in image.info
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if (has_key or mode == "PA") else "RGB")
    elif mode in ("RGBa", "RGBX") or (mode == "RGB" and has_key):
        image = image.convert("RGBA")
    elif mode == "La" or (mode == "L" and has_key):
        image = image.convert("LA")
    if image.mode not in ("RGBA", "LA"):
        return image, None
    alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    return image.convert("RGB" if image.mode == "RGBA" else "L"), alpha


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Scale high-bit-depth grayscale to 8 bits by range, never by clipping.

    Pillow's own ``convert("L")`` clips 16-bit values at 255, which turns every real 16-bit photo white.
    16-bit RGB needs nothing here: Pillow already keeps the high byte of each sample.
    """
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float64) / 257.0
    elif image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        # Mode I holds 16-bit data widened to 32 bits; 8-bit data widened the same way stays as is.
        if values.max(initial=0.0) > 255.0:
            values = values / 257.0
    elif image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _apply_icc(image: Image.Image, icc: bytes | None) -> Image.Image | None:
    """Convert ``image`` from its embedded profile to sRGB; ``None`` if there is nothing usable.

    A broken or mismatched profile (it happens with edited photos) falls back to treating the pixels as
    sRGB: a slight colour shift is better than refusing a clinical photo.
    """
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if _ICC_MODES.get(space) != image.mode:
            return None
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except Exception:  # ImageCms.PyCMSError, OSError, ValueError from littlecms
        return None


def _bound_long_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    long_side = max(height, width)
    if long_side <= max_side:
        return rgb
    factor = max_side / long_side
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    """Encode from a bare array: a fresh Image has an empty ``info``, so no metadata can be carried over.

    4:4:4 chroma keeps colour edges (lips, conjunctivae) that 4:2:0 would smear.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0
    )
    return buffer.getvalue()


def _decode_own_jpeg(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded), formats=["JPEG"]) as image:
        rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    rgb.setflags(write=False)
    return rgb


def _corrupt(label: str) -> IntakeError:
    return IntakeError(
        "corrupt_image",
        f"The file looks like a {label} but cannot be decoded: it is damaged or incomplete. "
        "Export or copy the photo again and re-upload it.",
    )


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int | None) -> IntakeError:
    limit = f"; the limit is {max_pixels / 1e6:.0f} megapixels" if max_pixels else ""
    if size is None:
        what = "The image has far too many pixels"
    else:
        what = f"The image is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels)"
    return IntakeError("image_too_large", f"{what}{limit}. Downscale it and upload it again.")
