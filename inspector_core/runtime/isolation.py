"""Crash isolation: a step's detector in a worker process of its own (``isolation: process``).

For third-party native code: a segfault, an abort or an ``os._exit`` inside ``inspect`` ends
the worker process, not the station. The part it was inspecting is ERROR ("its worker process
died (signal SIGSEGV) ..."), naming the detector and its plugin, and the step starts a fresh
worker for the next part (:class:`~inspector_core.runtime.steps.StepWorker` does, as for a
detector that overran its budget; an overrun worker is killed, not left running).

How it works:
- The worker is started with the ``forkserver`` method (``spawn`` where that is missing): a
  fresh interpreter forks it, never the station's threaded process. It imports the plugin by its
  entry-point name, as the station did (a detector registered without one, as tests do, by its
  class's module), validates the step's config again and constructs and warms up the detector.
- Each part's view is copied once into a shared-memory block the worker maps
  (``multiprocessing.shared_memory``): the worker reads it in place, without a copy or a pickle
  of the pixels. The request (part id, origin, calibration, metadata, the poses the view carries
  and its placement) and the findings (with the pose the detector published, ``View.publish``)
  travel pickled over a pipe.
- The worker ignores SIGINT (the station's Ctrl-C handling decides) and dies with the station
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the station leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata as md
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from inspector_core.contract import Calibration, CannotJudge, Detector, Finding, View

STOP_TIMEOUT_S = 2.0
"""How long a worker may take to close its detector and exit before it is killed."""


class WorkerDied(RuntimeError):
    """The worker process ended while it held a request; the message says how."""


class WorkerFailure(Exception):
    """The detector raised in the worker; ``str()`` is its ``Type: message`` as in-thread."""


def _context() -> multiprocessing.context.BaseContext:
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:  # no forkserver on this platform
        return multiprocessing.get_context("spawn")
    # The fork server imports this module (numpy, the contract) once; each worker forks from it.
    ctx.set_forkserver_preload([__name__])
    return ctx


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "it did not exit"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class IsolatedDetector(Detector):
    """Stands in the station's process for a detector that runs in a worker process: same
    ``inspect``, ``files``, ``close``. Construct it in the thread that will use it; it waits
    until the worker has started (at most ``start_timeout_s``)."""

    name = "isolated"
    kinds = ("isolated",)

    def __init__(
        self,
        detector: type[Detector],
        config: Any,
        *,
        station_dir: Path,
        entry_point: str | None,
        who: str,
        start_timeout_s: float,
    ) -> None:
        self.detector_class = detector
        self.config = config
        self.station_dir = station_dir
        self.who = who
        self.worker_cpu_ms = 0.0
        """CPU time of ``inspect`` in the worker (its thread time), summed over parts."""
        self._shm: shared_memory.SharedMemory | None = None
        self._files: dict[str, Path] = {}
        spec = {
            "entry_point": entry_point,
            "module": detector.__module__,
            "qualname": detector.__qualname__,
            "detector": detector.name,
            "config": config.model_dump(mode="json"),
            "station_dir": str(station_dir),
        }
        ctx = _context()
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child, spec), name=f"inspector-worker-{detector.name}", daemon=True
        )
        self.process.start()
        child.close()
        ready = multiprocessing.connection.wait([self._conn, self.process.sentinel], start_timeout_s)
        if self._conn not in ready:
            self.terminate()
            if not ready:
                raise RuntimeError(f"its worker process did not start within {start_timeout_s:g} s")
            raise RuntimeError(f"its worker process died while starting ({_how(self.process.exitcode)})")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.terminate()
            raise RuntimeError(f"its worker process died while starting ({_how(self.process.exitcode)})") from exc
        if status != "ready":
            self.process.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"in its worker process: {value}")
        self._files = {k: Path(v) for k, v in value.items()}

    def files(self) -> dict[str, Path]:
        return dict(self._files)

    def inspect(self, view: View) -> list[Finding]:
        image = np.ascontiguousarray(view.image) if not view.image.flags.c_contiguous else view.image
        shm = self._block(image.nbytes)
        np.ndarray(image.shape, image.dtype, buffer=shm.buf)[...] = image
        cal = view.calibration.mm_per_px if view.calibration else None
        request = (
            shm.name,
            image.shape,
            image.dtype.str,
            view.part_id,
            view.origin,
            cal,
            view.meta,
            view.frame_size,
            dict(view.poses),
            view.placement,
            view.warped,
        )
        try:
            self._conn.send(request)
        except (OSError, ValueError) as exc:  # the worker is gone (a broken pipe)
            raise self._died(view.part_id) from exc
        ready = multiprocessing.connection.wait([self._conn, self.process.sentinel])
        if self._conn not in ready:
            raise self._died(view.part_id)
        try:
            status, value, cpu_ms, pose = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(view.part_id) from exc
        self.worker_cpu_ms += cpu_ms
        if status == "ok":
            if pose is not None:  # what the detector published on the worker's view, on this one
                view.publish(pose)
            return value
        if status == "cannot_judge":
            raise CannotJudge(value)
        raise WorkerFailure(value)

    def _block(self, nbytes: int) -> shared_memory.SharedMemory:
        """The shared block, grown (a new one) when a larger view comes."""
        if self._shm is None or self._shm.size < nbytes:
            old, self._shm = self._shm, shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
            if old is not None:  # the worker maps the new one by its name at the next request
                _release(old)
        return self._shm

    def _died(self, part_id: str) -> WorkerDied:
        self.process.join(1.0)
        return WorkerDied(
            f"{self.who}: its worker process died ({_how(self.process.exitcode)}) while inspecting part "
            f"{part_id!r}; the part is ERROR and the step starts a fresh worker"
        )

    def terminate(self) -> None:
        """Kill the worker now (an overrun, a second Ctrl-C): a process, unlike a thread, can be stopped."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(STOP_TIMEOUT_S)

    def close(self) -> None:
        try:
            if self.process.is_alive():
                self._conn.send(None)
                self.process.join(STOP_TIMEOUT_S)
        except (OSError, ValueError):
            pass
        finally:
            self.terminate()
            self._conn.close()
            if self._shm is not None:
                _release(self._shm)
                self._shm = None


def _release(shm: shared_memory.SharedMemory) -> None:
    shm.close()
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()


# ---------------------------------------------------------------------------- the worker process


def _detector_class(spec: dict[str, Any]) -> type[Detector]:
    """The detector class, by the plugin's entry point (as the station loaded it) or, for one
    registered without an entry point, by its class's module and name."""
    if spec["entry_point"] is not None:
        from inspector_core.plugins import GROUP, load

        eps = list(md.entry_points(group=GROUP, name=spec["entry_point"]))
        registry = load(entry_points=eps)
        cls = registry.detectors.get(spec["detector"])
        if cls is None:
            info = registry.plugins.get(spec["entry_point"])
            why = info.error if info is not None and info.error else "it does not register it"
            raise RuntimeError(f"plugin {spec['entry_point']!r} gave no detector {spec['detector']!r}: {why}")
        return cls
    if "<locals>" in spec["qualname"]:
        raise RuntimeError(
            f"detector {spec['detector']!r} ({spec['module']}.{spec['qualname']}) is not registered through an "
            "entry point and is defined inside a function: a worker process cannot import it; register it "
            "through an entry point (or define it at the top level of a module)"
        )
    obj: Any = importlib.import_module(spec["module"])
    for part in spec["qualname"].split("."):
        obj = getattr(obj, part)
    return obj


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn: multiprocessing.connection.Connection, spec: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    station_dir = Path(spec["station_dir"])
    try:
        cls = _detector_class(spec)
        config = cls.Config.model_validate(spec["config"], context={"station_dir": station_dir, "check_files": True})
        detector = cls(config, station_dir=station_dir)
        detector.warm_up(None)
        files = {k: str(v) for k, v in detector.files().items()}
    except BaseException as exc:  # noqa: BLE001 - the plugin's failure, reported by the station
        conn.send(("start_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", files))
    shm: shared_memory.SharedMemory | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if request is None:
            break
        name, shape, dtype, part_id, origin, mm_per_px, meta, frame_size, poses, placement, warped = request
        if shm is None or shm.name != name:
            if shm is not None:
                with contextlib.suppress(BufferError):  # the detector kept a reference to an earlier view
                    shm.close()
            # Registered again with the station's own resource tracker (this process shares it):
            # a no-op; the station unlinks the block.
            shm = shared_memory.SharedMemory(name=name)
        image = np.ndarray(shape, np.dtype(dtype), buffer=shm.buf)
        view = View(
            image,
            part_id,
            origin,
            Calibration(mm_per_px),
            meta,
            frame_size=frame_size,
            poses=poses,
            placement=placement,
            warped=warped,
        )
        t0 = time.thread_time()
        pose = None
        try:
            answer: tuple[str, Any] = ("ok", detector.inspect(view))
            pose = view.published  # a Pose (the contract's own dataclass) travels pickled
        except CannotJudge as exc:
            answer = ("cannot_judge", str(exc))
        except BaseException as exc:  # noqa: BLE001 - the plugin's failure is the part's ERROR
            answer = ("error", f"{type(exc).__name__}: {exc}")
        cpu_ms = (time.thread_time() - t0) * 1000
        del view, image
        try:
            conn.send((*answer, cpu_ms, pose))
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
            why = f"inspect() returned what cannot be sent to the station: {type(exc).__name__}: {exc}"
            conn.send(("error", why, 0.0, None))
    with contextlib.suppress(BaseException):  # the process ends anyway
        detector.close()
