"""Finding and loading plugins: entry points in the group ``inspector.plugins``, guarded.

A plugin that fails to import (or registers something broken) is kept in the registry as a
:class:`LoadError`; ``inspector plugins`` shows it, and it stops a station only if that
station uses something the plugin would have provided.

Environment:
- ``INSPECTOR_PLUGINS=a,b``: load only these plugins (by entry-point name).
- ``INSPECTOR_DISABLE_PLUGINS=a,b``: do not load these.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import traceback
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pluggy

from inspector_core import hookspecs
from inspector_core.contract import Detector, FrameSource, PluginConfig, Sink

GROUP = "inspector.plugins"


@dataclasses.dataclass
class PluginInfo:
    """One plugin as ``inspector plugins`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    module: str
    detectors: list[str] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)
    sinks: list[str] = dataclasses.field(default_factory=list)
    commands: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Registry:
    """Everything the installed plugins registered, by name."""

    plugins: dict[str, PluginInfo]
    detectors: dict[str, type[Detector]]
    sources: dict[str, type[FrameSource]]
    sinks: dict[str, type[Sink]]
    commands: dict[str, Any]
    owner: dict[tuple[str, str], str]
    """``(what, name) -> plugin name``, e.g. ``("detector", "scratch") -> "scratch"``."""

    def plugin_of(self, what: str, name: str) -> PluginInfo | None:
        owner = self.owner.get((what, name))
        return self.plugins.get(owner) if owner else None

    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.error]


def _names(env: str) -> set[str] | None:
    value = os.environ.get(env)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _check_class(kind: str, cls: Any, base: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"registered {kind} {cls!r} is not a subclass of {base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"registered {kind} {cls.__name__} has no `name`")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, PluginConfig)):
        raise TypeError(f"{kind} {name}: `Config` must subclass inspector_core.PluginConfig")
    if base is Detector:
        kinds = getattr(cls, "kinds", None)
        if not kinds or not all(isinstance(k, str) for k in kinds):
            raise TypeError(f"detector {name}: `kinds` must be a non-empty tuple of strings")


def load(
    entry_points: Iterable[md.EntryPoint] | None = None,
    extra: Iterable[tuple[str, ModuleType | object]] = (),
) -> Registry:
    """Load the installed plugins (or ``entry_points``), plus ``extra`` ``(name, plugin)``
    objects, and collect what they register. Never raises for a broken plugin."""
    allow, block = _names("INSPECTOR_PLUGINS"), _names("INSPECTOR_DISABLE_PLUGINS") or set()
    if entry_points is None:
        entry_points = md.entry_points(group=GROUP)
    reg = Registry({}, {}, {}, {}, {}, {})

    candidates: list[tuple[str, str | None, str | None, str, Any]] = []
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            distribution=dist.metadata["Name"] if dist else None,
            version=dist.version if dist else None,
            module=ep.value,
        )
        reg.plugins[ep.name] = info
        if (allow is not None and ep.name not in allow) or ep.name in block:
            info.disabled = True
            continue
        try:
            obj = ep.load()
        except BaseException as exc:  # noqa: BLE001 - any import failure is the plugin's
            if isinstance(exc, KeyboardInterrupt):
                raise
            info.error = f"failed to import {ep.value}: {_short_error(exc)}"
            continue
        candidates.append((ep.name, info.distribution, info.version, ep.value, obj))
    for name, obj in extra:
        reg.plugins[name] = PluginInfo(name, None, None, getattr(obj, "__name__", repr(obj)))
        candidates.append((name, None, None, reg.plugins[name].module, obj))

    for name, _dist, _ver, _module, obj in candidates:
        _register_one(reg, name, obj)
    return reg


def _register_one(reg: Registry, plugin_name: str, obj: Any) -> None:
    """Run one plugin's registration hooks in its own plugin manager, so that one plugin's
    failure cannot stop another's (pluggy stops a hook call at the first exception)."""
    info = reg.plugins[plugin_name]
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    staged: list[tuple[str, str, Any]] = []

    def collector(what: str, base: type | None):
        def register(cls: Any) -> None:
            if base is not None:
                _check_class(what, cls, base)
                staged.append((what, cls.name, cls))
            else:
                staged.append((what, getattr(cls, "name", None) or "", cls))

        return register

    try:
        pm.register(obj, name=plugin_name)
        pm.check_pending()
        pm.hook.inspector_register_detectors(register=collector("detector", Detector))
        pm.hook.inspector_register_sources(register=collector("source", FrameSource))
        pm.hook.inspector_register_sinks(register=collector("sink", Sink))
        pm.hook.inspector_register_commands(register=collector("command", None))
    except Exception as exc:  # noqa: BLE001
        info.error = f"failed to register: {_short_error(exc)}"
        return
    tables = {"detector": reg.detectors, "source": reg.sources, "sink": reg.sinks, "command": reg.commands}
    lists = {"detector": info.detectors, "source": info.sources, "sink": info.sinks, "command": info.commands}
    for what, name, cls in staged:
        if name in tables[what]:
            other = reg.owner[(what, name)]
            info.error = f"{what} {name!r} is already registered by plugin {other!r}; not loaded"
            continue
        tables[what][name] = cls
        lists[what].append(name)
        reg.owner[(what, name)] = plugin_name
