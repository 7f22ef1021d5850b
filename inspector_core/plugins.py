"""Finding and loading plugins: entry points in the group ``inspector.plugins``, guarded.

A plugin that fails to import (or registers something broken) is kept in the registry as a
:class:`LoadError`; ``inspector plugins`` shows it, and it stops a station only if that
station uses something the plugin would have provided.

Names are unique: when two plugins register a detector (source, sink, command) of the same
name, neither is registered under it and both plugins carry a load error naming the other, so
a station using that name is refused at validation instead of silently running whichever
plugin sorts first. Two distributions declaring the same entry-point name are refused alike.

Imports are guarded (:func:`_import`): a plugin's module is imported in a daemon thread with
a time limit (``INSPECTOR_PLUGIN_IMPORT_TIMEOUT``, seconds, default 10), so a plugin that
blocks at import costs at most that long and is then listed as broken; and ``os._exit``
is intercepted while a plugin is being imported, so a plugin that calls it is a load error
instead of ending the process without a word. Not guarded (impossible in-process): a crash
of the interpreter itself (a segfault in an extension module), and an import that is still
running after its time limit and later ends the process. ``INSPECTOR_DISABLE_PLUGINS``
switches such a plugin off.

Environment:
- ``INSPECTOR_PLUGINS=a,b``: load only these plugins (by entry-point name).
- ``INSPECTOR_DISABLE_PLUGINS=a,b``: do not load these.
- ``INSPECTOR_PLUGIN_IMPORT_TIMEOUT=10``: seconds a plugin's import may take.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import threading
import traceback
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pluggy

from inspector_core import hookspecs
from inspector_core.contract import Detector, FrameSource, PlcLink, PluginConfig, Sink

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
    plc_links: list[str] = dataclasses.field(default_factory=list)
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
    plc_links: dict[str, type[PlcLink]] = dataclasses.field(default_factory=dict)
    """Line protocols (``line.protocol``: modbus, opcua, ...)."""

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


def _storable(text: str) -> bool:
    """Whether the store can keep ``text`` as it is (PostgreSQL refuses NUL; no database takes
    a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


def _check_class(kind: str, cls: Any, base: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"registered {kind} {cls!r} is not a subclass of {base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"registered {kind} {cls.__name__} has no `name`")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, PluginConfig)):
        raise TypeError(f"{kind} {name}: `Config` must subclass inspector_core.PluginConfig")
    if len(name) > 200:
        raise TypeError(f"{kind} {name[:40]!r}...: `name` is longer than 200 characters")
    if not _storable(name):
        raise TypeError(f"{kind} {name!r}: `name` must be printable UTF-8 text (no NUL, no lone surrogates)")
    if base is Detector:
        kinds = getattr(cls, "kinds", None)
        if (
            not isinstance(kinds, tuple | list | frozenset)
            or not kinds
            or not all(isinstance(k, str) and k for k in kinds)
        ):
            raise TypeError(f"detector {name}: `kinds` must be a non-empty tuple of strings (got {kinds!r:.60})")
        floor = getattr(cls, "report_floor", None)
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0.0 <= floor <= 1.0:
            raise TypeError(f"detector {name}: `report_floor` must be a number in [0, 1] (got {floor!r:.60})")
        bad = [k for k in kinds if not _storable(k)]
        if bad:
            raise TypeError(
                f"detector {name}: kind {bad[0]!r} must be printable UTF-8 text (no NUL, no lone surrogates)"
            )
        long = [k for k in kinds if len(k) > 100]
        if long:
            raise TypeError(
                f"detector {name}: kind {long[0][:40]!r}... is longer than 100 characters (the store's limit)"
            )


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
    eps = sorted(entry_points, key=lambda e: e.name)
    by_name: dict[str, list[md.EntryPoint]] = {}
    for ep in eps:
        by_name.setdefault(ep.name, []).append(ep)
    timeout = _import_timeout()
    for ep in eps:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            distribution=dist.metadata["Name"] if dist else None,
            version=dist.version if dist else None,
            module=ep.value,
        )
        if len(by_name[ep.name]) > 1:
            # Which one is meant cannot be known: refuse both rather than pick by order.
            others = ", ".join(f"{e.value} ({_dist_name(e)})" for e in by_name[ep.name])
            if ep.name not in reg.plugins:
                reg.plugins[ep.name] = dataclasses.replace(
                    info,
                    distribution=None,
                    version=None,
                    module=others,
                    error=f"plugin name {ep.name!r} is declared by {len(by_name[ep.name])} entry points: {others}; "
                    "none is loaded; uninstall all but one",
                )
            continue
        reg.plugins[ep.name] = info
        if (allow is not None and ep.name not in allow) or ep.name in block:
            info.disabled = True
            continue
        obj, error = _import(ep, timeout)
        if error is not None:
            info.error = f"failed to import {ep.value}: {error}"
            continue
        candidates.append((ep.name, info.distribution, info.version, ep.value, obj))
    for name, obj in extra:
        module = getattr(obj, "__name__", repr(obj))
        if name in reg.plugins:
            reg.plugins[name].error = (
                f"plugin name {name!r} is used twice ({reg.plugins[name].module} and "
                f"{module}); the later one is not loaded"
            )
            continue
        reg.plugins[name] = PluginInfo(name, None, None, module)
        candidates.append((name, None, None, module, obj))

    staged = {name: _register_one(reg, name, obj) for name, _dist, _ver, _module, obj in candidates}
    _collect(reg, staged)
    return reg


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist else "no distribution"


def _import_timeout() -> float:
    value = os.environ.get("INSPECTOR_PLUGIN_IMPORT_TIMEOUT", "10")
    try:
        timeout = float(value)
    except ValueError:
        timeout = float("nan")
    if not 0 < timeout < 1e6:
        raise ValueError(f"INSPECTOR_PLUGIN_IMPORT_TIMEOUT: must be a number of seconds > 0 (got {value!r})")
    return timeout


class PluginExit(BaseException):
    """Raised in place of ``os._exit`` while a plugin is being imported."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


_import_lock = threading.Lock()


def _import(ep: md.EntryPoint, timeout: float) -> tuple[Any, str | None]:
    """``ep.load()`` in a daemon thread, for at most ``timeout`` seconds, with ``os._exit``
    turned into :class:`PluginExit`. Returns ``(object, None)`` or ``(None, reason)``."""
    result: list[Any] = []
    failure: list[str] = []

    def target() -> None:
        try:
            result.append(ep.load())
        except PluginExit as exc:
            failure.append(
                f"called os._exit({exc.code}) while being imported (intercepted; a plugin must never end the process)"
            )
        except BaseException as exc:  # noqa: BLE001 - any import failure is the plugin's
            failure.append(_short_error(exc))

    def intercepted_exit(code: int = 0) -> None:
        raise PluginExit(code)

    with _import_lock:
        real_exit = os._exit
        os._exit = intercepted_exit  # type: ignore[assignment]
        try:
            thread = threading.Thread(target=target, name=f"import-plugin-{ep.name}", daemon=True)
            thread.start()
            thread.join(timeout)
        finally:
            os._exit = real_exit
    if thread.is_alive():
        return None, (
            f"did not finish importing within {timeout:g} s (INSPECTOR_PLUGIN_IMPORT_TIMEOUT); "
            "not loaded. Does it block at import (a network call, a lock, input())?"
        )
    if failure:
        return None, failure[0]
    return result[0], None


def _register_one(reg: Registry, plugin_name: str, obj: Any) -> list[tuple[str, str, Any]]:
    """Run one plugin's registration hooks in its own plugin manager, so that one plugin's
    failure cannot stop another's (pluggy stops a hook call at the first exception). Returns
    what it registered, ``(what, name, object)``; nothing when it failed."""
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
        pm.hook.inspector_register_plc_links(register=collector("plc_link", PlcLink))
    except Exception as exc:  # noqa: BLE001
        info.error = f"failed to register: {_short_error(exc)}"
        return []
    return staged


def _collect(reg: Registry, staged: dict[str, list[tuple[str, str, Any]]]) -> None:
    """Enter every registered name into the registry, except names registered more than once:
    those are withheld from every plugin that registered them, each carrying the error."""
    claims: dict[tuple[str, str], list[str]] = {}
    for plugin_name, items in staged.items():
        for what, name, _cls in items:
            claims.setdefault((what, name), []).append(plugin_name)
    tables: dict[str, dict[str, Any]] = {
        "detector": reg.detectors,
        "source": reg.sources,
        "sink": reg.sinks,
        "command": reg.commands,
        "plc_link": reg.plc_links,
    }
    for plugin_name, items in staged.items():
        info = reg.plugins[plugin_name]
        lists = {
            "detector": info.detectors,
            "source": info.sources,
            "sink": info.sinks,
            "command": info.commands,
            "plc_link": info.plc_links,
        }
        problems = []
        for what, name, cls in items:
            owners = claims[(what, name)]
            if len(owners) > 1:
                if len(set(owners)) == 1:
                    problems.append(f"{what} {name!r} is registered twice by this plugin; not loaded")
                else:
                    others = ", ".join(repr(o) for o in sorted(set(owners)) if o != plugin_name)
                    problems.append(
                        f"{what} {name!r} is also registered by plugin {others}; neither is loaded under that "
                        f"name: uninstall one, or disable it with INSPECTOR_DISABLE_PLUGINS"
                    )
                continue
            tables[what][name] = cls
            lists[what].append(name)
            reg.owner[(what, name)] = plugin_name
        if problems:
            info.error = "; ".join(dict.fromkeys(problems))
