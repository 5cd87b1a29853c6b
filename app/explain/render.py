"""Pictures of attribution maps: colours, heat layers, overlays on the crop or the photo, colour bars.

Rendering is kept apart from computing (DESIGN.md, "Explanation methods"): every function here takes a
plain float array in aligned-crop coordinates and returns pixels or PNG bytes, so the web layer, the CLI
and the figure export draw a map identically, and a map can be re-rendered without re-running a network.

Colour conventions, chosen so that a clinician never has to read a legend to tell *direction* apart:

- Signed maps (positive = evidence for the target syndrome, negative = against) use the diverging
  ``RdBu_r`` on a scale symmetric around zero, so 0 is the colormap's neutral near-white centre, red is
  "for" and blue is "against". An asymmetric scale would move the neutral colour off zero and paint
  absent evidence as evidence.
- Magnitude maps (unsigned, >= 0) use the sequential ``inferno``: a diverging colormap on an unsigned map
  would suggest a sign that does not exist, so :class:`MapScale` refuses that combination.

The scale is a *robust* maximum (the 99.5th percentile of ``|map|``): gradient maps are heavy-tailed and
a handful of extreme pixels would otherwise push everything else into the neutral colour. Values beyond
the scale saturate at the colormap's ends.

Thread safety: nothing here touches pyplot or global matplotlib state. Colormaps are fetched from
``matplotlib.colormaps`` per call (the registry hands out copies), so concurrent requests share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from matplotlib import colormaps

from app.vision.geometry import compose
from app.vision.warp import warp_affine

__all__ = [
    "ALPHA_EXPONENT",
    "DIVERGING_CMAPS",
    "MAGNITUDE_CMAP",
    "ROBUST_PERCENTILE",
    "SIGNED_CMAP",
    "MapScale",
    "blend",
    "colorbar_png",
    "colorize",
    "encode_png",
    "heat_layer_size",
    "heat_png_crop",
    "heat_png_photo",
    "heat_rgba_photo",
    "map_scale",
    "overlay_image",
    "overlay_png",
]

#: Diverging, symmetric, with a near-white centre (RGB 247, 246, 246) that reads as "no evidence".
SIGNED_CMAP = "RdBu_r"
#: Sequential and perceptually uniform; dark at zero, so it is only ever shown with alpha by magnitude.
MAGNITUDE_CMAP = "inferno"
#: Percentile of ``|map|`` taken as the scale's end: robust to a few extreme pixels, saturates 0.5 %.
ROBUST_PERCENTILE = 99.5
#: Alpha curve exponent: ``alpha = min(1, |v| / s) ** ALPHA_EXPONENT`` (see :func:`colorize`).
ALPHA_EXPONENT = 0.5
#: Colormaps (and their reversals) that imply a sign; refused for magnitude maps.
DIVERGING_CMAPS: frozenset[str] = frozenset(
    name + suffix
    for name in (
        "RdBu", "coolwarm", "bwr", "seismic", "PiYG", "PRGn", "BrBG", "PuOr", "RdGy", "RdYlBu", "RdYlGn",
        "Spectral", "berlin", "managua", "vanimo",
    )
    for suffix in ("", "_r")
)  # fmt: skip

# Below this footprint coverage a warped pixel counts as outside the crop (bilinear edge weights).
_MIN_COVERAGE = 1e-3


@dataclass(frozen=True)
class MapScale:
    """How values map to colours: ``[vmin, vmax]`` onto the colormap ``cmap``.

    Signed scales are symmetric (``vmin == -vmax``) so that 0 lands on the colormap's centre; unsigned
    scales start at 0. ``vmax == 0`` is allowed and means "the map is all zero": everything renders as
    the neutral colour, fully transparent, and the UI can print "0" instead of an invented range.
    """

    vmin: float
    vmax: float
    cmap: str
    signed: bool

    def __post_init__(self) -> None:
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax)) or self.vmax < 0:
            raise ValueError(f"scale bounds must be finite with vmax >= 0, got [{self.vmin}, {self.vmax}]")
        if self.signed and self.vmin != -self.vmax:
            raise ValueError(f"a signed scale must be symmetric around 0, got [{self.vmin}, {self.vmax}]")
        if not self.signed and self.vmin != 0:
            raise ValueError(f"an unsigned scale must start at 0, got [{self.vmin}, {self.vmax}]")
        if self.cmap not in colormaps:
            raise ValueError(f"unknown colormap {self.cmap!r}")
        if not self.signed and self.cmap in DIVERGING_CMAPS:
            raise ValueError(f"magnitude maps must not use the diverging colormap {self.cmap!r}: it implies a sign")

    @property
    def span(self) -> float:
        """The scale's reference magnitude ``s`` (``vmax``); 0 for an all-zero map."""
        return self.vmax


def map_scale(values: np.ndarray, *, signed: bool) -> MapScale:
    """The colour scale for one map: ``±s`` (signed) or ``[0, s]`` (unsigned), ``s`` a robust maximum.

    ``s`` is the 99.5th percentile of ``|values|``. When that is 0 but the map is not (a sparse map, e.g.
    one occluded patch covering < 0.5 % of the pixels) the true maximum is used instead, so a sparse map
    is never drawn as blank. Non-finite values are ignored. An unsigned map with negative values is a
    caller error (a signed method passed as a magnitude) and is refused rather than silently clipped.
    """
    arr = _as_map(values)
    finite = arr[np.isfinite(arr)]
    if not signed and finite.size and float(finite.min()) < 0:
        raise ValueError(
            f"an unsigned (magnitude) map has negative values (min {float(finite.min()):.3g}); "
            "render it with signed=True"
        )
    magnitude = np.abs(finite)
    span = 0.0
    if magnitude.size:
        span = float(np.percentile(magnitude, ROBUST_PERCENTILE))
        if span <= 0:
            span = float(magnitude.max())
    if signed:
        return MapScale(vmin=-span if span else 0.0, vmax=span, cmap=SIGNED_CMAP, signed=True)
    return MapScale(vmin=0.0, vmax=span, cmap=MAGNITUDE_CMAP, signed=False)


def colorize(values: np.ndarray, scale: MapScale, *, alpha_by_magnitude: bool = True) -> np.ndarray:
    """RGBA uint8 (H, W, 4) colours of a map under ``scale``.

    Colour: signed ``v`` sits at ``0.5 + 0.5 * v / s`` on the colormap (0 -> centre, ``±s`` -> ends),
    unsigned at ``v / s``; beyond the scale it saturates. Non-finite values are treated as 0.

    Alpha (with ``alpha_by_magnitude``): ``alpha = 255 * min(1, |v| / s) ** 0.5``. Near-zero attribution
    is transparent, so the face shows through where a method says nothing. The square root rather than a
    linear ramp because the colour itself already fades towards the neutral centre: with both linear the
    tint's visibility would fall off quadratically and moderate evidence (half the scale) would look like
    almost none; with the root it grows about as ``(|v| / s) ** 1.5``. Without it alpha is 255
    everywhere (the plain colour image, e.g. for a standalone picture).
    """
    arr = _as_map(values)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    if scale.vmax > 0:
        ratio = arr / scale.vmax
        position = 0.5 + 0.5 * ratio if scale.signed else ratio
        magnitude = np.abs(ratio)
    else:  # all-zero map: everything neutral and, with alpha by magnitude, invisible
        position = np.full(arr.shape, 0.5 if scale.signed else 0.0)
        magnitude = np.zeros(arr.shape)
    rgba = np.array(colormaps[scale.cmap](np.clip(position, 0.0, 1.0), bytes=True), dtype=np.uint8)
    if alpha_by_magnitude:
        rgba[..., 3] = np.rint(255.0 * np.clip(magnitude, 0.0, 1.0) ** ALPHA_EXPONENT).astype(np.uint8)
    else:
        rgba[..., 3] = 255
    return rgba


def heat_png_crop(values: np.ndarray, scale: MapScale) -> bytes:
    """The map as an RGBA PNG heat layer in crop coordinates (alpha by magnitude).

    Meant to be stacked over the aligned crop in the browser, where CSS ``opacity`` sets the blend, so
    the user can change the opacity without a round trip.
    """
    return encode_png(colorize(values, scale))


def heat_layer_size(photo_size: tuple[int, int], max_side: int = 1024) -> tuple[int, int]:
    """(width, height) of the photo-space heat layer: the photo's aspect ratio, longest side <= max_side.

    Never upscaled: the browser stretches the layer over the photo's box anyway, and more pixels than
    the photo has would only cost bandwidth.
    """
    width, height = (int(v) for v in photo_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"photo_size must be positive (width, height), got {photo_size}")
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    factor = min(1.0, max_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


FEATHER_PX = 16.0  # crop px; 8 left a visible straight edge where a strong map (Grad-CAM) met the crop border


def edge_feather(shape: tuple[int, ...], width: float = FEATHER_PX) -> np.ndarray:
    """1 inside, easing (smoothstep) to 0 at the border of a (H, W) map over ``width`` pixels."""
    h, w = int(shape[0]), int(shape[1])
    ys = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5)
    xs = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5)
    t = np.clip(np.minimum(ys[:, None], xs[None, :]) / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def heat_rgba_photo(
    values: np.ndarray,
    scale: MapScale,
    *,
    inverse: np.ndarray,
    photo_size: tuple[int, int],
    max_side: int = 1024,
) -> np.ndarray:
    """The map warped back onto the photo as RGBA uint8, at :func:`heat_layer_size`; 0 alpha off the crop.

    ``inverse`` is the 2x3 crop -> photo matrix of the alignment. The map's *values* are warped (bilinear,
    with area prefiltering when the face is small in the layer, see ``app/vision/warp.py``) and coloured
    afterwards, rather than warping coloured pixels: interpolating colours would blend in the neutral
    colour of transparent neighbours and shift hues at the edges of a blob. A footprint mask is warped
    alongside; values are divided by it so the crop's border is not faded towards 0 twice, and alpha is
    multiplied by it so the crop's edge is anti-aliased and everything outside is exactly transparent.
    The layer's pixels are the photo's resampled with pixel centres aligned (as a browser scales an
    ``<img>``), so it lines up when stretched over the photo's box.
    """
    arr = _as_map(values)
    inverse = _as_affine(inverse, "inverse")
    out_w, out_h = heat_layer_size(photo_size, max_side)
    fx, fy = out_w / int(photo_size[0]), out_h / int(photo_size[1])
    photo_to_layer = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
    crop_to_layer = compose(photo_to_layer, inverse)
    clean = np.where(np.isfinite(arr), arr, 0.0)
    stack = np.dstack([clean, np.ones_like(clean), edge_feather(clean.shape)]).astype(np.float32)
    warped = warp_affine(stack, crop_to_layer, (out_w, out_h)).reshape(out_h, out_w, 3)
    coverage = np.clip(warped[..., 1].astype(np.float64), 0.0, 1.0)
    inside = coverage > _MIN_COVERAGE
    layer_values = np.zeros((out_h, out_w))
    np.divide(warped[..., 0], coverage, out=layer_values, where=inside)
    rgba = colorize(layer_values, scale)
    # alpha fades out over the crop's last FEATHER_PX pixels: on the photo the map ends softly instead of as a
    # hard-edged square where the aligned crop stops (the values themselves are not faded)
    alpha = np.where(inside, rgba[..., 3] * np.clip(warped[..., 2].astype(np.float64), 0.0, 1.0), 0.0)
    rgba[..., 3] = np.rint(alpha).astype(np.uint8)
    return rgba


def heat_png_photo(
    values: np.ndarray,
    scale: MapScale,
    *,
    inverse: np.ndarray,
    photo_size: tuple[int, int],
    max_side: int = 1024,
) -> bytes:
    """:func:`heat_rgba_photo` as PNG: a layer the browser stacks over the photo ``<img>`` in the same box."""
    return encode_png(heat_rgba_photo(values, scale, inverse=inverse, photo_size=photo_size, max_side=max_side))


def blend(base_rgb: np.ndarray, heat_rgba: np.ndarray, *, opacity: float = 0.6) -> np.ndarray:
    """``base * (1 - a) + colour * a`` with ``a = opacity * alpha / 255``, per pixel; uint8 RGB.

    Where the heat layer is transparent (near-zero attribution) the base comes out unchanged.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    base = _as_rgb(base_rgb, "base_rgb")
    if heat_rgba.shape != (*base.shape[:2], 4):
        raise ValueError(f"heat layer {heat_rgba.shape} does not match base {base.shape}")
    weight = opacity * heat_rgba[..., 3:4].astype(np.float64) / 255.0
    mixed = base.astype(np.float64) * (1.0 - weight) + heat_rgba[..., :3].astype(np.float64) * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def overlay_image(
    base_rgb: np.ndarray,
    values: np.ndarray,
    scale: MapScale,
    *,
    opacity: float = 0.6,
    inverse: np.ndarray | None = None,
    max_side: int = 1024,
) -> np.ndarray:
    """The map blended onto an image, uint8 RGB.

    With ``inverse`` None, ``base_rgb`` is the aligned crop and must have the map's shape. With the 2x3
    crop -> photo ``inverse``, ``base_rgb`` is the full photo: the map is warped back onto it and the
    result is reduced to :func:`heat_layer_size` (photo area-downsampled), since a full-resolution
    12-megapixel overlay would be slow to encode and no screen shows it.
    """
    base = _as_rgb(base_rgb, "base_rgb")
    if inverse is None:
        arr = _as_map(values)
        if base.shape[:2] != arr.shape:
            raise ValueError(f"crop {base.shape[:2]} and map {arr.shape} differ in size")
        return blend(base, colorize(arr, scale), opacity=opacity)
    height, width = base.shape[:2]
    heat = heat_rgba_photo(values, scale, inverse=inverse, photo_size=(width, height), max_side=max_side)
    out_h, out_w = heat.shape[:2]
    if (out_w, out_h) != (width, height):
        base = cv2.resize(base, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return blend(base, heat, opacity=opacity)


def overlay_png(
    base_rgb: np.ndarray,
    values: np.ndarray,
    scale: MapScale,
    *,
    opacity: float = 0.6,
    inverse: np.ndarray | None = None,
    max_side: int = 1024,
) -> bytes:
    """:func:`overlay_image` as PNG (the API's ``map.png``): one self-contained picture, no layering."""
    return encode_png(overlay_image(base_rgb, values, scale, opacity=opacity, inverse=inverse, max_side=max_side))


def colorbar_png(scale_or_cmap: MapScale | str, *, width: int = 256, height: int = 14) -> bytes:
    """A plain horizontal gradient strip of the colormap, opaque RGB, low end on the left.

    No numbers are drawn: the UI prints ``vmin`` / 0 / ``vmax`` as text beside it, which stays sharp,
    translatable and accessible. Column ``i`` shows the colour at ``i / (width - 1)``, so the end
    columns are exactly the colours of ``vmin`` and ``vmax``.
    """
    name = scale_or_cmap.cmap if isinstance(scale_or_cmap, MapScale) else str(scale_or_cmap)
    if name not in colormaps:
        raise ValueError(f"unknown colormap {name!r}")
    if width < 2 or height < 1:
        raise ValueError(f"colour bar must be at least 2x1 pixels, got {width}x{height}")
    row = np.array(colormaps[name](np.linspace(0.0, 1.0, width), bytes=True), dtype=np.uint8)[:, :3]
    return encode_png(np.ascontiguousarray(np.broadcast_to(row, (height, width, 3))))


def encode_png(rgb_or_rgba: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) image; deterministic.

    Floats are refused rather than guessed at (0..1 or 0..255?), which would silently render black.
    """
    image = np.asarray(rgb_or_rgba)
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        converted = image
    elif image.ndim == 3 and image.shape[2] == 3:
        converted = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        converted = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    else:
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("cannot encode an empty image")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(converted), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - OpenCV only fails on shapes refused above
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def _as_map(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"an attribution map must be a non-empty 2-D array, got shape {arr.shape}")
    return arr


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    return arr


def _as_affine(matrix: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.shape != (2, 3) or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a finite 2x3 affine matrix, got shape {arr.shape}")
    return arr
