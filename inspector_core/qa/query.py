"""The one way QA reads the store (a facade over filters, history, stats, spc and whatif): typed
filters in, plain records out.

The command line (:mod:`inspector_core.qa.cli`) and the dashboard (:mod:`inspector_core.qa.web`)
both sit on this module. No SQL is assembled from strings: every user value reaches the
database as a bound parameter, part-id globs are translated to a pattern with escaping, and
the only dialect-specific SQL (time buckets, glob matching) is compiled from typed integers.

Times: the store keeps naive UTC. A filter's ``since``/``until`` may be aware (converted) or
naive (taken as UTC). Stats buckets (hour, shift, day) are computed in SQL on UTC shifted by a
fixed ``utc_offset_h`` (whole-hour offsets; a DST change moves one bucket boundary by an hour).

Definitions a caller may rely on:

- *parts*: inspections in the window (every frame is one inspection, NOT_INSPECTED included).
- *rejects*: FAIL + ERROR (ERROR is a reject: the station fails closed).
- *yield*: PASS / (parts - NOT_INSPECTED), i.e. over the parts that were judged.
- *first-pass yield*: first-pass parts / first parts. A *first part* is a part id's first
  inspection at its station, ever (``inspections.first_of_part``), counted in the bucket it
  falls in, if it matches the filter; it is *first-pass* if it passed and its part id has no
  other inspection at that station, ever (before, inside or after the window). So a part
  inspected again later stops being first-pass in every window, and a part first inspected
  before the window is not one of the window's parts. One rule for every path
  (:func:`~inspector_core.qa.stats.first_pass_part`, and the roll-up the writer keeps by it):
  a window that splits a part's inspections gives the same figure from the roll-up and from
  the inspections.
- *latency p50/p99*: nearest-rank percentiles of ``inspections.latency_ms`` (exact; window
  functions, which SQLite >= 3.25 and PostgreSQL both have).
- *p-chart*: per bucket, p = rejects / judged parts; centre line p-bar over the window;
  limits p-bar +- 3 sqrt(p-bar (1 - p-bar) / n) (lower clipped at 0); points outside flagged.
"""

from __future__ import annotations

from inspector_core.qa.dialect import Buckets
from inspector_core.qa.filters import (
    MAX_ID,
    MAX_PAGE,
    REJECTS,
    HistoryFilter,
    Period,
    QueryError,
    Verdict,
    glob_to_like,
    make_filter,
    parse_when,
)
from inspector_core.qa.history import (
    CropRow,
    DefectView,
    InspectionDetail,
    InspectionRow,
    Page,
    count,
    crop_image,
    crops,
    history,
    inspection,
    iter_crops,
    iter_history,
    kinds,
    stations,
)
from inspector_core.qa.spc import p_chart
from inspector_core.qa.stats import (
    EXACT_PERIOD_LATENCY_MAX_ROWS,
    ParetoRow,
    PChartPoint,
    PeriodStats,
    RecipeStats,
    Stats,
    first_pass_part,
    recipe_split,
    stats,
    stats_from_inspections,
    uses_rollup,
)
from inspector_core.qa.whatif import (
    RULE_FIELDS,
    Change,
    RuleSet,
    WhatIf,
    parse_overrides,
    run_rules,
    whatif,
)
from inspector_core.store.schema import VERDICTS

__all__ = [
    "RecipeStats",
    "recipe_split",
    "EXACT_PERIOD_LATENCY_MAX_ROWS",
    "MAX_ID",
    "MAX_PAGE",
    "REJECTS",
    "RULE_FIELDS",
    "VERDICTS",
    "Buckets",
    "Change",
    "CropRow",
    "DefectView",
    "HistoryFilter",
    "InspectionDetail",
    "InspectionRow",
    "PChartPoint",
    "Page",
    "ParetoRow",
    "Period",
    "PeriodStats",
    "QueryError",
    "RuleSet",
    "Stats",
    "Verdict",
    "WhatIf",
    "count",
    "crop_image",
    "crops",
    "first_pass_part",
    "glob_to_like",
    "history",
    "inspection",
    "iter_crops",
    "iter_history",
    "kinds",
    "make_filter",
    "p_chart",
    "parse_when",
    "parse_overrides",
    "run_rules",
    "stations",
    "stats",
    "stats_from_inspections",
    "uses_rollup",
    "whatif",
]
