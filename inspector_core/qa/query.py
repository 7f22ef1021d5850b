"""The one way QA reads the store (a facade over filters, history, stats, spc and whatif): typed filters in, plain records out.

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
- *first-pass yield*: over distinct part ids per station whose first inspection falls in the
  bucket: the share that were inspected exactly once (in the window) and passed.
- *latency p50/p99*: nearest-rank percentiles of ``inspections.latency_ms`` (exact; window
  functions, which SQLite >= 3.25 and PostgreSQL both have).
- *p-chart*: per bucket, p = rejects / judged parts; centre line p-bar over the window;
  limits p-bar +- 3 sqrt(p-bar (1 - p-bar) / n) (lower clipped at 0); points outside flagged.
"""

from __future__ import annotations

from inspector_core.qa.dialect import Buckets
from inspector_core.qa.filters import (
    MAX_PAGE,
    REJECTS,
    HistoryFilter,
    Period,
    QueryError,
    Verdict,
    glob_to_like,
    make_filter,
)
from inspector_core.qa.history import (
    CropRow,
    DefectView,
    InspectionDetail,
    InspectionRow,
    Page,
    StepView,
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
    SMALL_WINDOW_ROWS,
    ParetoRow,
    PChartPoint,
    PeriodStats,
    Stats,
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
    "VERDICTS",
    "Buckets",
    "Change",
    "CropRow",
    "DefectView",
    "EXACT_PERIOD_LATENCY_MAX_ROWS",
    "HistoryFilter",
    "InspectionDetail",
    "InspectionRow",
    "MAX_PAGE",
    "PChartPoint",
    "Page",
    "ParetoRow",
    "Period",
    "PeriodStats",
    "QueryError",
    "REJECTS",
    "RULE_FIELDS",
    "RuleSet",
    "SMALL_WINDOW_ROWS",
    "Stats",
    "StepView",
    "Verdict",
    "WhatIf",
    "count",
    "crop_image",
    "crops",
    "glob_to_like",
    "history",
    "inspection",
    "iter_crops",
    "iter_history",
    "kinds",
    "make_filter",
    "p_chart",
    "parse_overrides",
    "run_rules",
    "stations",
    "stats",
    "stats_from_inspections",
    "uses_rollup",
    "whatif",
]
