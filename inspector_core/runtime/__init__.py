"""The station runtime: station config, verdict rules, step workers, crops, progress, the station."""

from __future__ import annotations
