"""Station config: one YAML file per station, validated before anything starts.

Two passes: the file's own shape (pydantic, unknown keys refused), then every plugin's part
(``source.config``, ``steps[i].config``, ``sinks[i].config``) against that plugin's own typed
``Config``. Every error names the file, the field's path and the reason::

    stations/line3.yaml: steps[2].config.threshold: Input should be less than or equal to 1 (got 1.7)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector_core.contract import Detector, FrameSource, PluginConfig, Sink
from inspector_core.plugins import Registry
from inspector_core.runtime.rules import Rule

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ROI(Strict):
    """A rectangle of the frame, in pixels."""

    x: int = Field(ge=0, description="left edge, px")
    y: int = Field(ge=0, description="top edge, px")
    width: int = Field(gt=0, description="px")
    height: int = Field(gt=0, description="px")


class StepSpec(Strict):
    detector: str = Field(description="name of an installed detector (`inspector plugins`)")
    name: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None, description="unique name of this step; defaults to the detector's name")
    roi: ROI | None = Field(None, description="the region the detector sees; the whole frame if absent")
    budget_ms: float | None = Field(None, gt=0, description="time budget; the station's budget_ms if absent")
    config: dict[str, Any] = Field(default_factory=dict, description="the detector's own config")


class SourceSpec(Strict):
    type: str = Field(description="name of an installed frame source: folder, video, camera, synthetic, ...")
    config: dict[str, Any] = Field(default_factory=dict)


class SinkSpec(Strict):
    type: str = Field(description="name of an installed sink: mqtt, file, webhook, ...")
    name: Annotated[str, Field(pattern=NAME, max_length=100)] | None = Field(
        None, description="the sink's key in the store (its delivery cursor); defaults to its type. "
                          "Needed when two sinks share a type; keep it when reordering or editing the sink")
    config: dict[str, Any] = Field(default_factory=dict)


class CropPolicy(Strict):
    save: Literal["failed", "all", "none"] = Field(
        "failed", description="which findings get a crop: those that failed the part, every stored one, or none")
    padding_px: int = Field(16, ge=0, le=1000, description="context around the box, frame px")
    max_size_px: int = Field(256, ge=16, le=4096, description="longer side of a stored crop; larger boxes are scaled down")
    format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)


class StoreSpec(Strict):
    url: str = Field("sqlite:///inspector.db", description=(
        "SQLAlchemy URL. A relative SQLite path is relative to the station file. ${VAR} is expanded "
        "from the environment (keep passwords out of the file)."))
    crops: CropPolicy = CropPolicy()
    spool: str | None = Field(None, description=(
        "folder for the local spool used while a server database is unreachable; "
        "default: .spool/ beside the station file. Not used for SQLite."))


class Overload(Strict):
    policy: Literal["wait", "drop-oldest"] = Field("wait", description=(
        "wait: every part is inspected and the source is held back; "
        "drop-oldest: when the queue is full the oldest waiting frame is recorded NOT_INSPECTED"))
    queue_size: int = Field(8, ge=1, le=10_000, description="frames waiting for inspection")


class CalibrationSpec(Strict):
    mm_per_px: float | None = Field(None, gt=0, description="millimetres per pixel on the part's plane")


class StationSpec(Strict):
    name: str = Field(pattern=NAME, max_length=200, description="the station's name in the store")
    description: str = ""
    source: SourceSpec
    steps: list[StepSpec] = Field(min_length=1)
    rules: dict[str, Rule] = Field(default_factory=dict, description="verdict rules per finding kind")
    default_rule: Rule = Field(default_factory=Rule, description="for kinds without their own rule")
    calibration: CalibrationSpec = CalibrationSpec()
    budget_ms: float = Field(2000, gt=0, description="default time budget of a step")
    overload: Overload = Overload()
    store: StoreSpec = StoreSpec()
    sinks: list[SinkSpec] = Field(default_factory=list)

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[StepSpec]) -> list[StepSpec]:
        seen: dict[str, int] = {}
        for i, s in enumerate(steps):
            name = s.name or s.detector
            if name in seen:
                raise ValueError(f"steps[{i}] and steps[{seen[name]}] are both named {name!r}; "
                                 "give one a distinct `name:`")
            seen[name] = i
        return steps


@dataclasses.dataclass(frozen=True)
class Step:
    index: int
    name: str
    detector: type[Detector]
    config: PluginConfig
    roi: ROI | None
    budget_ms: float


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


def _errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check its spelling)"
        elif err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict | list):
            msg += f" (got {err['input']!r})"
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


def _plugin_config(kind: str, name: str, table: dict[str, type], reg: Registry, cfg: dict[str, Any],
                   where: tuple[Any, ...], problems: list[str]) -> tuple[type | None, PluginConfig | None]:
    cls = table.get(name)
    if cls is None:
        broken = [p for p in reg.broken()]
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
        return cls, cls.Config.model_validate(cfg or {})
    except ValidationError as exc:
        problems.extend(_errors(exc, where + ("config",)))
        return cls, None


def _resolve_url(url: str, directory: Path) -> str:
    url = re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] not in ("", ":memory:"):
        url = prefix + str((directory / url[len(prefix):]).resolve())
    return url


def load_station(path: str | Path, registry: Registry) -> Station:
    """Read and validate a station file; raise :class:`ConfigError` naming every problem."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [f"cannot read the file ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(file, [f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(file, ["(top level): must be a mapping with name, source, steps, ..."])
    try:
        spec = StationSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, _errors(exc)) from exc

    problems: list[str] = []
    source_cls, source_cfg = _plugin_config("frame source", spec.source.type, registry.sources, registry,
                                            spec.source.config, ("source",), problems)
    steps = []
    for i, s in enumerate(spec.steps):
        cls, cfg = _plugin_config("detector", s.detector, registry.detectors, registry, s.config,
                                  ("steps", i), problems)
        if cls is not None and cfg is not None:
            steps.append(Step(i, s.name or s.detector, cls, cfg, s.roi, s.budget_ms or spec.budget_ms))
    sinks = []
    for i, s in enumerate(spec.sinks):
        cls, cfg = _plugin_config("sink", s.type, registry.sinks, registry, s.config, ("sinks", i), problems)
        if cls is not None and cfg is not None:
            sinks.append((cls, cfg))
    if problems:
        raise ConfigError(file, problems)
    assert source_cls is not None and source_cfg is not None
    return Station(
        path=path.resolve(), spec=spec, text=text,
        config_hash=hashlib.sha256(text.encode()).hexdigest(),
        source=source_cls, source_config=source_cfg, steps=tuple(steps), sinks=tuple(sinks),
        store_url=_resolve_url(spec.store.url, path.resolve().parent),
    )
