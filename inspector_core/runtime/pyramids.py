"""One `View.pyramid` for the steps of a part whose views show the same pixels (issue 12).

Host-side: the runtime calls `share_pyramids` on a part's views before it hands them to the
steps (runtime/inspection.py, and runtime/fixture.py for views placed by a shift); a plugin only
calls `View.pyramid`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inspector_core.contract import View


def share_pyramids(views: Iterable[Any]) -> None:
    """Give the views among ``views`` that show the same
    pixels (the same memory, shape and strides: the same frame and ROI, not warped) one shared
    `View.pyramid`, so that each level is computed once for all of them. Call it before the views
    are handed to the steps. A warped view keeps its own; what is not a `View` is passed over."""
    first: dict[tuple[Any, ...], View] = {}
    for v in views:
        if not isinstance(v, View) or v.warped:
            continue
        img = v.image
        key = (img.__array_interface__["data"][0], img.shape, img.strides, img.dtype.str)
        owner = first.setdefault(key, v)
        if owner is not v:
            object.__setattr__(v, "_levels", owner._levels)
