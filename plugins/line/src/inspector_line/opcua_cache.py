"""A cache of asyncua's standard address space, so that a station does not build it at every start.

asyncua's ``Server.init()`` builds OPC UA's standard nodes (namespace 0) from generated code:
5-9 s on the project's loaded 2-core machine, nearly all of the link's start-up. asyncua can keep
them in a ``shelve`` file (``init(shelf_file=...)``) and load them lazily on the next start
(0.2-0.5 s here), but its check for an existing shelf looks for ``PATH`` or ``PATH.db``, while
Python's portable ``dbm.dumb`` (the only dbm in some builds, this one included) writes
``PATH.dat`` / ``PATH.dir``: the shelf is written and never read. This module gives asyncua's
own mechanism a place that works:

- the cache is a folder per asyncua and Python version under ``$INSPECTOR_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/inspector``, else ``~/.cache/inspector``;
- the first start lets asyncua build and write its shelf into a fresh temporary folder, adds the
  ``PATH.db`` marker asyncua's check wants, and renames the folder into place (atomic: a station
  starting at the same time keeps its own and discards it; a reader never sees a half-written
  cache);
- a shelf is unpickled when loaded, so a cache folder is used only when it belongs to this user
  and nobody else can write it (else it is ignored, with a warning, and the nodes are built).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SHELF = "aspace"


def cache_root() -> Path:
    env = os.environ.get("INSPECTOR_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "inspector"


def cache_dir() -> Path:
    import asyncua

    version = getattr(asyncua, "__version__", "unknown")
    return cache_root() / f"asyncua-{version}-py{sys.version_info[0]}{sys.version_info[1]}-aspace"


def _trusted(folder: Path) -> bool:
    """Owned by this user, writable by nobody else (the folder and the files in it)."""
    for path in (folder, *folder.iterdir()):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def usable_shelf() -> Path | None:
    """The cached shelf to load, or ``None`` (no cache yet, or one that is not trusted)."""
    folder = cache_dir()
    shelf = folder / SHELF
    if not (folder / f"{SHELF}.db").is_file():
        return None
    if not _trusted(folder):
        log.warning("ignoring the OPC UA address-space cache %s: not owned by this user or writable by others", folder)
        return None
    return shelf


def new_shelf() -> Path | None:
    """A fresh temporary folder beside the cache for asyncua to write its shelf into, or ``None``
    when the cache root cannot be written (then the nodes are built at every start)."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=".aspace-", dir=root))
    except OSError as exc:
        log.warning("no OPC UA address-space cache (%s): the standard nodes are built at every start", exc)
        return None
    return tmp / SHELF


def publish_shelf(shelf: Path) -> bool:
    """Move the folder asyncua has just written ``shelf`` into to the cache's place. ``False``
    when another station got there first (its cache is used; this one is removed) or the shelf
    is missing."""
    tmp = shelf.parent
    try:
        if not any(p.name.startswith(SHELF) for p in tmp.iterdir()):
            return False
        (tmp / f"{SHELF}.db").touch()  # the marker asyncua's check looks for
        for path in tmp.iterdir():
            os.chmod(path, 0o600)
        os.chmod(tmp, 0o700)
        os.rename(tmp, cache_dir())
        return True
    except OSError:
        return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
