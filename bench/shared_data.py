"""Where the real photographs are: ``$INSPECTOR_DATA``, else ``../shared/data`` beside the
checkout (their README gives the licences; they are never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ.get("INSPECTOR_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
