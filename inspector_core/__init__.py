"""Inspector: a quality-inspection host for manufacturing lines.

Plugin authors need only this package's root::

    from inspector_core import hookimpl, Detector, Finding, View, PluginConfig
"""

from inspector_core.contract import (
    Alarm,
    Calibration,
    CannotJudge,
    Detector,
    EmptyConfig,
    Finding,
    Frame,
    FrameSource,
    PluginConfig,
    Pose,
    Report,
    Sink,
    SourceContext,
    View,
)
from inspector_core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Alarm",
    "Calibration",
    "CannotJudge",
    "Detector",
    "EmptyConfig",
    "Finding",
    "Frame",
    "FrameSource",
    "PluginConfig",
    "Pose",
    "Report",
    "Sink",
    "SourceContext",
    "View",
    "__version__",
    "hookimpl",
]
