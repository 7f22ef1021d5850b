"""Rich consoles for the CLI. A terminal's own width is used; when the output is a pipe, a
file or `make` (no terminal and no COLUMNS), tables get 160 columns instead of rich's 80, so
the stats and history tables stay readable in logs."""

from __future__ import annotations

import os

from rich.console import Console

PIPE_WIDTH = 160


def console(*, stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, width=PIPE_WIDTH)
    return c
