"""The anomaly step's area downscale (``preprocess.area_resize``: large mono frames through their
integral image, smaller mono images by weighted rows) gives OpenCV's INTER_AREA values up to
rounding ties, so models trained before it see the same input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from inspector_anomaly.preprocess import (
    HALVING_MIN_PX,
    area_resize,
    downscale,
    prepare,
    prepare_tiles,
    to_rgb,
    to_tensor,
)


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (h, w), dtype=np.uint8)
    smooth = cv2.GaussianBlur(texture, (0, 0), 2.5)
    return np.where(rng.random((h, w)) < 0.5, texture, smooth).astype(np.uint8)


def assert_inter_area(image: np.ndarray, size: tuple[int, int]) -> None:
    """``area_resize`` gives OpenCV's INTER_AREA values but for rounding ties."""
    want = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA).astype(np.int16)
    got = area_resize(image, size)
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want)
    assert diff.max() <= 1  # rounding ties only
    assert (diff > 0).mean() < 1e-3


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [
        (2048, 2448, (256, 214)),  # the line's 5 MP mono frame, letterboxed to 256
        (2048, 2448, (256, 256)),  # stretch
        (1944, 2592, (255, 191)),
        (1500, 1500, (97, 97)),
    ],
)
def test_area_resize_matches_inter_area(h: int, w: int, size: tuple[int, int]) -> None:
    image = _frame(h, w, seed=h + w)
    assert_inter_area(image, size)


def test_area_resize_of_a_roi_view_and_the_prepared_tensor() -> None:
    frame = _frame(2200, 2600, seed=3)
    view = frame[50:2098, 60:2508]  # not contiguous: a station's ROI is a view into the frame
    assert not view.flags["C_CONTIGUOUS"]
    want = cv2.resize(np.ascontiguousarray(view), (256, 214), interpolation=cv2.INTER_AREA)
    assert np.abs(area_resize(view, (256, 214)).astype(np.int16) - want).max() <= 1
    p = prepare(view, (256, 256), "letterbox", "none")
    assert p.valid == (0, 21, 256, 214)
    rgb = (p.tensor[0, :, 21 : 21 + 214, :] * 255).round()
    assert np.abs(rgb - want[None].astype(np.float32)).max() <= 1


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [
        (480, 680, (256, 181)),  # a mono ROI, letterboxed to 256
        (480, 680, (256, 256)),  # stretch: taller than a letterbox
        (306, 256, (256, 214)),  # the last step of `halving` on a 5 MP frame
        (400, 630, (256, 163)),  # a magnetic-tile photograph's size
        (300, 300, (300, 97)),  # one side kept as it is
        (1999, 1000, (97, 255)),  # just under AREA_BY_INTEGRAL_MIN_PX
    ],
)
def test_small_mono_images_by_weighted_rows_match_inter_area(h: int, w: int, size: tuple[int, int]) -> None:
    image = _frame(h, w, seed=h * w)
    assert_inter_area(image, size)
    # a ROI is a view into its frame, not contiguous: the same values
    view = _frame(h + 20, w + 30, seed=h * w)[7 : 7 + h, 11 : 11 + w]
    assert not view.flags["C_CONTIGUOUS"]
    assert_inter_area(view, size)


def test_flat_and_extreme_images_keep_their_values() -> None:
    """Weights summing to one in float32: a flat image stays flat (no 254 from 255), 0 stays 0."""
    for value in (0, 1, 128, 254, 255):
        flat = np.full((480, 680), value, dtype=np.uint8)
        assert np.array_equal(area_resize(flat, (256, 181)), np.full((181, 256), value, dtype=np.uint8))


def test_colour_and_whole_factor_images_go_through_opencv() -> None:
    for image, size in (
        (cv2.cvtColor(_frame(480, 680, 1), cv2.COLOR_GRAY2BGR), (256, 181)),  # small colour
        (_frame(2048, 2048, 2), (256, 256)),  # whole factor
        (_frame(480, 680, 3), (340, 240)),  # whole factor, small
        (cv2.cvtColor(_frame(2048, 2448, 4), cv2.COLOR_GRAY2BGR), (256, 214)),  # colour
    ):
        want = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        assert np.array_equal(area_resize(image, size), want)


@pytest.mark.parametrize("kind", ["gray", "gray with a channel axis", "bgr"])
def test_to_tensor_gives_the_rgb_tensor_of_to_rgb(kind: str) -> None:
    gray = _frame(181, 256, seed=7)
    bgr = _frame(181, 768, 8).reshape(181, 256, 3)
    image = {"gray": gray, "gray with a channel axis": gray[:, :, None], "bgr": bgr}[kind]
    want = to_rgb(image).transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1.0 / 255.0)
    got = to_tensor(image)
    assert got.shape == (1, 3, 181, 256) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, want)  # bit for bit: models trained before see the same input


def test_to_tensor_refuses_what_to_rgb_refuses() -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((8, 8), dtype=np.float32))


def _halved(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``halving`` written out from OpenCV calls: 2 x 2 means while twice the target, then area."""
    while image.shape[1] >= 2 * size[0] and image.shape[0] >= 2 * size[1]:
        h, w = image.shape[:2]
        image = cv2.resize(image[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [
        (2048, 2448, (256, 214)),  # the line's 5 MP frame, letterboxed: three halvings then area
        (2047, 2449, (256, 214)),  # odd sides: the last row / column dropped before a halving
        (1944, 2592, (640, 480)),  # one halving only
    ],
)
def test_halving_on_a_large_frame_is_an_area_average_near_exact_area(h: int, w: int, size: tuple[int, int]) -> None:
    noisy = _frame(h, w, seed=h * w)  # texture at the scale of one pixel: the methods differ most here
    smooth = cv2.GaussianBlur(noisy, (0, 0), 8)
    for image in (noisy, smooth):
        got = downscale(image, size, "halving")
        assert got.shape == (size[1], size[0]) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, _halved(image, size))
        exact = area_resize(image, size).astype(np.float64)
        assert abs(got.mean() - exact.mean()) < 0.6  # each halving rounds: a bias under half a grey level
        assert not np.array_equal(got, exact)  # another method, not exact area
    diff = np.abs(got.astype(np.int16) - exact)
    assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


def test_halving_leaves_images_under_2_mp_as_area_and_area_stays_exact() -> None:
    small = _frame(1150, 1500, seed=5)  # the synthetic large plates' size, under 2 MP (real data: at most 640 x 640)
    assert small.size < HALVING_MIN_PX
    np.testing.assert_array_equal(downscale(small, (256, 196), "halving"), area_resize(small, (256, 196)))
    large = _frame(2048, 2448, seed=6)
    np.testing.assert_array_equal(downscale(large, (256, 214), "area"), area_resize(large, (256, 214)))
    with pytest.raises(ValueError, match="unknown downscale 'bilinear'"):
        downscale(small, (256, 196), "bilinear")  # type: ignore[arg-type]


def test_prepare_and_tiles_shrink_by_the_method_they_are_given() -> None:
    frame = _frame(2048, 2448, seed=7)
    halved = prepare(frame, (256, 256), "letterbox", "none", "halving")
    exact = prepare(frame, (256, 256), "letterbox", "none", "area")
    assert halved.valid == exact.valid == (0, 21, 256, 214)
    x, y, w, h = halved.valid
    want = _halved(frame, (256, 214))
    np.testing.assert_array_equal(np.rint(halved.tensor[0, 0, y : y + h, x : x + w] * 255).astype(np.uint8), want)
    assert not np.array_equal(halved.tensor, exact.tensor)
    tiles, _, (sh, sw) = prepare_tiles(frame, (256, 256), 0.25, 0, "none", "halving")
    assert (sh, sw) == (512, 612)
    np.testing.assert_array_equal(
        np.rint(tiles[0].tensor[0, 0] * 255).astype(np.uint8), _halved(frame, (612, 512))[:256, :256]
    )
