"""Product changeover at run time: which recipe each part is inspected under, and the switch.

The station's pipeline (runtime/pipeline.py) holds a lane per started step of every recipe used
so far; a part's views go to its recipe's lanes only, so parts of two recipes overlap like any
two parts and their verdicts still come out in capture order. A step whose detector, config,
budget, floor and isolation are the same in two recipes is one lane, shared (one model loaded).

What a station may rely on (tested in ``tests/core/test_recipes.py`` and ``tests/line/``):

- A part is bound to a recipe when it is captured (:meth:`Changeover.for_frame`): the active
  one, or the one its trigger's product code selects. Parts captured before a switch finish
  under the recipe they were captured with, whatever is selected meanwhile.
- :meth:`Changeover.select` starts and warms the next recipe's detectors (references, models)
  in the caller's thread, adds their lanes, and only then makes it active: the parts after the
  switch find them ready. It returns once the recipe is active (the acknowledgement), and
  records a ``recipe_changeover`` event with its timing. An unknown name is refused
  (:class:`~inspector_core.runtime.line.RecipeRefused`); a recipe whose detectors fail to start
  is refused with the reason, and the active recipe stays.
- A product code that selects no recipe makes its part ERROR (fail closed), never PASS.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from inspector_core.runtime.line import RecipeRefused
from inspector_core.runtime.recipes import recipe_of_product

if TYPE_CHECKING:
    from inspector_core.contract import Frame
    from inspector_core.runtime.config import Station, Step
    from inspector_core.runtime.pipeline import Pipeline
    from inspector_core.runtime.steps import StepOutcome, StepWorker

log = logging.getLogger(__name__)

WAIT_POLL_S = 0.1


@dataclasses.dataclass(eq=False)
class Recipe:
    """One recipe at run time: its station and, once started, the pipeline lane of each step."""

    name: str | None
    station: Station
    lanes: list[int] | None = None
    error: str | None = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    starting: bool = False

    @property
    def hash(self) -> str | None:
        return self.station.recipe_hash

    def views(self, views: Sequence[Any], size: int) -> list[Any]:
        """The step views of a part (a :class:`View`, ``None``, or what the pipeline takes for
        a step that waits for another) laid out on the pipeline's ``size`` lanes."""
        assert self.lanes is not None
        out: list[Any] = [None] * size
        for lane, view in zip(self.lanes, views, strict=True):
            out[lane] = view
        return out

    def outcomes(self, outcomes: list[StepOutcome | None]) -> list[StepOutcome | None]:
        """What this recipe's steps answered, in step order, from a part's outcomes per lane."""
        assert self.lanes is not None
        return [outcomes[lane] if lane < len(outcomes) else None for lane in self.lanes]


def _same_worker(a: Step, b: Step) -> bool:
    """Whether one started detector can serve both steps (a ROI is the view's, not the detector's)."""
    return (a.name, a.detector, a.config, a.budget_ms, a.report_floor, a.isolation) == (
        b.name,
        b.detector,
        b.config,
        b.budget_ms,
        b.report_floor,
        b.isolation,
    )


class Changeover:
    """The station's recipes during a run. ``start_steps(station)`` starts (and warms) workers
    for the given steps; ``on_event`` records a station event."""

    def __init__(
        self,
        station: Station,
        workers: list[StepWorker],
        pipeline: Pipeline,
        *,
        start_steps: Callable[[list[Step]], list[StepWorker]],
        on_event: Callable[[str, str], None],
        describe: Callable[[list[StepWorker]], str] | None = None,
        on_switch: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.workers = workers
        """Every started worker (the station closes them at the end of the run)."""
        self._start_steps = start_steps
        self._on_event = on_event
        self._describe = describe
        """The model files of workers a changeover started (the run's provenance records the first ones)."""
        self._on_switch = on_switch
        """Told each switch (the recipe's name and product codes): the PLC link shows it."""
        self._lock = threading.Condition()
        self._select_lock = threading.Lock()
        self.recipes: dict[str | None, Recipe] = {}
        if station.recipes:
            for name, st in station.recipes.items():
                self.recipes[name] = Recipe(name, st)
        else:
            self.recipes[None] = Recipe(None, station)
        active = self.recipes[station.recipe]
        active.lanes = list(range(len(workers)))
        active.ready.set()
        self.active = active
        self._lane_steps: list[Step] = [w.step for w in workers]
        self.station = station
        self.changeovers: list[dict[str, Any]] = []
        """Each switch: recipe from/to, ``requested``/``active`` (monotonic s), detectors started."""

    # -------------------------------------------------------------- selecting

    def show_active(self) -> None:
        """Tell the PLC link the recipe active at the start (its ``ActiveRecipe`` / ``RECIPE_STATE``
        would otherwise read empty / "changing over" until the first changeover)."""
        r = self.active
        if self._on_switch is None or r.name is None:
            return
        spec = self.station.spec.recipes.get(r.name)
        try:
            self._on_switch(r.name, tuple(spec.products) if spec is not None else ())
        except Exception:  # the PLC is told at the next changeover
            log.exception("showing recipe %s to the PLC", r.name)

    def preload(self) -> None:
        """Start every recipe marked ``preload: true`` (at the station's start)."""
        for name, r in self.recipes.items():
            spec = self.station.spec.recipes.get(name) if name is not None else None
            if spec is not None and spec.preload and r.lanes is None:
                self._prepare(r)
                if r.error is not None:
                    raise RecipeRefused(r.error)

    def select(self, name: str, *, by: str = "api") -> float:
        """Make ``name`` the active recipe once its detectors are started and warmed; return the
        seconds the request took. Raises :class:`RecipeRefused` for an unknown recipe, or one
        whose detectors failed to start (the active recipe stays)."""
        t0 = time.monotonic()
        r = self._known(name)
        with self._select_lock:  # one changeover at a time, in the order asked
            before = self.active
            fresh, started = self._prepare(r)
            if r.error is not None:
                msg = f"recipe {name!r} (asked by {by}) cannot start: {r.error}; recipe {before.name!r} stays active"
                self._on_event("recipe_refused", msg)
                raise RecipeRefused(msg)
            with self._lock:
                self.active = r
            t1 = time.monotonic()
            entry = {"from": before.name, "to": r.name, "by": by, "requested": t0, "active": t1, "started": fresh}
            self.changeovers.append(entry)
        if before is not r and self._on_switch is not None and r.name is not None:
            spec = self.station.spec.recipes.get(r.name)
            try:
                self._on_switch(r.name, tuple(spec.products) if spec is not None else ())
            except Exception:  # the switch stands; the PLC is told at its next changeover
                log.exception("showing recipe %s to the PLC", r.name)
        if before is not r:
            models = ""
            if started and self._describe is not None:
                try:
                    models = f"; models started: {self._describe(started)}"
                except Exception as exc:  # noqa: BLE001 - a file gone since: said, the switch stands
                    models = f"; models started: not described ({type(exc).__name__}: {exc})"
            self._on_event(
                "recipe_changeover",
                f"recipe {before.name} -> {r.name} (asked by {by}): active {1000 * (t1 - t0):.1f} ms after the "
                f"request ({fresh} detector(s) started and warmed first, the rest shared or already running); "
                f"parts captured before it finish under {before.name}; hash {r.hash}{models}",
            )
        return t1 - t0

    def _known(self, name: str) -> Recipe:
        r = self.recipes.get(name) if self.station.recipes else None
        if r is None:
            by_product = recipe_of_product(self.station, name) if self.station.recipes else None
            r = self.recipes.get(by_product) if by_product is not None else None
        if r is None:
            if not self.station.recipes:
                msg = f"recipe {name!r} asked for; this station has no recipes (docs/recipes.md)"
            else:
                msg = f"no recipe {name!r} (recipes: {', '.join(str(n) for n in self.recipes)})"
            self._on_event("recipe_refused", msg)
            raise RecipeRefused(msg)
        return r

    def _prepare(self, r: Recipe) -> tuple[int, list[StepWorker]]:
        """Start ``r``'s detectors not running yet and add their lanes (another thread already
        doing so is waited for); the number started here, and those workers."""
        with self._lock:
            while r.starting:
                self._lock.wait(WAIT_POLL_S)
            if r.lanes is not None:
                return 0, []
            r.starting, r.error = True, None
            shared = list(self._lane_steps)
        try:
            lanes: list[int | None] = []
            new: list[Step] = []
            for step in r.station.steps:
                at = next((i for i, s in enumerate(shared) if _same_worker(s, step)), None)
                lanes.append(at)
                if at is None:
                    new.append(step)
            try:
                workers = self._start_steps(new) if new else []
            except Exception as exc:  # noqa: BLE001 - StationError, a plugin's failure: the request is refused
                r.error = str(exc)
                return 0, []
            added = self.pipeline.add_lanes(workers) if workers else []
            if added is None:
                for w in workers:
                    w.close()
                r.error = "the station is stopping"
                return 0, []
            with self._lock:
                self.workers.extend(workers)
                self._lane_steps.extend(w.step for w in workers)
                it = iter(added)
                r.lanes = [at if at is not None else next(it) for at in lanes]
            r.ready.set()
            return len(workers), workers
        finally:
            with self._lock:
                r.starting = False
                self._lock.notify_all()

    # -------------------------------------------------------------- the parts

    def for_frame(self, frame: Frame) -> tuple[Recipe | None, str | None]:
        """The recipe a part just captured is inspected under, or why it has none: the active
        one (on a line: the one active at its trigger), or (a station with recipes) the one its
        trigger's product code selects, whose changeover is asked for in the background when it
        is not the active one."""
        trig = getattr(frame, "trigger", None)
        product = trig.product if trig is not None else None
        if not product or not self.station.recipes:
            meta = frame.meta if isinstance(frame.meta, dict) else {}
            at_trigger = self.recipes.get(meta.get("plc_recipe")) if self.station.recipes else None
            with self._lock:
                return at_trigger or self.active, None
        name = recipe_of_product(self.station, product)
        if name is None:
            return None, (
                f"product code {product!r} selects no recipe (recipes: {', '.join(self.station.recipes)}; "
                "a recipe's products: list its codes)"
            )
        r = self.recipes[name]
        with self._lock:
            if r is self.active or r.starting:
                return r, None
        threading.Thread(target=self._select_quietly, args=(name, product), daemon=True).start()
        return r, None

    def _select_quietly(self, name: str, product: str) -> None:
        try:
            self.select(name, by=f"product code {product!r} with a trigger")
        except RecipeRefused as exc:
            log.error("%s", exc)

    def wait(self, r: Recipe, abort: threading.Event) -> str | None:
        """Until ``r`` can inspect (its detectors started); why it cannot, else ``None``."""
        while not r.ready.wait(WAIT_POLL_S):
            if r.error is not None and not r.starting:
                return f"recipe {r.name}: {r.error}"
            if abort.is_set():
                return "not inspected: the station was stopped while its recipe's detectors were starting"
        return None
