"""Entry point of the ``inspector-anomaly`` plugin: the ``anomaly`` detector and ``inspector train anomaly``."""

from __future__ import annotations

from inspector_core import hookimpl


@hookimpl
def inspector_register_detectors(register):
    from inspector_anomaly.detector import Anomaly

    register(Anomaly)


@hookimpl
def inspector_register_commands(register):
    from inspector_anomaly.cli import train

    register(train)
