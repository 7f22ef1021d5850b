"""Every hook of Inspector's plugin contract, in one file.

Plugins implement these with ``from inspector_core import hookimpl`` and are found through
the entry-point group ``inspector.plugins`` (see ``plugins/`` for built-in examples: each is
packaged exactly as a third-party plugin would be).

All hooks are *registration* hooks: they receive a ``register`` callback and hand the host
typed objects. The host, not pluggy's call loop, decides when and in what order those objects
run (a station's steps run in the order its config lists them). The hooks are called once,
at start-up, after every plugin is loaded; they must be cheap: import heavy libraries inside
the registered class's methods, not at module import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from inspector_core.contract import Detector, FrameSource, PlcLink, Sink

PROJECT = "inspector"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def inspector_register_detectors(register: Callable[[type[Detector]], None]) -> None:
    """Register detector classes.

    Called once at start-up. Call ``register(cls)`` for each `Detector`
    subclass the plugin provides. ``cls.name`` must be unique among installed plugins: when
    two plugins register the same name (a third party's ``scratch`` beside the built-in one),
    neither class is registered under it and both plugins are listed with a load error naming
    the other, so a station using that name is refused at validation instead of running
    whichever plugin happens to load first. The same holds for sources, sinks and commands.

    :param register: takes a Detector subclass with ``name``, ``kinds`` and ``Config`` set.
    :return: nothing; use ``register``.
    """


@hookspec
def inspector_register_sources(register: Callable[[type[FrameSource]], None]) -> None:
    """Register frame-source classes (camera, video, folder, ...).

    Called once at start-up. A station config selects one by ``source.type`` (the class's
    ``name``) and validates ``source.config`` against its ``Config``.

    :param register: takes a FrameSource subclass with ``name`` and ``Config`` set.
    :return: nothing; use ``register``.
    """


@hookspec
def inspector_register_sinks(register: Callable[[type[Sink]], None]) -> None:
    """Register verdict-sink classes (MQTT, webhook, PLC, file, ...).

    Called once at start-up. A station config lists sinks by ``sinks[i].type``. A sink
    receives each verdict only after it is committed to the store.

    :param register: takes a Sink subclass with ``name`` and ``Config`` set.
    :return: nothing; use ``register``.
    """


@hookspec
def inspector_register_commands(register: Callable[[click.Command], None]) -> None:
    """Register extra ``inspector`` CLI commands (``inspector train ...``).

    Called once when the CLI starts. Pass a ``click.Command`` or ``click.Group``; its name
    becomes a sub-command. Import heavy libraries inside the command's function, so that
    ``inspector --help`` stays fast and the station runtime never imports them.

    :param register: takes a click command or group.
    :return: nothing; use ``register``.
    """


@hookspec
def inspector_register_plc_links(register: Callable[[type[PlcLink]], None]) -> None:
    """Register line-protocol classes: the station's side of a PLC handshake (Modbus TCP,
    OPC UA, ...).

    Called once at start-up. A station config selects one by ``line.protocol`` (the class's
    ``name``) and validates ``line.config`` against its ``Config``. See ``docs/line.md``.

    :param register: takes a PlcLink subclass with ``name`` and ``Config`` set.
    :return: nothing; use ``register``.
    """
