"""The pytest kit for plugin authors (and for Inspector's own tests).

Install it with the host's ``kit`` extra (``pip install "inspector[kit]"``: pytest, and copier
for ``inspector plugin new``). pytest then loads this module by itself (entry point
``pytest11``, name ``inspector``; ``-p no:inspector`` switches it off) and offers the fixtures
``inspector_host`` and ``inspector_station``. Everything here tests a plugin that is **not
installed**: register its module, as pytest's ``pytester`` or pluggy's ``register`` do:

    import my_plugin
    from my_plugin.detector import Glare
    from inspector_core.testing import check_detector

    def test_conforms():
        report = check_detector(Glare, {"threshold": 240}, images=[good, bad])
        assert report.findings > 0                       # what it checked, see DetectorCheck

    def test_in_a_station(inspector_host):
        inspector_host.register(my_plugin)
        result = inspector_host.run({"steps": [{"detector": "glare"}]}, images={"good": good, "bad": bad})
        assert {i.part_id: i.verdict for i in result.inspections()} == {"good": "PASS", "bad": "FAIL"}

``run_station`` (and `Host.run`) runs a real station, the same runtime as ``inspector
run``, on a SQLite store in ``tmp_path``, and reads back what it recorded as
`StoredInspection` objects whose attributes are the columns of ``docs/schema.md``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from inspector_core.contract import (
    Calibration,
    CannotJudge,
    Detector,
    Frame,
    FrameSource,
    PluginConfig,
    SourceContext,
    View,
)
from inspector_core.hookspecs import hookimpl
from inspector_core.plugins import GROUP, Registry, load
from inspector_core.runtime.config import Step, load_station
from inspector_core.runtime.station import StationRuntime, Tally
from inspector_core.runtime.steps import FindingError, check_findings
from inspector_core.store import Store, schema
from inspector_core.store.view_records import InspectionView

__all__ = [
    "DetectorCheck",
    "Host",
    "StationResult",
    "StoredCrop",
    "StoredDefect",
    "StoredEvent",
    "StoredInspection",
    "StoredStepResult",
    "StoredView",
    "check_detector",
    "run_station",
]

Image = np.ndarray
Images = Sequence[Image] | Mapping[str, Image]


# ---------------------------------------------------------------------------- what a run stored


def _columns(cls: type, row: Any, **extra: Any) -> Any:
    """A ``Stored*`` object from an ORM row: every dataclass field read from the column of the same name."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in extra]
    return cls(**{n: getattr(row, n) for n in names}, **extra)


@dataclasses.dataclass(frozen=True)
class StoredCrop:
    """A row of ``crops``: the evidence of one defect. ``data`` is the encoded image."""

    defect_id: int
    inspection_id: int
    format: str
    width: int
    height: int
    x: int
    y: int
    scale: float
    data: bytes

    def image(self) -> np.ndarray:
        """The decoded crop (uint8, BGR or grayscale as it was stored)."""
        import cv2

        out = cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if out is None:
            raise ValueError(f"crop of defect {self.defect_id}: cannot decode its {self.format} data")
        return out


@dataclasses.dataclass(frozen=True)
class StoredDefect:
    """A row of ``defects``: one finding as stored (box in frame pixels), with its ``crop``
    (the row of ``crops`` for it, ``None`` when the crop policy saved none)."""

    id: int
    inspection_id: int
    step: str
    detector: str
    kind: str
    score: float
    failed: bool
    x: int
    y: int
    w: int
    h: int
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, Any]
    message: str
    crop: StoredCrop | None
    view: str | None = None
    """The view of the part the finding is on (its box is in that view's frame); ``None``: a
    single-view station (docs/views.md)."""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` in frame pixels."""
        return (self.x, self.y, self.w, self.h)


@dataclasses.dataclass(frozen=True)
class StoredStepResult:
    """A row of ``step_results``: one step's outcome for one part. ``status`` is ``ok``,
    ``error`` (the detector raised), ``cannot_judge`` (it raised `CannotJudge`) or
    ``timeout`` (over its budget)."""

    inspection_id: int
    step_index: int
    step: str
    detector: str
    status: str
    score: float | None
    latency_ms: float | None
    n_findings: int
    error: str | None
    view: str | None = None
    """The view the step looked at; ``None``: a single-view station."""


@dataclasses.dataclass(frozen=True)
class StoredView:
    """A row of ``inspection_views``: one view of a multi-view part (docs/views.md). ``status`` is
    ``ok``, ``missing`` (no frame by the join's deadline; ``error`` says why) or ``error``."""

    view: str
    status: str
    captured_at: datetime | None
    source_meta: dict[str, Any] | None
    error: str | None
    note: str | None
    evidence_x: int | None
    width: int | None
    height: int | None


@dataclasses.dataclass(frozen=True)
class StoredInspection:
    """A row of ``inspections`` (one part's verdict), with its ``step_results`` (in step order)
    and its ``defects`` (every stored finding, failed or not)."""

    id: int
    uid: str
    station_id: int
    run_id: int
    seq: int
    part_id: str
    captured_at: datetime
    decided_at: datetime
    verdict: str
    latency_ms: float | None
    error: str | None
    error_step: str | None
    n_defects: int
    source_meta: dict[str, Any] | None
    first_of_part: bool
    step_results: list[StoredStepResult]
    defects: list[StoredDefect]
    recipe: str | None = None
    """The recipe the part was inspected under (docs/recipes.md); ``None``: the station has none."""
    recipe_hash: str | None = None
    views: list[StoredView] = dataclasses.field(default_factory=list)
    """The part's views in the order declared (``inspection_views``); empty for a single-view station."""

    @property
    def steps(self) -> list[StoredStepResult]:
        """The earlier name of `step_results` (kept for existing tests)."""
        return self.step_results

    def failed_defects(self) -> list[StoredDefect]:
        """The defects that counted in the verdict (``failed`` true)."""
        return [d for d in self.defects if d.failed]


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """A row of ``events``: something that happened to the run besides verdicts."""

    at: datetime
    kind: str
    message: str


@dataclasses.dataclass
class StationResult:
    """What one station run recorded. Read it with `inspections`, `verdicts` and
    `events`; `session` opens the store itself for anything else."""

    station_file: Path
    db_url: str
    tally: Tally
    """The runtime's own counts (``tally.counts()``: verdict -> parts)."""
    run_id: int
    registry: Registry | None = None
    """The plugins the station ran with."""

    def session(self) -> Session:
        """A SQLAlchemy session on the run's store (the tables of ``docs/schema.md``)."""
        return Session(Store(self.db_url).engine)

    def inspections(self) -> list[StoredInspection]:
        """Every inspection of this run, in capture order, with its step results, defects and crops."""
        with self.session() as s:
            rows = s.scalars(
                select(schema.Inspection)
                .where(schema.Inspection.run_id == self.run_id)
                .order_by(schema.Inspection.seq)
                .options(
                    selectinload(schema.Inspection.steps),
                    selectinload(schema.Inspection.defects).selectinload(schema.Defect.crop),
                )
            ).all()
            views: dict[int, list[StoredView]] = {}
            if rows:
                for v in s.scalars(
                    select(InspectionView)
                    .where(InspectionView.inspection_id.in_([r.id for r in rows]))
                    .order_by(InspectionView.id)
                ):
                    views.setdefault(v.inspection_id, []).append(_columns(StoredView, v))
            return [
                _columns(
                    StoredInspection,
                    r,
                    views=views.get(r.id, []),
                    step_results=[_columns(StoredStepResult, sr) for sr in r.steps],
                    defects=[
                        _columns(StoredDefect, d, crop=None if d.crop is None else _columns(StoredCrop, d.crop))
                        for d in r.defects
                    ],
                )
                for r in rows
            ]

    def verdicts(self) -> Counter[str]:
        """Parts per verdict (``PASS``, ``FAIL``, ``ERROR``, ``NOT_INSPECTED``), as stored."""
        return Counter(i.verdict for i in self.inspections())

    def events(self) -> list[StoredEvent]:
        """The run's events (``source_empty``, ``camera_gap``, ``sink_failing``, ...), in order."""
        with self.session() as s:
            rows = s.scalars(
                select(schema.Event).where(schema.Event.run_id == self.run_id).order_by(schema.Event.id)
            ).all()
            return [_columns(StoredEvent, e) for e in rows]


# ---------------------------------------------------------------------------- the kit's own source


class KitImagesConfig(PluginConfig):
    path: str = Field(description="folder of the images run_station wrote (NNNNNN.npy and parts.json)")


class KitImages(FrameSource):
    """The frame source of `run_station`'s ``images=``: the given arrays, unchanged, in order."""

    name = "kit_images"
    Config = KitImagesConfig

    def __init__(self, config: PluginConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, KitImagesConfig)
        self.folder = context.station_dir / config.path

    def frames(self) -> Iterator[Frame]:
        part_ids = json.loads((self.folder / "parts.json").read_text())
        for i, part_id in enumerate(part_ids):
            image = np.load(self.folder / f"{i:06d}.npy", allow_pickle=False)
            yield Frame(part_id, image, datetime.now(UTC), {"kit_index": i})


class _KitPlugin:
    """Registers the kit's source in every host the kit builds."""

    @staticmethod
    @hookimpl
    def inspector_register_sources(register: Any) -> None:
        register(KitImages)


KIT_PLUGIN = "inspector-kit"


def _named(plugin: Any) -> tuple[str, Any]:
    if isinstance(plugin, tuple) and len(plugin) == 2 and isinstance(plugin[0], str):
        return plugin
    name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return name, plugin


def host_registry(plugins: Iterable[Any] = (), *, installed: bool = False) -> Registry:
    """A registry with ``plugins`` (modules, classes or objects with ``@hookimpl`` functions, or
    ``(name, plugin)`` pairs) registered as they are, not installed, plus the kit's
    ``kit_images`` source. ``installed=True`` loads the installed plugins too, except those whose
    entry point names one of the given modules (an editable install of the plugin under test).

    Raises ``AssertionError`` naming the plugin when a given plugin fails to register (a
    misspelt hook, a broken detector class)."""
    given = [_named(p) for p in plugins]
    entry_points: list[md.EntryPoint] = []
    if installed:
        mine = {name for name, _ in given}
        entry_points = [ep for ep in md.entry_points(group=GROUP) if ep.value.split(":")[0] not in mine]
    reg = load(entry_points=entry_points, extra=[(KIT_PLUGIN, _KitPlugin), *given])
    broken = [f"{name}: {reg.plugins[name].error}" for name, _ in given if reg.plugins[name].error]
    assert not broken, "plugins that did not register: " + "; ".join(broken)
    return reg


def _write_images(images: Images, folder: Path) -> None:
    if isinstance(images, Mapping):
        items = list(images.items())
    else:
        items = [(f"part-{i:03d}", im) for i, im in enumerate(images)]
    assert items, "images: give at least one image"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, (part_id, image) in enumerate(items):
        _check_image(f"images[{part_id!r}]", image)
        np.save(folder / f"{i:06d}.npy", np.ascontiguousarray(image), allow_pickle=False)
    (folder / "parts.json").write_text(json.dumps([str(p) for p, _ in items]))


def _check_image(where: str, image: Any) -> None:
    ok = (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
        and image.size > 0
    )
    if not ok:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"{where}: a frame is a uint8 array, (H, W) grayscale or (H, W, 3) BGR (got {what})")


# ---------------------------------------------------------------------------- a station run


def run_station(
    config: dict[str, Any] | str | Path,
    tmp_path: Path,
    *,
    images: Images | None = None,
    plugins: Iterable[Any] | None = None,
    installed: bool | None = None,
    limit: int | None = None,
    registry: Registry | None = None,
    db_url: str | None = None,
) -> StationResult:
    """Run a station, as ``inspector run`` does, and return what it recorded.

    :param config: the station, as a dict (written to ``tmp_path/station.yaml``) or a station
        file. A dict may leave out ``name`` (``test``), ``store`` (SQLite in ``tmp_path``) and,
        with ``images``, ``source``.
    :param images: the parts to inspect: uint8 arrays ((H, W) grayscale or (H, W, 3) BGR), a list
        (part ids ``part-000``, ...) or a dict part id -> image. They are served unchanged, in
        order, by the kit's ``kit_images`` source.
    :param plugins: plugins to register without installing them: modules, classes or objects
        with ``@hookimpl`` functions, or ``(name, plugin)``. With ``plugins``, the host has only
        these (and the kit's source) unless ``installed=True``; without, the installed plugins.
    :param registry: a ready `Registry` instead (not with ``plugins``).
    :param limit: stop after this many parts. :param db_url: another store than SQLite in ``tmp_path``.
    """
    if registry is not None and (plugins is not None or installed is not None):
        raise TypeError("run_station: give registry= or plugins=/installed=, not both")
    if isinstance(config, dict):
        config = dict(config)
        config.setdefault("name", "test")
        if images is not None:
            if "source" in config:
                raise TypeError("run_station: give images= or a source in the config, not both")
            _write_images(images, tmp_path / "kit_images")
            config["source"] = {"type": KitImages.name, "config": {"path": "kit_images"}}
        config.setdefault("store", {})
        config["store"] = {
            **config["store"],
            "url": db_url or config["store"].get("url") or f"sqlite:///{tmp_path / 'inspector.db'}",
        }
        path = tmp_path / "station.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        if images is not None:
            raise TypeError("run_station: images= needs a config dict (a station file names its own source)")
        path = Path(config)
    if registry is None:
        registry = host_registry(plugins or (), installed=plugins is None if installed is None else installed)
    station = load_station(path, registry)
    runtime = StationRuntime(station, registry, limit=limit)
    tally = runtime.run()
    assert runtime.run_id is not None, f"station {path}: the run was not recorded ({runtime.failure})"
    return StationResult(path, station.store_url, tally, runtime.run_id, registry)


class Host:
    """An Inspector host with the plugins you give it, not installed: what the
    ``inspector_host`` fixture returns. Register a plugin, then run stations on images:

        host.register(my_plugin)            # a module (or object) with @hookimpl functions
        result = host.run({"steps": [{"detector": "glare"}]}, images=[good, bad])

    Each run is a new run of station ``test`` in the same SQLite store (``tmp_path/inspector.db``).
    """

    def __init__(self, tmp_path: Path, plugins: Iterable[Any] = (), *, installed: bool = False) -> None:
        self.tmp_path = tmp_path
        self.plugins: list[Any] = list(plugins)
        self.installed = installed
        self._registry: Registry | None = None

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Add a plugin: a module, a class or an object with ``@hookimpl`` functions."""
        self.plugins.append((name, plugin) if name else plugin)
        self._registry = None

    @property
    def registry(self) -> Registry:
        """What the registered plugins registered (``registry.detectors["glare"]``, ...)."""
        if self._registry is None:
            self._registry = host_registry(self.plugins, installed=self.installed)
        return self._registry

    def run(
        self, config: dict[str, Any] | str | Path, images: Images | None = None, *, limit: int | None = None
    ) -> StationResult:
        """Run a station (see `run_station`) with this host's plugins."""
        return run_station(config, self.tmp_path, images=images, limit=limit, registry=self.registry)


# ---------------------------------------------------------------------------- the contract, asserted


@dataclasses.dataclass
class DetectorCheck:
    """What `check_detector` checked; ``str()`` of it is a short report."""

    detector: str
    config: dict[str, Any]
    images: int
    inspections: int
    """``inspect`` calls (each variant twice, for determinism)."""
    variants: list[str]
    findings: int
    """Findings returned over every variant (each checked)."""
    kinds: Counter[str]
    cannot_judge: int
    """Views on which the detector raised `CannotJudge` (twice, deterministically)."""
    files: dict[str, Path]
    checks: list[str]

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        lines = [
            f"check_detector({self.detector}): config {self.config}",
            f"  {self.images} images x {len(self.variants)} variants (gray and BGR; whole frame and non-contiguous "
            "ROI view; without and with calibration): "
            f"{self.inspections} inspect() calls, {self.findings} findings checked (kinds: {kinds}), "
            f"{self.cannot_judge} views it cannot judge",
            *(f"  ok: {c}" for c in self.checks),
        ]
        return "\n".join(lines)


def _example_images() -> list[np.ndarray]:
    """Textured panels with what many detectors look for: a thin bright and a thin dark line, a
    saturated spot, a dark round blemish; a colour panel; odd sizes; a flat panel."""
    import cv2

    rng = np.random.default_rng(0)
    panel = cv2.GaussianBlur(rng.normal(128, 12, (240, 320)).astype(np.float32), (0, 0), 1.2)
    marked = panel.copy()
    cv2.line(marked, (30, 40), (150, 70), 205, 2)
    cv2.line(marked, (40, 200), (200, 170), 60, 2)
    cv2.circle(marked, (250, 60), 7, 255, -1)
    cv2.circle(marked, (240, 180), 14, 70, -1)
    gray = marked.clip(0, 255).astype(np.uint8)
    color = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    color[100:130, 60:90] = (40, 40, 230)  # a red patch: BGR order
    tall = (rng.normal(90, 20, (301, 97))).clip(0, 255).astype(np.uint8)
    cv2.line(tall, (10, 20), (80, 280), 240, 2)
    flat = np.full((64, 64), 200, np.uint8)
    return [gray, color, tall, flat]


_MARGIN = (7, 5)  # the ROI view's origin in its frame: odd, so row starts are unaligned


def _variants(image: np.ndarray) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]]:
    """``(label, frame, view, origin, frame_size)``: the image as grayscale and as BGR, each as a
    whole contiguous frame and as a non-contiguous ROI view of a larger frame (as the runtime
    cuts a step's ROI)."""
    import cv2

    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    for label, img in (("gray", gray), ("colour", colour)):
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        yield f"{label} frame", img, img, (0, 0), (w, h)
        mx, my = _MARGIN
        big = np.zeros((h + 2 * my + 3, w + 2 * mx + 1, *img.shape[2:]), np.uint8)
        big[my : my + h, mx : mx + w] = img
        roi = big[my : my + h, mx : mx + w]
        assert not roi.flags.c_contiguous
        yield f"{label} ROI view (non-contiguous, origin {mx},{my})", big, roi, (mx, my), (big.shape[1], big.shape[0])


def check_detector(
    cls: type[Detector],
    config: PluginConfig | dict[str, Any] | None = None,
    images: Sequence[np.ndarray] | None = None,
    tmp_path: Path | None = None,
    *,
    require_findings: bool = True,
) -> DetectorCheck:
    """Assert that ``cls`` keeps the detector contract, and report what was checked.

    :param config: the detector's config, a dict as in a station's ``steps[i].config`` (validated
        as the host does, with ``station_dir`` = ``tmp_path``) or a built ``cls.Config``. Needed
        when the Config has required fields.
    :param images: parts to inspect, uint8 (H, W) or (H, W, 3) BGR; give some with defects your
        detector finds. Default: a few textured panels with lines, spots and blemishes.
    :param tmp_path: the ``station_dir`` the detector gets (relative paths in its config resolve
        from it); default the current directory.
    :param require_findings: fail when no image gives a finding (then boxes, scores, kinds and
        messages were never checked). ``False`` only checks that nothing crashes or writes.

    Checked: class attributes (``name``, ``kinds``, ``Config``, ``report_floor``); every Config
    field documented; an unknown config key refused *as unknown*; every image as a grayscale and
    a BGR view, each as a whole frame and as a non-contiguous ROI view at a non-zero origin,
    each without and with a calibration; ``inspect`` returns a list the host accepts, the same
    findings twice, the same for contiguous and ROI views, never writes into the frame; every
    finding of a declared kind, score in [0, 1], box inside the view, a message, no ``*_mm``
    measurement without a calibration; ``CannotJudge`` is allowed (counted) but must be
    deterministic; ``files()`` names existing files; ``close()`` runs.
    """
    name = getattr(cls, "name", None)
    assert isinstance(name, str) and name, "Detector.name must be a non-empty string"
    kinds = getattr(cls, "kinds", None)
    assert isinstance(kinds, tuple | list) and kinds and all(isinstance(k, str) and k for k in kinds), (
        f"{name}: Detector.kinds must list the finding kinds it emits (a tuple of str)"
    )
    assert isinstance(cls.Config, type) and issubclass(cls.Config, PluginConfig), (
        f"{name}: Detector.Config must subclass inspector_core.PluginConfig"
    )
    floor = cls.report_floor
    assert isinstance(floor, int | float) and not isinstance(floor, bool) and 0 <= floor <= 1, (
        f"{name}: report_floor must be a number in [0, 1] (got {floor!r})"
    )
    checks = ["name, kinds, Config, report_floor"]
    undocumented = [n for n, f in cls.Config.model_fields.items() if not f.description]
    assert not undocumented, f"{name}: Config fields without a description: {undocumented}"
    checks.append(f"{len(cls.Config.model_fields)} Config fields, each with a description")

    station_dir = tmp_path or Path.cwd()
    context = {"station_dir": station_dir, "check_files": True}
    required = [n for n, f in cls.Config.model_fields.items() if f.is_required()]
    if isinstance(config, BaseModel):
        assert isinstance(config, cls.Config), f"{name}: config is a {type(config).__name__}, not {cls.Config.__name__}"
        cfg, raw = config, config.model_dump()
    else:
        assert config is not None or not required, (
            f"{name}: its Config has required fields ({', '.join(required)}): pass check_detector({cls.__name__}, "
            "config={...}) with values a station would give"
        )
        raw = dict(config or {})
        try:
            cfg = cls.Config.model_validate(raw, context=context)
        except ValidationError as exc:
            raise AssertionError(f"{name}: config {raw} is refused by {cls.Config.__name__}:\n{exc}") from None
    try:
        cls.Config.model_validate({**raw, "surely_not_a_field": 1}, context=context)
    except ValidationError as exc:
        unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"] == ("surely_not_a_field",)]
        assert unknown, f"{name}: an unknown config key was refused, but not as unknown: {exc}"
    else:
        raise AssertionError(f"{name}: its Config accepts an unknown key (keep PluginConfig's extra='forbid')")
    checks.append("an unknown config key is refused as unknown")

    det = cls(cfg, station_dir=station_dir)
    step = Step(0, name, cls, cfg, None, 1000.0)
    det.warm_up(None)
    given = list(images) if images is not None else _example_images()
    assert given, "check_detector: images= is empty"
    report = DetectorCheck(name, cfg.model_dump(mode="json"), len(given), 0, [], 0, Counter(), 0, {}, checks)
    calibrations = (Calibration(None), Calibration(0.1))
    for i, image in enumerate(given):
        _check_image(f"check_detector: images[{i}]", image)
        per_layout: dict[tuple[str, float | None], list[tuple[str, tuple[int, ...], float]] | str] = {}
        for label, frame, sub, origin, frame_size in _variants(image):
            for cal in calibrations:
                variant = f"{label}, {'no calibration' if cal.mm_per_px is None else f'{cal.mm_per_px} mm/px'}"
                if i == 0:
                    report.variants.append(variant)
                before = frame.copy()
                view = View(sub, f"check-{i}", origin, cal, {"kit_index": i}, frame_size=frame_size)
                answers = [_inspect(det, view, i, variant) for _ in range(2)]
                report.inspections += 2
                assert np.array_equal(before, frame), f"{name}: inspect() wrote into the view (images[{i}], {variant})"
                first, second = answers
                if isinstance(first, CannotJudge) or isinstance(second, CannotJudge):
                    assert isinstance(first, CannotJudge) and isinstance(second, CannotJudge), (
                        f"{name}: not deterministic: CannotJudge on one call, not on the other (images[{i}], {variant})"
                    )
                    report.cannot_judge += 1
                    key: list[tuple[str, tuple[int, ...], float]] | str = f"CannotJudge: {first}"
                else:
                    assert isinstance(first, list), f"{name}: inspect() must return a list (got {type(first).__name__})"
                    try:
                        check_findings(first, step, sub.shape)
                    except FindingError as exc:
                        raise AssertionError(
                            f"{name}: the host refuses its result (images[{i}], {variant}): {exc}"
                        ) from None
                    key = [(f.kind, tuple(f.box), round(f.score, 6)) for f in first]
                    assert key == [(f.kind, tuple(f.box), round(f.score, 6)) for f in second], (
                        f"{name}: not deterministic: two calls on the same view differ (images[{i}], {variant})"
                    )
                    _check_findings(name, kinds, first, sub.shape, cal, f"images[{i}], {variant}")
                    report.findings += len(first)
                    report.kinds.update(f.kind for f in first)
                colour = label.split()[0]
                same = per_layout.setdefault((colour, cal.mm_per_px), key)
                assert same == key, (
                    f"{name}: a non-contiguous ROI view gives other findings than the same pixels as a whole "
                    f"frame (images[{i}], {variant}): {key} vs {same}; do not rely on the array's memory layout"
                )
    checks.append("gray and BGR, whole frames and non-contiguous ROI views, without and with calibration")
    checks.append("deterministic; same findings whatever the memory layout; never writes into the frame")
    if report.findings:
        checks.append(
            f"{report.findings} findings: declared kinds, scores in [0, 1], boxes inside the view, messages, "
            "no mm without calibration, accepted by the host's check"
        )
    elif require_findings:
        raise AssertionError(
            f"{name}: none of its {len(given)} images gave a finding ({report.inspections} inspect() calls, "
            f"{report.cannot_judge} views it cannot judge), so boxes, scores, kinds and messages were not checked; "
            "pass images= with parts it finds defects on (or require_findings=False to check only robustness)"
        )
    files = det.files()
    assert isinstance(files, dict), f"{name}: files() must return a dict of label -> Path"
    for label, path in files.items():
        assert Path(path).is_file(), f"{name}: files()[{label!r}] = {path} is not a file"
    report.files = {k: Path(v) for k, v in files.items()}
    checks.append(f"files(): {len(files)} existing file(s)")
    det.close()
    checks.append("close()")
    print(report)  # shown by pytest for a failing test, or with -rP
    return report


def _inspect(det: Detector, view: View, i: int, variant: str) -> Any:
    try:
        return det.inspect(view)
    except CannotJudge as exc:
        return exc
    except Exception as exc:
        exc.add_note(f"check_detector: raised by {type(det).__name__}.inspect() on images[{i}], {variant}")
        raise


def _check_findings(
    name: str, kinds: Sequence[str], found: list[Any], shape: tuple[int, ...], cal: Calibration, where: str
) -> None:
    h, w = shape[:2]
    for f in found:
        assert f.kind in kinds, f"{name}: kind {f.kind!r} not declared in kinds {tuple(kinds)} ({where})"
        assert 0.0 <= f.score <= 1.0, f"{name}: score {f.score} outside [0, 1] ({where})"
        x, y, bw, bh = f.box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, (
            f"{name}: box {f.box} outside the {w}x{h} view ({where})"
        )
        assert f.message, f"{name}: findings need a message for the operator ({where})"
        if cal.mm_per_px is None:
            mm = [k for k in f.measurements if k.endswith("_mm")]
            assert not mm, (
                f"{name}: mm measurements {mm} without a calibration ({where}); use view.mm(px), None without"
            )


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def inspector_host(tmp_path: Path) -> Host:
    """A `Host` in ``tmp_path`` with no plugin but the kit's ``kit_images`` source:
    ``inspector_host.register(my_plugin)``, then ``inspector_host.run(config, images=...)``."""
    return Host(tmp_path)


@pytest.fixture
def inspector_station(tmp_path: Path) -> Any:
    """``inspector_station(config, limit=None, images=None)`` runs a station in ``tmp_path``
    with the *installed* plugins (see `run_station`)."""

    def run(config: dict[str, Any], limit: int | None = None, images: Images | None = None) -> StationResult:
        return run_station(config, tmp_path, limit=limit, images=images)

    return run
