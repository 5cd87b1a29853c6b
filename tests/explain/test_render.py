"""Colours, scales, heat layers and the warp back onto the photo."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from app.explain.render import (
    ALPHA_EXPONENT,
    DIVERGING_CMAPS,
    FEATHER_PX,
    MAGNITUDE_CMAP,
    SIGNED_CMAP,
    MapScale,
    colorbar_png,
    colorize,
    encode_png,
    heat_layer_size,
    heat_png_crop,
    heat_png_photo,
    heat_rgba_photo,
    map_scale,
    overlay_image,
    overlay_png,
)
from app.vision.geometry import apply_matrix, compose, invert_affine, rotation_about


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(png)))


def cmap_rgba(name: str, position: float) -> np.ndarray:
    return np.array(colormaps[name](position, bytes=True), dtype=np.uint8)


def photo_to_crop(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """A similarity photo -> crop (as align_face makes): rotate about the origin, scale, translate."""
    matrix = rotation_about((0.0, 0.0), angle_deg)
    matrix[:, :2] *= scale
    matrix[:, 2] = shift
    return matrix


def test_colormap_choices() -> None:
    assert SIGNED_CMAP in DIVERGING_CMAPS
    assert MAGNITUDE_CMAP not in DIVERGING_CMAPS
    centre = cmap_rgba(SIGNED_CMAP, 0.5)
    assert (centre[:3] > 240).all(), "the signed colormap's centre must read as neutral (near white)"


def test_signed_zero_is_the_centre_and_plus_minus_s_are_the_ends() -> None:
    values = np.zeros((112, 112), np.float32)
    values[0, 0], values[0, 1], values[0, 2], values[0, 3] = 2.0, -2.0, 5.0, -5.0
    values[1:, :] = np.linspace(-2.0, 2.0, 111 * 112).reshape(111, 112)
    scale = map_scale(values, signed=True)
    assert scale.signed and scale.cmap == SIGNED_CMAP
    assert scale.vmin == -scale.vmax
    assert 1.9 < scale.vmax < 2.0  # robust: the ±5 outliers do not set the scale

    probe = np.array([[0.0, scale.vmax, -scale.vmax, 10 * scale.vmax, -10 * scale.vmax]])
    rgba = colorize(probe, scale)
    np.testing.assert_array_equal(rgba[0, 0, :3], cmap_rgba(SIGNED_CMAP, 0.5)[:3])
    np.testing.assert_array_equal(rgba[0, 1, :3], cmap_rgba(SIGNED_CMAP, 1.0)[:3])
    np.testing.assert_array_equal(rgba[0, 2, :3], cmap_rgba(SIGNED_CMAP, 0.0)[:3])
    np.testing.assert_array_equal(rgba[0, 3], rgba[0, 1])  # saturates beyond the scale
    np.testing.assert_array_equal(rgba[0, 4], rgba[0, 2])
    assert rgba[0, 1, 0] > rgba[0, 1, 2] and rgba[0, 2, 2] > rgba[0, 2, 0], "positive red, negative blue"


def test_alpha_follows_the_stated_curve() -> None:
    scale = MapScale(vmin=-4.0, vmax=4.0, cmap=SIGNED_CMAP, signed=True)
    rgba = colorize(np.array([[0.0, 1.0, -1.0, 4.0, -8.0, 0.04]]), scale)
    expected = np.rint(255 * np.array([0.0, 0.25, 0.25, 1.0, 1.0, 0.01]) ** ALPHA_EXPONENT)
    np.testing.assert_array_equal(rgba[0, :, 3], expected)
    assert ALPHA_EXPONENT == 0.5
    assert (colorize(np.array([[0.0, 1.0]]), scale, alpha_by_magnitude=False)[..., 3] == 255).all()


def test_magnitude_maps_use_the_sequential_colormap() -> None:
    values = np.abs(np.random.default_rng(3).normal(size=(112, 112))).astype(np.float32)
    scale = map_scale(values, signed=False)
    assert not scale.signed and scale.cmap == MAGNITUDE_CMAP and scale.cmap not in DIVERGING_CMAPS
    assert scale.vmin == 0.0 and scale.vmax == pytest.approx(np.percentile(values, 99.5))
    rgba = colorize(np.array([[0.0, scale.vmax / 2, scale.vmax]]), scale)
    for i, position in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_array_equal(rgba[0, i, :3], cmap_rgba(MAGNITUDE_CMAP, position)[:3])
    signed_lut = np.array(colormaps[SIGNED_CMAP](np.linspace(0, 1, 256), bytes=True))[:, :3]
    assert not (signed_lut == rgba[0, 2, :3]).all(axis=1).any()


def test_an_unsigned_scale_refuses_a_diverging_colormap_and_negative_values() -> None:
    with pytest.raises(ValueError, match="diverging"):
        MapScale(vmin=0.0, vmax=1.0, cmap="RdBu_r", signed=False)
    with pytest.raises(ValueError, match="symmetric"):
        MapScale(vmin=-1.0, vmax=2.0, cmap=SIGNED_CMAP, signed=True)
    with pytest.raises(ValueError, match="negative"):
        map_scale(np.array([[0.5, -0.1]]), signed=False)


def test_all_zero_and_non_finite_maps_do_not_divide_by_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for signed in (True, False):
            scale = map_scale(np.zeros((112, 112), np.float32), signed=signed)
            assert scale.vmin == 0.0 and scale.vmax == 0.0
            rgba = colorize(np.zeros((112, 112), np.float32), scale)
            assert (rgba[..., 3] == 0).all()
            centre = 0.5 if signed else 0.0
            assert (rgba[..., :3] == cmap_rgba(scale.cmap, centre)[:3]).all()
            heat = heat_rgba_photo(np.zeros((112, 112)), scale, inverse=np.eye(2, 3) * 2, photo_size=(300, 200))
            assert (heat[..., 3] == 0).all()
        values = np.full((4, 4), np.nan)
        values[0, 0], values[1, 1] = 1.0, np.inf
        scale = map_scale(values, signed=True)
        assert scale.vmax == 1.0  # sparse map: the max, not the (zero) percentile of a mostly-empty map
        rgba = colorize(values, scale)
        assert rgba[0, 0, 3] == 255 and rgba[1, 1, 3] == 0 and rgba[3, 3, 3] == 0


def test_sparse_map_uses_its_maximum() -> None:
    values = np.zeros((112, 112), np.float32)
    values[50, 60] = -3.0  # one pixel: the 99.5th percentile of |map| is 0
    scale = map_scale(values, signed=True)
    assert (scale.vmin, scale.vmax) == (-3.0, 3.0)


def test_heat_png_crop_is_rgba_at_map_size() -> None:
    values = np.random.default_rng(0).normal(size=(112, 112)).astype(np.float32)
    scale = map_scale(values, signed=True)
    image = decode(heat_png_crop(values, scale))
    assert image.shape == (112, 112, 4)
    np.testing.assert_array_equal(image, colorize(values, scale))


def test_heat_layer_size_keeps_aspect_and_caps_the_long_side() -> None:
    assert heat_layer_size((4000, 3000)) == (1024, 768)
    assert heat_layer_size((1000, 3000), max_side=600) == (200, 600)
    assert heat_layer_size((640, 480)) == (640, 480)  # never upscaled
    with pytest.raises(ValueError):
        heat_layer_size((0, 10))


@pytest.mark.parametrize(
    ("crop_scale", "photo_size", "max_side"),
    [
        (0.5, (1600, 1200), 1024),  # face 224 px in the photo, layer shrunk 0.64: crop magnified 1.28x
        (2.0, (2048, 1536), 1024),  # face 56 px, layer shrunk 0.5: crop reduced 0.25x (prefiltered path)
        (0.25, (900, 1400), 2000),  # portrait photo, no downscale
    ],
)
def test_warp_back_puts_a_blob_at_the_inverse_transformed_point(
    crop_scale: float, photo_size: tuple[int, int], max_side: int
) -> None:
    matrix = photo_to_crop(crop_scale, 20.0, (-150.0 * crop_scale, -40.0 * crop_scale))
    matrix[:, 2] += 56.0 - apply_matrix(matrix, [[photo_size[0] / 2, photo_size[1] / 2]])[0]  # face mid-photo
    inverse = invert_affine(matrix)
    blob_x, blob_y = 38.0, 71.0  # off-centre, so a wrong rotation, flip or shift moves it
    yy, xx = np.mgrid[0:112, 0:112]
    values = np.exp(-((xx - blob_x) ** 2 + (yy - blob_y) ** 2) / (2 * 3.0**2)).astype(np.float32)
    values[values < 1e-3] = 0.0
    scale = map_scale(values, signed=True)

    layer = decode(heat_png_photo(values, scale, inverse=inverse, photo_size=photo_size, max_side=max_side))
    out_w, out_h = heat_layer_size(photo_size, max_side)
    assert layer.shape == (out_h, out_w, 4)
    assert abs(out_w / out_h - photo_size[0] / photo_size[1]) < 2 / min(out_w, out_h)

    photo_x, photo_y = apply_matrix(inverse, [[blob_x, blob_y]])[0]
    fx, fy = out_w / photo_size[0], out_h / photo_size[1]
    expected = np.array([(photo_x + 0.5) * fx - 0.5, (photo_y + 0.5) * fy - 0.5])
    alpha = layer[..., 3].astype(np.float64)
    assert alpha.sum() > 0
    ly, lx = np.mgrid[0:out_h, 0:out_w]
    centroid = np.array([(alpha * lx).sum(), (alpha * ly).sum()]) / alpha.sum()
    np.testing.assert_allclose(centroid, expected, atol=1.0)
    column, row = np.rint(expected).astype(int)
    assert alpha[row, column] == 255  # the blob's centre is its maximum: saturated at the scale's end


@pytest.mark.parametrize(("crop_scale", "margin"), [(0.5, 1.0), (2.0, 8.0)])
def test_outside_the_crop_footprint_is_transparent(crop_scale: float, margin: float) -> None:
    photo_size = (1200, 900)
    matrix = photo_to_crop(crop_scale, -33.0, (0.0, 0.0))
    matrix[:, 2] += 56.0 - apply_matrix(matrix, [[500.0, 400.0]])[0]
    inverse = invert_affine(matrix)
    values = np.ones((112, 112), np.float32)  # every crop pixel at full scale: alpha 255 inside
    layer = heat_rgba_photo(values, map_scale(values, signed=False), inverse=inverse, photo_size=photo_size)
    out_w, out_h = layer.shape[1], layer.shape[0]
    fx, fy = out_w / photo_size[0], out_h / photo_size[1]
    photo_to_layer = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
    layer_to_crop = invert_affine(compose(photo_to_layer, inverse))
    ly, lx = np.mgrid[0:out_h, 0:out_w]
    crop_xy = apply_matrix(layer_to_crop, np.stack([lx.ravel(), ly.ravel()], axis=1)).reshape(out_h, out_w, 2)
    low, high = crop_xy.min(axis=2), crop_xy.max(axis=2)
    outside = (low < -margin) | (high > 111 + margin)
    inside = (low > FEATHER_PX + margin) & (high < 111 - FEATHER_PX - margin)
    assert outside.any() and inside.any()
    assert (layer[..., 3][outside] == 0).all()
    assert (layer[..., 3][inside] == 255).all()
    # the edge is soft, not a hard-edged square: alpha eases from ~0 at the crop's border to full FEATHER_PX in
    if crop_scale < 1:  # magnified crop: the fade is resolved pixel by pixel
        depth = np.minimum(low, 111 - high)  # how far inside the crop a layer pixel lies (crop pixels)
        rim, middle = (depth > 0) & (depth < 1.0), np.abs(depth - FEATHER_PX / 2) < 0.5  # half-way: about 50%
        assert rim.any() and middle.any()
        assert layer[..., 3][rim].max() < 0.15 * 255
        assert 0.25 * 255 < np.median(layer[..., 3][middle]) < 0.9 * 255


def test_overlay_on_crop_blends_by_alpha_and_leaves_zero_attribution_untouched() -> None:
    rng = np.random.default_rng(5)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    values = np.zeros((112, 112), np.float32)
    values[10:20, 30:40] = 1.0
    values[60:70, 30:40] = -1.0
    scale = map_scale(values, signed=True)
    image = decode(overlay_png(crop, values, scale, opacity=0.6))
    assert image.shape == (112, 112, 3)
    np.testing.assert_array_equal(image[values == 0], crop[values == 0])
    red = cmap_rgba(SIGNED_CMAP, 1.0)[:3].astype(np.float64)
    expected = np.rint(0.4 * crop[15, 35] + 0.6 * red)
    np.testing.assert_array_equal(image[15, 35], expected)
    with pytest.raises(ValueError):
        overlay_png(crop[:100], values, scale)


def test_overlay_on_photo_has_the_layer_size() -> None:
    photo = np.full((1500, 2000, 3), 128, np.uint8)
    matrix = photo_to_crop(0.3, 10.0, (0.0, 0.0))
    matrix[:, 2] += 56.0 - apply_matrix(matrix, [[1000.0, 700.0]])[0]
    values = np.random.default_rng(1).normal(size=(112, 112)).astype(np.float32)
    scale = map_scale(values, signed=True)
    image = decode(overlay_png(photo, values, scale, inverse=invert_affine(matrix)))
    assert image.shape == (768, 1024, 3)
    assert (image[0, 0] == 128).all()  # far outside the face: the photo, unchanged
    assert (image != 128).any()
    small = overlay_image(photo[:300, :400], values, scale, inverse=invert_affine(matrix), max_side=1024)
    assert small.shape == (300, 400, 3)


def test_colorbar_is_a_gradient_with_the_scale_ends() -> None:
    scale = MapScale(vmin=-1.0, vmax=1.0, cmap=SIGNED_CMAP, signed=True)
    strip = decode(colorbar_png(scale, width=101, height=9))
    assert strip.shape == (9, 101, 3)
    np.testing.assert_array_equal(strip[4, 0], cmap_rgba(SIGNED_CMAP, 0.0)[:3])
    np.testing.assert_array_equal(strip[4, 100], cmap_rgba(SIGNED_CMAP, 1.0)[:3])
    np.testing.assert_array_equal(strip[4, 50], cmap_rgba(SIGNED_CMAP, 0.5)[:3])
    assert (strip == strip[:1]).all()  # every row the same
    assert decode(colorbar_png(MAGNITUDE_CMAP)).shape == (14, 256, 3)
    with pytest.raises(ValueError):
        colorbar_png("no-such-map")


def test_encode_png_round_trips_and_refuses_floats() -> None:
    rng = np.random.default_rng(2)
    for shape in ((5, 7), (5, 7, 3), (5, 7, 4)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(decode(encode_png(image)), image)
        assert encode_png(image) == encode_png(image.copy())
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), np.uint8))
