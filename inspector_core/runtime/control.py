"""The running station's local control channel: ``inspector recipe STATION NAME`` talks to it.

A Unix socket beside the station file (``.NAME.control``; in the temporary folder when that path
is too long for a socket), served while the station runs, reachable by the station's user only
(mode 0600). One JSON line in, one JSON line out::

    {"op": "recipe", "name": "plate-b"}  ->  {"ok": true, "recipe": "plate-b", "ms": 412.0}
    {"op": "status"}                     ->  {"ok": true, "station": "demo", "recipe": "plate-a", "recipes": [...]}

A refused recipe answers ``{"ok": false, "error": "..."}``. The socket of a station that died is
found stale (nothing answers it) and replaced by the next run; a second run of the same station
file while one serves gets no channel (an event says so) instead of taking it over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector_core.runtime.line import RecipeRefused

if TYPE_CHECKING:
    from inspector_core.runtime.config import Station
    from inspector_core.runtime.station import StationRuntime

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
REQUEST_TIMEOUT_S = 120.0
"""How long a client waits for an answer: a changeover starts the recipe's detectors first."""


def control_path(station: Station) -> Path:
    """Where the station's control socket is."""
    path = station.directory / f".{station.path.stem}.control"
    if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes
        key = hashlib.sha256(str(station.path).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"inspector-{key}.control"
    return path


class ControlServer:
    """Serves :func:`control_path` for one :class:`StationRuntime` (one thread per request)."""

    def __init__(self, path: Path, runtime: StationRuntime, sock: socket.socket) -> None:
        self.path = path
        self.runtime = runtime
        self._sock = sock
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="inspector-control", daemon=True)

    @classmethod
    def start(cls, station: Station, runtime: StationRuntime) -> ControlServer | None:
        """Serving, or ``None`` (recorded as an event) when the socket cannot be made."""
        path = control_path(station)
        try:
            if path.exists() or path.is_symlink():
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                probe.settimeout(1.0)
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # stale: its station is gone
                else:
                    runtime.event(
                        "control_busy",
                        f"{path}: another run of this station serves its control channel; "
                        "`inspector recipe` reaches that one",
                    )
                    return None
                finally:
                    probe.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            sock.listen(8)
            sock.settimeout(0.25)
        except OSError as exc:
            runtime.event("control_unavailable", f"{path}: cannot serve the control channel: {exc}")
            return None
        server = cls(path, runtime, sock)
        server._thread.start()
        return server

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), name="inspector-control-request", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5.0)
                raw = b""
                while not raw.endswith(b"\n") and len(raw) <= MAX_REQUEST:
                    chunk = conn.recv(MAX_REQUEST)
                    if not chunk:
                        break
                    raw += chunk
                reply = self._reply(raw)
            except Exception as exc:  # noqa: BLE001 - a bad client costs its own request
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def _reply(self, raw: bytes) -> dict[str, Any]:
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "not a JSON line"}
        rt = self.runtime
        op = req.get("op") if isinstance(req, dict) else None
        if op == "status":
            return {
                "ok": True,
                "station": rt.station.name,
                "recipe": rt.recipe,
                "recipes": list(rt.station.recipes),
                "changeovers": len(rt._changeover.changeovers) if hasattr(rt, "_changeover") else 0,
            }
        if op == "recipe" and isinstance(req.get("name"), str):
            try:
                seconds = rt.select_recipe(req["name"], by=str(req.get("by") or "the control channel"))
            except RecipeRefused as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "recipe": rt.recipe, "ms": round(seconds * 1000, 1)}
        return {"ok": False, "error": 'unknown request; send {"op": "status"} or {"op": "recipe", "name": NAME}'}


class ControlError(RuntimeError):
    """The station's control channel cannot be reached; the message says why and what to do."""


def request(station: Station, payload: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """Send one request to the running station of ``station``'s file and return its answer."""
    path = control_path(station)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"station {station.name!r} is not running (nothing serves {path}); start it with "
                f"`inspector run {station.path}`"
            ) from exc
        sock.sendall(json.dumps(payload).encode() + b"\n")
        raw = b""
        while not raw.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except TimeoutError as exc:
        raise ControlError(f"station {station.name!r} did not answer within {timeout:g} s ({path})") from exc
    except OSError as exc:
        raise ControlError(f"station {station.name!r}: {path}: {exc}") from exc
    finally:
        sock.close()
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"station {station.name!r} answered something that is not JSON ({path})") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"station {station.name!r} answered {answer!r}")
    return answer
