"""Decide what an uploaded file is from its first bytes.

File names and client-sent content types are whatever the uploader's browser or script made up, so they
are never trusted: the type is read from the content's signature ("magic bytes"). Pillow is then told to
use only the decoder for that type, which keeps the attack surface to six well-exercised decoders
instead of every plugin Pillow happens to ship (PSD, EPS via Ghostscript, ...).

The module also recognises common things people upload by mistake (GIF, PDF, SVG, DICOM, Word
documents, ...) so the error can say what was received rather than "unknown file".
"""

from __future__ import annotations

from dataclasses import dataclass

#: Kinds we decode, with the Pillow format name each one may be opened as.
#: BMP and TIFF are accepted because the GestaltMatcher service (``cv2.imdecode``) reads them and labs
#: export from imaging systems in them; like every photo they are re-encoded to a bare JPEG at intake.
PILLOW_FORMATS: dict[str, str] = {
    "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "heif": "HEIF", "bmp": "BMP", "tiff": "TIFF",
}

#: Human names used in messages, for accepted and rejected kinds alike.
LABELS: dict[str, str] = {
    "jpeg": "JPEG image",
    "png": "PNG image",
    "webp": "WebP image",
    "heif": "HEIC/HEIF image",
    "avif": "AVIF image",
    "gif": "GIF image",
    "pdf": "PDF document",
    "svg": "SVG drawing",
    "tiff": "TIFF image",
    "bmp": "BMP image",
    "ico": "ICO icon",
    "psd": "Photoshop (PSD) file",
    "jpeg2000": "JPEG 2000 image",
    "jpegxl": "JPEG XL image",
    "dicom": "DICOM file",
    "video": "video file",
    "zip": "ZIP archive (or Office document)",
    "gzip": "gzip-compressed file",
    "html": "HTML page",
    "xml": "XML document",
    "text": "text file",
    "unknown": "file of unknown type",
}

# ISO base media file format brands (the 'ftyp' box). HEIC photos from phones use heic/heix/mif1;
# AVIF shares the container, so the brand list decides between them.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_GENERIC_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}
# Sizes of the BMP info header variants; "BM" alone is too common a start for a text file.
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


@dataclass(frozen=True)
class Sniffed:
    """The detected kind of a file (a key of :data:`LABELS`)."""

    kind: str

    @property
    def accepted(self) -> bool:
        return self.kind in PILLOW_FORMATS

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def pillow_format(self) -> str:
        return PILLOW_FORMATS[self.kind]


def sniff(data: bytes) -> Sniffed:
    """Classify ``data`` by its signature; never raises."""
    return Sniffed(_kind(data))


def _kind(data: bytes) -> str:
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _iso_bmff_kind(data)
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    if head.startswith(b"8BPS"):
        return "psd"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jpegxl"
    if data[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return _text_kind(data[:4096])


def _iso_bmff_kind(data: bytes) -> str:
    box_size = int.from_bytes(data[0:4], "big")
    end = min(len(data), box_size if 16 <= box_size <= 4096 else 64)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _HEIF_BRANDS:
        return "heif"
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _GENERIC_HEIF_BRANDS:
        return "heif"
    return "video"


def _text_kind(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 4 KiB boundary is still text; anything else is binary.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
    text = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in text:
        return "svg"
    if text.startswith(("<!doctype html", "<html")):
        return "html"
    if text.startswith("<?xml"):
        return "xml"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    if text and printable / len(text) > 0.95:
        return "text"
    return "unknown"
