"""check_detector, the kit's contract check: it must fail for each fault a plugin author can
make, say which, and report what it checked when it passes."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from pydantic import ConfigDict, Field

from inspector_core import CannotJudge, Detector, Finding, PluginConfig, View
from inspector_core.testing import check_detector


def spot_image(x: int = 40, y: int = 30) -> np.ndarray:
    image = np.full((90, 120), 100, np.uint8)
    image[y : y + 6, x : x + 6] = 255
    return image


class Brightest(Detector):
    """A correct detector: the brightest pixel's 6x6 neighbourhood, when it is saturated."""

    name = "brightest"
    kinds = ("brightest",)

    def inspect(self, view: View) -> list[Finding]:
        gray = view.gray
        y, x = np.unravel_index(int(np.argmax(gray)), gray.shape)
        if gray[y, x] < 250:
            return []
        h, w = gray.shape
        box = (int(x), int(y), min(6, w - int(x)), min(6, h - int(y)))
        return [Finding("brightest", 0.9, box, "saturated", size_px=6.0, measurements={"area_px": 36.0})]


def test_a_good_detector_passes_and_the_report_says_what_was_checked(tmp_path):
    report = check_detector(Brightest, images=[spot_image(), np.full((50, 60), 90, np.uint8)], tmp_path=tmp_path)
    assert report.images == 2 and len(report.variants) == 8 and report.inspections == 2 * 8 * 2
    # Only the first image has a spot: 8 variants of it, one finding each.
    assert report.findings == 8 and report.kinds == {"brightest": 8}
    text = str(report)
    assert "8 findings checked" in text and "non-contiguous" in text


def test_it_fails_when_its_images_give_nothing_to_check(tmp_path):
    flat = [np.full((50, 60), 90, np.uint8)]
    with pytest.raises(AssertionError, match="gave a finding.*were not checked; pass images="):
        check_detector(Brightest, images=flat, tmp_path=tmp_path)
    report = check_detector(Brightest, images=flat, tmp_path=tmp_path, require_findings=False)
    assert report.findings == 0


class NeedsConfig(PluginConfig):
    level: int = Field(description="grey level counted as saturated")


class Required(Brightest):
    name = "required"
    kinds = ("brightest",)
    Config = NeedsConfig


def test_a_config_with_required_fields_needs_config_and_the_unknown_key_check_still_tests_unknown_keys(tmp_path):
    with pytest.raises(AssertionError, match=r"required fields \(level\): pass check_detector\(Required, config="):
        check_detector(Required, images=[spot_image()], tmp_path=tmp_path)
    report = check_detector(Required, {"level": 250}, images=[spot_image()], tmp_path=tmp_path)
    assert report.config == {"level": 250} and "an unknown config key is refused as unknown" in report.checks

    class Lax(PluginConfig):
        model_config = ConfigDict(extra="allow")
        level: int = Field(description="required, so a bare unknown key would be refused as 'missing'")

    class Open(Brightest):
        name = "open"
        Config = Lax

    with pytest.raises(AssertionError, match="accepts an unknown key"):
        check_detector(Open, {"level": 1}, images=[spot_image()], tmp_path=tmp_path)


def test_a_bad_config_is_refused_as_the_host_would(tmp_path):
    with pytest.raises(AssertionError, match="refused by NeedsConfig"):
        check_detector(Required, {"level": "bright"}, images=[spot_image()], tmp_path=tmp_path)


class ReadsMemoryAsContiguous(Brightest):
    """The bug of a C binding handed ``image.ctypes.data``: it reads a ROI view's rows as if
    they were packed, i.e. other pixels."""

    name = "packed"

    def inspect(self, view: View) -> list[Finding]:
        img = view.gray
        ptr = img.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        packed = np.ctypeslib.as_array(ptr, shape=img.shape).copy()
        return super().inspect(View(packed, view.part_id, view.origin, view.calibration))


def test_a_detector_that_relies_on_contiguous_memory_is_caught(tmp_path):
    with pytest.raises(AssertionError, match="non-contiguous ROI view gives other findings"):
        check_detector(ReadsMemoryAsContiguous, images=[spot_image(60, 50)], tmp_path=tmp_path)


class GrayOnly(Brightest):
    name = "gray_only"

    def inspect(self, view: View) -> list[Finding]:
        h, w = view.image.shape  # a colour view has three dimensions
        return super().inspect(view)


def test_a_detector_that_only_takes_grayscale_fails_on_the_colour_variant(tmp_path):
    with pytest.raises(ValueError, match="too many values") as info:
        check_detector(GrayOnly, images=[spot_image()], tmp_path=tmp_path)
    assert any("colour frame" in note for note in info.value.__notes__)


class MmAlways(Brightest):
    name = "mm_always"

    def inspect(self, view: View) -> list[Finding]:
        return [
            Finding(f.kind, f.score, f.box, f.message, f.size_px, {"size_mm": (view.mm(6) or 0.0)})
            for f in super().inspect(view)
        ]


def test_mm_measurements_without_calibration_are_refused(tmp_path):
    with pytest.raises(AssertionError, match=r"mm measurements \['size_mm'\] without a calibration"):
        check_detector(MmAlways, images=[spot_image()], tmp_path=tmp_path)


class DarkIsUnjudgeable(Brightest):
    name = "dark"

    def inspect(self, view: View) -> list[Finding]:
        if view.gray.mean() < 20:
            raise CannotJudge("too dark")
        return super().inspect(view)


def test_cannot_judge_is_allowed_counted_and_must_be_deterministic(tmp_path):
    images = [spot_image(), np.zeros((40, 40), np.uint8)]
    report = check_detector(DarkIsUnjudgeable, images=images, tmp_path=tmp_path)
    assert report.cannot_judge == 8 and report.findings == 8

    class Flaky(Brightest):
        name = "flaky"
        calls = 0

        def inspect(self, view: View) -> list[Finding]:
            self.calls += 1
            if self.calls == 2:
                raise CannotJudge("only sometimes")
            return super().inspect(view)

    with pytest.raises(AssertionError, match="not deterministic: CannotJudge on one call"):
        check_detector(Flaky, images=images, tmp_path=tmp_path)


def test_an_undeclared_kind_and_a_box_outside_are_refused_with_the_variant(tmp_path):
    class Undeclared(Brightest):
        name = "undeclared"

        def inspect(self, view: View) -> list[Finding]:
            return [Finding("other", f.score, f.box, f.message) for f in super().inspect(view)]

    with pytest.raises(AssertionError, match=r"host refuses its result \(images\[0\], gray frame.*'other'"):
        check_detector(Undeclared, images=[spot_image()], tmp_path=tmp_path)

    class Outside(Brightest):
        name = "outside"

        def inspect(self, view: View) -> list[Finding]:
            h, w = view.gray.shape
            return [Finding("brightest", 0.9, (w - 3, 0, 10, 10), "half outside")]

    with pytest.raises(AssertionError, match="outside the 120x90 view"):
        check_detector(Outside, images=[spot_image()], tmp_path=tmp_path)


def test_images_must_be_frames(tmp_path):
    with pytest.raises(TypeError, match=r"images\[0\]: a frame is a uint8 array.*got float64"):
        check_detector(Brightest, images=[np.zeros((10, 10))], tmp_path=tmp_path)
