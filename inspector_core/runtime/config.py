"""Station config: one YAML file per station, validated before anything starts.

Two passes: the file's own shape (pydantic, unknown keys refused), then every plugin's part
(``source.config``, ``steps[i].config``, ``sinks[i].config``) against that plugin's own typed
``Config``. Every error names the file, the field's path and the reason::

    stations/line3.yaml: steps[2].config.threshold: Input should be less than or equal to 1 (got 1.7)

Then what only the whole station can tell: a verdict rule every finding of its kind can be
judged by (a ``min_size_mm`` rule needs the calibration; a rule's kind must be one a step
emits), each ROI inside the frame size the source declares, a store URL that can be opened.

The file itself must be UTF-8 YAML with every key once per mapping, at most
:data:`MAX_DEPTH` levels deep and :data:`MAX_VALUES` values once its aliases are expanded.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy.engine import make_url

from inspector_core.contract import Detector, FrameSource, PlcLink, PluginConfig, Sink
from inspector_core.plugins import Registry
from inspector_core.runtime.rules import Rule
from inspector_core.runtime.views import ViewPlan, check_views, own_source

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_FILE_BYTES = 1 << 20
"""A station file is a few kB; anything above this is not one."""
MAX_DEPTH = 64
"""Nesting levels of a station file (a real one has fewer than ten)."""
MAX_VALUES = 100_000
"""Values in a station file once YAML aliases are expanded (aliases of aliases grow fast)."""
MAX_BUDGET_MS = 3_600_000
MAX_PARALLEL = 8
"""The most parts one step may inspect at once (``steps[i].parallel``): each is a detector instance."""
STORE_BACKENDS = ("sqlite", "postgresql")


class Strict(PluginConfig):
    """The host's own parts of a station file follow the rules of a plugin's config: unknown
    keys refused, values frozen, finite numbers, no true/false where a number is meant."""


class ROI(Strict):
    """A rectangle of the frame, in pixels."""

    x: int = Field(ge=0, description="left edge, px")
    y: int = Field(ge=0, description="top edge, px")
    width: int = Field(gt=0, description="px")
    height: int = Field(gt=0, description="px")


class StepSpec(Strict):
    detector: str = Field(description="name of an installed detector (`inspector plugins`)")
    name: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None, description="unique name of this step; defaults to the detector's name"
    )
    roi: ROI | None = Field(None, description="the region the detector sees; the whole frame if absent")
    budget_ms: float | None = Field(
        None, gt=0, le=MAX_BUDGET_MS, description="time budget; the station's budget_ms if absent"
    )
    report_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="findings scoring below this are not stored; the detector's own report_floor if absent",
    )
    isolation: Literal["thread", "process"] = Field(
        "thread",
        description=(
            "process: the detector runs in a worker process of its own (for third-party native code): "
            "a crash there costs the part (ERROR) and the worker is restarted, instead of ending the station"
        ),
    )
    parallel: int = Field(
        1,
        ge=1,
        le=MAX_PARALLEL,
        description=(
            "parts this step may inspect at once, each by a detector instance of its own (its memory times "
            "this): for a station's longest step, so that consecutive parts do not queue behind it "
            "(docs/line-rate.md); each instance sees its parts in capture order"
        ),
    )
    view: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None, description="the view of the part this step looks at (a name under views:; docs/views.md)"
    )
    fixture: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None,
        description=(
            "name of an earlier step that publishes the part's pose (e.g. misalignment): this step's roi is "
            "placed on the part as that step found it (docs/fixture.md)"
        ),
    )
    config: dict[str, Any] = Field(default_factory=dict, description="the detector's own config")


class SourceSpec(Strict):
    type: str = Field(description="name of an installed frame source: folder, video, camera, synthetic, ...")
    config: dict[str, Any] = Field(default_factory=dict)


class SinkSpec(Strict):
    type: str = Field(description="name of an installed sink: mqtt, file, webhook, ...")
    name: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None,
        description="the sink's key in the store (its delivery cursor); defaults to its type. "
        "Needed when two sinks share a type; keep it when reordering or editing the sink",
    )
    config: dict[str, Any] = Field(default_factory=dict)


class CropPolicy(Strict):
    save: Literal["failed", "all", "none"] = Field(
        "failed", description="which findings get a crop: those that failed the part, every stored one, or none"
    )
    padding_px: int = Field(16, ge=0, le=1000, description="context around the box, frame px")
    max_size_px: int = Field(
        256, ge=16, le=4096, description="longer side of a stored crop; larger boxes are scaled down"
    )
    format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)


class EvidencePolicy(Strict):
    """Whole-frame evidence (issue 15; docs/qa.md): files beside the database, one row each."""

    fail: Literal["full", "downscaled", "none"] = Field(
        "none", description="the frame of a part that did not pass (FAIL, ERROR): full size, downscaled, or not kept"
    )
    pass_sample: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of PASS parts whose frame is kept too (downscaled), e.g. 0.01"
    )
    max_side: int = Field(1600, ge=64, le=20_000, description="longer side of a downscaled frame, px")
    format: Literal["jpeg", "png"] = "jpeg"
    quality: int = Field(90, ge=10, le=100, description="JPEG quality")
    dir: str | None = Field(
        None,
        description=(
            "folder of the evidence files; default: <database file>.evidence beside a SQLite file, "
            "evidence/ beside the station file for a server database. Relative to the station file"
        ),
    )
    min_free_bytes: float = Field(
        1e9, ge=0, description="below this much free space on the evidence folder's disk no frame is written"
    )
    max_pending: int = Field(
        32, ge=1, le=10_000, description="frames waiting for the writer beyond this are dropped (recorded), not held"
    )


class RetentionPolicy(Strict):
    """How long evidence files are kept (``inspector retention``; docs/qa.md)."""

    pass_days: float | None = Field(7, gt=0, description="age after which a sampled PASS frame goes; null: kept")
    fail_days: float | None = Field(90, gt=0, description="age after which a failed part's frame goes; null: kept")
    max_bytes: float | None = Field(
        None, gt=0, description="quota of the station's evidence files; the oldest go first (PASS before fail)"
    )
    orphan_grace_s: float = Field(
        3600, ge=0, description="a file no row names is deleted only once it is this old (a writer may commit it)"
    )


class StoreSpec(Strict):
    url: str = Field(
        "sqlite:///inspector.db",
        description=(
            "SQLAlchemy URL. A relative SQLite path is relative to the station file. ${VAR} is expanded "
            "from the environment (keep passwords out of the file)."
        ),
    )
    crops: CropPolicy = CropPolicy()
    evidence: EvidencePolicy = EvidencePolicy()
    retention: RetentionPolicy = RetentionPolicy()
    spool: str | None = Field(
        None,
        description=(
            "folder for the local spool used while a server database is unreachable; "
            "default: .spool/ beside the station file. Not used for SQLite."
        ),
    )


class Overload(Strict):
    policy: Literal["wait", "drop-oldest"] = Field(
        "wait",
        description=(
            "wait: every part is inspected and the source is held back; "
            "drop-oldest: when the queue is full the oldest waiting frame is recorded NOT_INSPECTED"
        ),
    )
    queue_size: int = Field(8, ge=1, le=10_000, description="frames waiting for inspection")


class LineCodes(Strict):
    """The result codes the PLC acts on (one register / node each)."""

    ok: int = Field(1, ge=0, le=65535, description="code of a PASS")
    nok: int = Field(2, ge=0, le=65535, description="code of a FAIL (and, by default, an ERROR)")
    recheck: int = Field(3, ge=0, le=65535, description="code of a part to be checked again by hand")


class LineSpec(Strict):
    """The station on a line: a PLC triggers it and reads each part's result (docs/line.md)."""

    protocol: str = Field(description="name of an installed PLC link: modbus, opcua (`inspector plugins`)")
    config: dict[str, Any] = Field(default_factory=dict, description="the link's own config (address, port, ...)")
    deadline_ms: float = Field(
        500, gt=0, le=MAX_BUDGET_MS, description="after a trigger, when the PLC must hold the part's result"
    )
    default: Literal["nok", "recheck"] = Field(
        "nok", description="the code sent when the deadline passes before the verdict (never ok)"
    )
    error: Literal["nok", "recheck"] = Field("nok", description="the code sent for an ERROR verdict")
    codes: LineCodes = LineCodes()
    defect_codes: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(
        default_factory=dict, description="finding kind -> defect code sent with a NOK (0 for a kind not listed)"
    )
    overrun: Literal["queue", "reject"] = Field(
        "queue",
        description=(
            "a trigger while BUSY: queue = captured after the current part (flagged overrun); "
            "reject = answered at once with the default code, not captured (recorded)"
        ),
    )
    ack_timeout_ms: float = Field(
        1000, gt=0, le=MAX_BUDGET_MS, description="how long the PLC may take to acknowledge a result (recorded)"
    )
    margin_ms: float = Field(
        50,
        ge=0,
        le=10_000,
        description="the default is recorded from this long before the deadline, and on the PLC by half of it",
    )

    @field_validator("margin_ms")
    @classmethod
    def _margin_below_deadline(cls, v: float, info: ValidationInfo) -> float:
        deadline = info.data.get("deadline_ms")
        if deadline is not None and v >= deadline:
            raise ValueError(f"must be less than deadline_ms ({deadline:g})")
        return v


class CalibrationSpec(Strict):
    mm_per_px: float | None = Field(None, gt=0, description="millimetres per pixel on the part's plane")


class MeasurementSpec(Strict):
    """SPC of one measurement (``measurements: {scratch.length_mm: {...}}``, docs/qa.md): its spec
    limits for Cpk / Ppk, the chart's subgroup size and the baseline its limits are frozen from."""

    lsl: float | None = Field(None, description="lower spec limit, in the measurement's unit")
    usl: float | None = Field(None, description="upper spec limit")
    subgroup: int = Field(1, ge=1, le=10, description="1: individuals / moving range; 2-10: X-bar / R")
    baseline: int | None = Field(
        None, ge=2, description="points (subgroups) of phase I the limits are frozen from; default all"
    )

    @field_validator("usl")
    @classmethod
    def _usl_above_lsl(cls, v: float | None, info: ValidationInfo) -> float | None:
        lsl = info.data.get("lsl")
        if v is not None and lsl is not None and v <= lsl:
            raise ValueError(f"must be above lsl ({lsl:g})")
        return v


class RecipeSpec(Strict):
    """One product of the station (``recipes: {NAME: ...}``, docs/recipes.md): overrides merged onto
    the base chain, never a copy of it. ``steps`` is keyed by step name: a mapping merges into that
    step (its ``config`` key by key), ``null`` removes it, a new name with a ``detector`` adds a step
    (after the step named by ``after``, else at the end). ``rules`` and ``measurements`` merge per
    kind (``null`` removes one). The resolved recipe is validated as a whole station."""

    description: str = ""
    products: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        description="product codes the PLC sends for this recipe (with the trigger, or a recipe register); "
        "the recipe's own name always selects it",
    )
    preload: bool = Field(
        False,
        description="start (and warm) this recipe's detectors with the station, so that the first part of a "
        "product code sent with its trigger never waits for them",
    )
    steps: dict[str, dict[str, Any] | None] = Field(default_factory=dict, description="step name -> overrides")
    rules: dict[str, dict[str, Any] | None] = Field(default_factory=dict, description="kind -> rule overrides")
    default_rule: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    budget_ms: float | None = None
    measurements: dict[str, dict[str, Any] | None] = Field(default_factory=dict)


class ViewSpec(Strict):
    """One view of a multi-view part (``views: {NAME: ...}``, docs/views.md): its own camera, or
    the frames of the station's source that carry its tag."""

    description: str = ""
    source: SourceSpec | None = Field(
        None, description="this view's own source (a second camera); absent: the station's source feeds it"
    )
    tag: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None,
        description="a frame of the station's source is this view when its meta[join.tag_key] equals this "
        "(one camera at several positions); default: the view's name. Not with source:",
    )

    @field_validator("tag")
    @classmethod
    def _tag_or_source(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("source") is not None:
            raise ValueError("a view with its own source: needs no tag (every frame of that source is this view)")
        return v


class JoinSpec(Strict):
    """How the views of one part are brought together (docs/views.md)."""

    deadline_ms: float = Field(
        500, gt=0, le=MAX_BUDGET_MS, description="after a part's first view, how long its other views may take"
    )
    tag_key: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        "view", description="the frame metadata key that names the view, for views sharing the station's source"
    )


class StationSpec(Strict):
    name: str = Field(pattern=NAME, max_length=200, description="the station's name in the store")
    description: str = ""
    source: SourceSpec
    steps: list[StepSpec] = Field(min_length=1)
    rules: dict[str, Rule] = Field(default_factory=dict, description="verdict rules per finding kind")
    default_rule: Rule = Field(default_factory=Rule, description="for kinds without their own rule")
    calibration: CalibrationSpec = CalibrationSpec()
    budget_ms: float = Field(2000, gt=0, le=MAX_BUDGET_MS, description="default time budget of a step")
    overload: Overload = Overload()
    store: StoreSpec = StoreSpec()
    sinks: list[SinkSpec] = Field(default_factory=list)
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="detector calls run at once (steps of consecutive parts overlap); default: the CPU cores",
    )
    line: LineSpec | None = Field(None, description="a PLC drives the station (docs/line.md)")
    measurements: dict[Annotated[str, Field(pattern=r"^[^.\s]+\.[^.\s]+$")], MeasurementSpec] = Field(
        default_factory=dict, description="SPC per KIND.MEASUREMENT (e.g. scratch.length_mm): spec limits, subgroup"
    )
    recipes: dict[Annotated[str, Field(pattern=NAME, max_length=100)], RecipeSpec] = Field(
        default_factory=dict,
        description="products of this station, each an override of the chain above (docs/recipes.md)",
    )
    recipe: str | None = Field(None, description="the recipe active at start; default: the first one")

    views: dict[Annotated[str, Field(pattern=NAME, max_length=100)], ViewSpec] | None = Field(
        None, description="the views of one part (several cameras or positions), each step names its view"
    )
    join: JoinSpec = Field(default_factory=JoinSpec, description="how a part's views are joined (with views:)")

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[StepSpec]) -> list[StepSpec]:
        seen: dict[str, int] = {}
        for i, s in enumerate(steps):
            name = s.name or s.detector
            if name in seen:
                raise ValueError(
                    f"steps[{i}] and steps[{seen[name]}] are both named {name!r}; give one a distinct `name:`"
                )
            seen[name] = i
        return steps

    @field_validator("steps")
    @classmethod
    def _fixtures_are_earlier_steps(cls, steps: list[StepSpec]) -> list[StepSpec]:
        """``steps[i].fixture`` names an earlier step of the same view, and the step has a roi to place
        (whether that step publishes a pose is known only when it inspects: a part without one is ERROR)."""
        index = {s.name or s.detector: i for i, s in enumerate(steps)}
        for i, s in enumerate(steps):
            if s.fixture is None:
                continue
            j = index.get(s.fixture)
            if j is None or j >= i:
                earlier = ", ".join(repr(t.name or t.detector) for t in steps[:i]) or "none"
                why = "is this step itself" if j == i else "comes after it" if j is not None else "is not a step"
                raise ValueError(
                    f"steps[{i}].fixture: {s.fixture!r} {why}; name an earlier step that publishes the part's "
                    f"pose (earlier steps: {earlier})"
                )
            if s.roi is None:
                raise ValueError(
                    f"steps[{i}].fixture: a fixtured step needs a roi (the region placed on the part by "
                    f"{s.fixture!r}'s pose); give steps[{i}] a roi"
                )
        return steps  # a fixture on another view: _fixtures_on_own_view, once the view names are checked


@dataclasses.dataclass(frozen=True)
class Step:
    index: int
    name: str
    detector: type[Detector]
    config: PluginConfig
    roi: ROI | None
    budget_ms: float
    report_floor: float | None = None
    """The station's floor for this step (``steps[i].report_floor``); ``None``: the detector's own."""
    isolation: Literal["thread", "process"] = "thread"
    """``steps[i].isolation``: ``process`` runs the detector in a worker process (runtime/isolation.py)."""
    view: str | None = None
    """``steps[i].view``: which view of the part the step looks at (``None``: the station's only one)."""
    fixture: str | None = None
    """``steps[i].fixture``: the earlier step whose published pose places this step's roi (runtime/fixture.py)."""
    parallel: int = 1
    """``steps[i].parallel``: parts this step inspects at once, each by a detector instance of its own."""

    @property
    def floor(self) -> float:
        """The score below which this step's findings are not stored."""
        return self.detector.report_floor if self.report_floor is None else self.report_floor


@dataclasses.dataclass(frozen=True)
class Station:
    """A validated station: the spec, and every plugin's typed config."""

    path: Path
    spec: StationSpec
    text: str
    config_hash: str
    source: type[FrameSource]
    source_config: PluginConfig
    steps: tuple[Step, ...]
    sinks: tuple[tuple[type[Sink], PluginConfig], ...]
    store_url: str
    line: tuple[type[PlcLink], PluginConfig] | None = None
    """The PLC link's class and typed config when the station has a ``line:`` section."""
    views: ViewPlan | None = None
    """The station's views (``views:``, runtime/views.py), joined by part id; ``None``: one view."""
    recipe: str | None = None
    """The recipe this station is (``None``: a station without recipes)."""
    recipe_hash: str | None = None
    """sha256 of the recipe's resolved config (:func:`inspector_core.runtime.recipes.recipe_hash`)."""
    recipes: dict[str, Station] = dataclasses.field(default_factory=dict)
    """Every recipe of the file, each a whole validated station (empty without recipes; empty in each of them)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def directory(self) -> Path:
        return self.path.parent


class ConfigError(ValueError):
    """A station file that cannot run. ``problems`` lists every ``path: reason``."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {p}" for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _fixtures_on_own_view(spec: StationSpec, problems: list[str]) -> None:
    """``steps[i].fixture`` looks at the same view as step i. Checked after the views' names: a step
    whose view is missing or misspelt is named by that (runtime/views.py), not as a fixture across views."""
    index = {s.name or s.detector: s for s in spec.steps}
    for i, s in enumerate(spec.steps):
        f = index.get(s.fixture) if s.fixture is not None else None
        if f is None or spec.views is None or s.view not in spec.views or f.view not in spec.views:
            continue
        if s.view != f.view:
            problems.append(
                f"steps[{i}].fixture: {s.fixture!r} looks at view {f.view!r}, this step at {s.view!r}; "
                "a pose places a roi only in the image it was found in"
            )


def _errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check its spelling)"
        elif (
            err["type"] != "missing"
            and "input" in err
            and not isinstance(err["input"], dict | list)
            and not (err["type"] == "value_error" and err["input"] is None)
        ):
            msg += f" (got {err['input']!r})"
        where = _loc(loc)
        # A check of a whole list names the item itself ("steps[1].fixture: ..."): not "steps: steps[1]...".
        named = bool(loc) and msg.startswith((f"{where}[", f"{where}."))
        problems.append(msg if named else f"{where}: {msg}")
    return problems


_Plugin = TypeVar("_Plugin", Detector, FrameSource, Sink, PlcLink)


def _plugin_config(
    kind: str,
    name: str,
    table: Mapping[str, type[_Plugin]],
    reg: Registry,
    cfg: dict[str, Any],
    where: tuple[Any, ...],
    problems: list[str],
    context: dict[str, Any],
) -> tuple[type[_Plugin] | None, PluginConfig | None]:
    cls = table.get(name)
    if cls is None:
        broken = list(reg.broken())
        hint = ""
        if broken:
            hint = "; plugins that failed to load: " + ", ".join(f"{p.name} ({p.error})" for p in broken)
        disabled = [p.name for p in reg.plugins.values() if p.disabled]
        if disabled:
            hint += "; disabled: " + ", ".join(disabled)
        installed = ", ".join(sorted(table)) or "none"
        problems.append(f"{_loc(where)}: unknown {kind} {name!r} (installed: {installed}){hint}")
        return None, None
    try:
        return cls, cls.Config.model_validate(cfg or {}, context=context)
    except ValidationError as exc:
        problems.extend(_errors(exc, where + ("config",)))
    except Exception as exc:  # noqa: BLE001 - a plugin's own validator may raise anything
        problems.append(
            f"{_loc(where + ('config',))}: the {kind} {name!r} could not check its config "
            f"({type(exc).__name__}: {exc}); this is a bug in that plugin"
        )
    return cls, None


# ---------------------------------------------------------------------------- the file


class _StationLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (PyYAML keeps the last
    one: a second ``steps:`` would silently replace the first) and nesting deeper than
    :data:`MAX_DEPTH` (PyYAML would end in a RecursionError)."""

    _MERGE = "tag:yaml.org,2002:merge"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != self._MERGE:
                first = seen.setdefault((key.tag, key.value), key.start_mark)
                if first is not key.start_mark:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"duplicate key {key.value!r} (first at line {first.line + 1}, column "
                        f"{first.column + 1}); give each key once",
                        key.start_mark,
                    )
        return node


def _read_text(path: Path, file: str) -> str:
    """The file as text; a :class:`ConfigError` for anything that is not a UTF-8 text file."""
    try:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "not there"
            raise ConfigError(file, [f"cannot read the file ({what})"])
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, [f"cannot read the file ({exc.strerror})"]) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(file, [f"larger than {MAX_FILE_BYTES >> 20} MiB: not a station file"])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(file, ["the file is UTF-16 text; save it as UTF-8"])
    if b"\x00" in data:
        at = data.index(b"\x00")
        line = data[:at].count(b"\n") + 1
        raise ConfigError(file, [f"line {line}: a binary file (a NUL byte at offset {at}), not a YAML text"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        msg = (
            f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}; "
            "Latin-1 or another encoding?); save the file as UTF-8"
        )
        raise ConfigError(file, [msg]) from exc


def _parse(text: str, file: str) -> Any:
    loader = None
    try:
        loader = _StationLoader(text)  # the reader checks every character here
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        msg = f"line {line}: not valid YAML (unacceptable character #x{char:04x}: {exc.reason})"
        raise ConfigError(file, [msg]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(top level)"
        raise ConfigError(file, [f"{where}: not valid YAML ({exc.problem or exc.context})"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(file, [f"(top level): not valid YAML ({exc})"]) from exc
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor's own: e.g. a date 2026-13-45
        raise ConfigError(file, [f"(top level): not valid YAML ({exc})"]) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _measure(data: Any) -> tuple[int, int]:
    """``(values, depth)`` of ``data`` with shared parts (YAML aliases) counted each time they
    are used; iterative, so a long chain of aliases cannot exhaust the stack. Values are
    capped at ``MAX_VALUES + 1``. Raises ``ValueError`` for a structure that contains itself."""
    memo: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, dict | list):
            continue
        children = list(obj.values()) if isinstance(obj, dict) else obj
        key = id(obj)
        if done:
            on_path.discard(key)
            values, depth = 1, 1
            for c in children:
                cv, cd = memo[id(c)] if isinstance(c, dict | list) else (1, 0)
                values, depth = min(values + cv, MAX_VALUES + 1), max(depth, cd + 1)
            memo[key] = (values, depth)
        elif key not in memo:
            on_path.add(key)
            stack.append((obj, True))
            for c in children:
                if isinstance(c, dict | list):
                    if id(c) in on_path:
                        raise ValueError("it contains itself (a YAML alias inside its own anchor)")
                    stack.append((c, False))
    return memo.get(id(data), (1, 0))


# ---------------------------------------------------------------------------- the whole station


def _check_rules(spec: StationSpec, steps: list[Step], problems: list[str]) -> None:
    """Every rule must be one a finding of its kind can be judged by (fail closed)."""
    if spec.calibration.mm_per_px is None:
        named: list[tuple[str, Rule]] = [(f"rules.{k}", r) for k, r in spec.rules.items()]
        named.append(("default_rule", spec.default_rule))
        for where, rule in named:
            if rule.min_size_mm is not None and rule.fail:
                problems.append(
                    f"{where}.min_size_mm: cannot be judged: the station has no calibration, so no finding "
                    "has a size in mm (every part would pass this rule); set calibration.mm_per_px, or use "
                    "min_size_px"
                )
    if len(steps) != len(spec.steps):
        return  # a step's detector is unknown or its config broken: its kinds are not known
    emitted = sorted({k for s in steps for k in s.detector.kinds})
    for kind in spec.rules:
        if kind in emitted:
            continue
        by_name = [s for s in steps if kind in (s.name, s.detector.name)]
        close = difflib.get_close_matches(kind, emitted, n=1)
        if by_name:
            # Rules are keyed by finding kind, steps by detector (or step) name: an easy mix-up.
            hint = (
                f"; {kind!r} is a step's name: rules are keyed by finding kind, and step {by_name[0].name!r} "
                f"emits {', '.join(by_name[0].detector.kinds)}"
            )
        elif close:
            hint = f"; did you mean {close[0]!r}?"
        else:
            hint = "; remove it, or add a step that emits it"
        problems.append(
            f"rules.{kind}: no step emits findings of kind {kind!r} (the steps emit: "
            f"{', '.join(emitted)}), so this rule would never apply{hint}"
        )
    for step in steps:
        for kind in step.detector.kinds:
            rule = spec.rules.get(kind, spec.default_rule)
            if rule.fail and step.floor > rule.min_score:
                where = f"rules.{kind}" if kind in spec.rules else "default_rule"
                floor = (
                    f"steps[{step.index}].report_floor: {step.floor:g}"
                    if step.report_floor is not None
                    else f"steps[{step.index}]: report_floor {step.floor:g} of detector {step.detector.name!r}"
                )
                problems.append(
                    f"{floor} is above {where}.min_score {rule.min_score:g}: findings of kind {kind!r} scoring "
                    f"between them would be dropped instead of failing the part; set steps[{step.index}].report_floor "
                    "to at most min_score"
                )


def _check_rois(spec: StationSpec, source: type[FrameSource], config: PluginConfig, problems: list[str]) -> None:
    try:
        size = source.frame_size(config)
    except Exception as exc:  # noqa: BLE001 - a plugin's code
        problems.append(
            f"source: the frame source {spec.source.type!r} failed to say its frame size "
            f"({type(exc).__name__}: {exc}); this is a bug in that plugin"
        )
        return
    if size is None:
        return
    width, height = size
    for i, s in enumerate(spec.steps):
        r = s.roi
        if r is None or own_source(spec, s.view):  # checked against that view's source (runtime/views.py)
            continue
        if r.x + r.width > width or r.y + r.height > height:
            problems.append(
                f"steps[{i}].roi: x={r.x}, y={r.y}, width={r.width}, height={r.height} is not inside the "
                f"{width}x{height} px frame of the {spec.source.type} source (x + width = {r.x + r.width}, "
                f"y + height = {r.y + r.height}); move or shrink it"
            )


_VAR = re.compile(r"\$\{(\w+)\}")


def _resolve_url(url: str, directory: Path) -> str:
    """``url`` with ``${VAR}`` expanded (an unset one is left as written) and a relative SQLite
    path made absolute from ``directory``."""
    url = _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix) :] not in ("", ":memory:"):
        url = prefix + str((directory / url[len(prefix) :]).resolve())
    return url


def _check_store_url(written: str, resolved: str, problems: list[str]) -> None:
    """A store URL that the station can open: parseable, of a supported database with its
    driver installed, its variables set, a SQLite path that can be a file."""
    where = "store.url"
    unset = sorted({v for v in _VAR.findall(written) if v not in os.environ})
    if unset:
        problems.append(
            f"{where}: {', '.join('${' + v + '}' for v in unset)} not set in the environment; "
            "export it before starting the station"
        )
        return
    if not resolved.strip():
        problems.append(
            f"{where}: empty; give a database URL, e.g. sqlite:///inspector.db or postgresql://user@host/plant"
        )
        return
    try:
        url = make_url(resolved)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError (a bad port), ...
        problems.append(
            f"{where}: not a database URL; give e.g. sqlite:///inspector.db or postgresql://user@host/plant"
        )
        return
    shown = url.render_as_string(hide_password=True)
    if url.port is not None and not 0 < url.port < 65536:
        problems.append(f"{where}: {shown}: port {url.port} is not a TCP port (1 to 65535)")
        return
    backend = url.get_backend_name()
    if backend not in STORE_BACKENDS:
        problems.append(
            f"{where}: {shown}: database {backend!r} is not supported (supported: {', '.join(STORE_BACKENDS)})"
        )
        return
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver the Store uses for a bare postgresql://
    try:
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except Exception as exc:  # noqa: BLE001 - NoSuchModuleError, ImportError
        driver = url.get_driver_name()
        problems.append(
            f"{where}: {shown}: driver {driver!r} is not installed or not known ({exc}); "
            f"use {backend}:// (the driver Inspector installs) or install that driver"
        )
        return
    if getattr(dialect, "is_async", False):
        problems.append(f"{where}: {shown}: {url.get_driver_name()!r} is an asyncio driver; use {backend}://")
        return
    if backend == "sqlite":
        database = url.database
        if database in (None, "", ":memory:") or (url.query.get("mode") == "memory"):
            problems.append(
                f"{where}: an in-memory SQLite database loses every verdict when the station "
                "stops; give a file, e.g. sqlite:///inspector.db"
            )
            return
        path = Path(database)
        if path.is_dir():
            problems.append(
                f"{where}: {path} is a folder; name a database file in it, e.g. "
                f"sqlite:///{(path / 'inspector.db').as_posix()}"
            )
            return
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            problems.append(f"{where}: {path} cannot be created: {parent} is a file, not a folder")


def load_station(path: str | Path, registry: Registry, *, check_files: bool = True) -> Station:
    """Read and validate a station file; raise :class:`ConfigError` naming every problem.

    ``check_files=False`` is for commands that create files a step's config names (``inspector
    teach`` writes the misalignment reference): plugins skip their checks that those exist."""
    path = Path(path)
    file = str(path)
    text = _read_text(path, file)
    data = _parse(text, file)
    try:
        values, depth = _measure(data)
    except ValueError as exc:
        raise ConfigError(file, [f"(top level): not a station file: {exc}"]) from exc
    if depth > MAX_DEPTH:
        raise ConfigError(file, [f"(top level): nested more than {MAX_DEPTH} levels deep (through YAML aliases)"])
    if values > MAX_VALUES:
        msg = f"(top level): more than {MAX_VALUES} values once its YAML aliases are expanded; a station has hundreds"
        raise ConfigError(file, [msg])
    if not isinstance(data, dict):
        raise ConfigError(file, ["(top level): must be a mapping with name, source, steps, ..."])
    try:
        spec = StationSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, _errors(exc)) from exc
    if spec.recipes or spec.recipe is not None:
        from inspector_core.runtime.recipes import load_recipes

        return load_recipes(path, file, text, data, spec, registry, check_files=check_files)
    return _station(path, file, text, spec, registry, check_files=check_files)


def _station(path: Path, file: str, text: str, spec: StationSpec, registry: Registry, *, check_files: bool) -> Station:
    """The whole-station checks of a validated ``spec`` (every plugin's config, rules, ROIs, store)."""
    directory = path.resolve().parent
    context = {"station_dir": directory, "check_files": check_files}
    problems: list[str] = []
    source_cls, source_cfg = _plugin_config(
        "frame source", spec.source.type, registry.sources, registry, spec.source.config, ("source",), problems, context
    )
    steps = []
    for i, s in enumerate(spec.steps):
        cls, cfg = _plugin_config(
            "detector", s.detector, registry.detectors, registry, s.config, ("steps", i), problems, context
        )
        if cls is not None and cfg is not None:
            budget = s.budget_ms or spec.budget_ms
            steps.append(
                Step(
                    i,
                    s.name or s.detector,
                    cls,
                    cfg,
                    s.roi,
                    budget,
                    s.report_floor,
                    s.isolation,
                    view=s.view,
                    fixture=s.fixture,
                    parallel=s.parallel,
                )
            )
    sinks = []
    for i, sink in enumerate(spec.sinks):
        sink_cls, sink_cfg = _plugin_config(
            "sink", sink.type, registry.sinks, registry, sink.config, ("sinks", i), problems, context
        )
        if sink_cls is not None and sink_cfg is not None:
            sinks.append((sink_cls, sink_cfg))
    line = None
    if spec.line is not None:
        link_cls, link_cfg = _plugin_config(
            "PLC link", spec.line.protocol, registry.plc_links, registry, spec.line.config, ("line",), problems, context
        )
        if link_cls is not None and link_cfg is not None:
            line = (link_cls, link_cfg)
    _check_rules(spec, steps, problems)
    # issue 14: the views of a part; a view with its own camera runs them all side by side
    views, view_sources = check_views(
        spec, steps, registry, _plugin_config, context, problems, (source_cls, source_cfg)
    )
    _fixtures_on_own_view(spec, problems)
    if source_cls is not None and source_cfg is not None:
        _check_rois(spec, source_cls, source_cfg, problems)
        if source_cls.triggerable and spec.line is None:  # nothing would ever trigger it: a run that never ends
            problems.append(
                f"source: the {spec.source.type!r} source grabs a part only when triggered: add a line: section "
                "(the PLC that triggers it, docs/line.md) or use a free-running source (camera, folder)"
            )
    store_url = _resolve_url(spec.store.url, directory)
    _check_store_url(spec.store.url, store_url, problems)
    if problems:
        raise ConfigError(file, problems)
    assert source_cls is not None and source_cfg is not None
    return Station(
        path=path.resolve(),
        spec=spec,
        text=text,
        config_hash=hashlib.sha256(text.encode()).hexdigest(),
        source=view_sources[0] if view_sources else source_cls,
        source_config=view_sources[1] if view_sources else source_cfg,
        steps=tuple(steps),
        sinks=tuple(sinks),
        store_url=store_url,
        line=line,
        views=views,
    )
