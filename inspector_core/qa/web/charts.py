"""Small server-side SVG charts: a line chart, a Pareto chart, a p-chart.

Hand-written (about 150 lines) rather than a library: the dashboard must work offline with no
front-end build, the three charts are fixed, and SVG inline in the page needs no JavaScript.
Every text that reaches the SVG is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from markupsafe import Markup, escape

W, H = 640, 260
L, R, T, B = 52, 16, 16, 44  # margins
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _frame(title: str, body: list[str], *, cls: str) -> Markup:
    return Markup(
        f'<svg class="chart {cls}" role="img" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def _y_axis(lo: float, hi: float, fmt: str, ticks: int = 5) -> tuple[list[str], Callable[[float], float]]:
    ph = H - T - B

    def y(v: float) -> float:
        return T + ph - (v - lo) / ((hi - lo) or 1) * ph

    out = []
    for i in range(ticks + 1):
        v = lo + (hi - lo) * i / ticks
        yy = y(v)
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
        out.append(
            f'<text x="{L - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{escape(fmt.format(v))}</text>'
        )
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#333"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#333"/>')
    return out, y


def _x_labels(labels: Sequence[str], xs: Sequence[float], max_labels: int = 6) -> list[str]:
    step = max(1, -(-len(labels) // max_labels))
    return [
        f'<text x="{x:.1f}" y="{H - B + 16}" font-size="10" text-anchor="middle">{escape(lab)}</text>'
        for i, (lab, x) in enumerate(zip(labels, xs, strict=True))
        if i % step == 0
    ]


def empty(title: str, cls: str) -> Markup:
    return _frame(
        title,
        [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#888">no data in this window</text>'],
        cls=cls,
    )


def line_chart(
    title: str,
    series: dict[str, list[tuple[datetime, float | None]]],
    *,
    lo: float = 0.0,
    hi: float = 1.0,
    fmt: str = "{:.0%}",
    label_fmt: str = "%m-%d %H:%M",
) -> Markup:
    """One line per series over time (e.g. yield per station per period)."""
    times = sorted({t for pts in series.values() for t, v in pts if v is not None})
    if not times:
        return empty(title, "line")
    pw = W - L - R
    t0, t1 = times[0], times[-1]
    span = (t1 - t0).total_seconds() or 1.0

    def x(t: datetime) -> float:
        return L + (pw / 2 if t1 == t0 else (t - t0).total_seconds() / span * pw)

    body, y = _y_axis(lo, hi, fmt)
    body += _x_labels([t.strftime(label_fmt) for t in times], [x(t) for t in times])
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        shown = [(t, v) for t, v in pts if v is not None]
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for j, (t, v) in enumerate(shown))
        body.append(f'<path class="series" d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        body += [
            f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"><title>{escape(name)} '
            f"{t:%Y-%m-%d %H:%M}: {escape(fmt.format(v))}</title></circle>"
            for t, v in shown
        ]
        body.append(
            f'<text x="{L + 8 + 110 * i}" y="{H - 8}" font-size="11" fill="{color}">&#9632; {escape(name)}</text>'
        )
    return _frame(title, body, cls="line")


def pareto_chart(title: str, rows: Sequence[tuple[str, int]]) -> Markup:
    """Bars of counts, largest first, with the cumulative share as a line (right axis)."""
    if not rows:
        return empty(title, "pareto")
    total = sum(n for _, n in rows) or 1
    hi = max(n for _, n in rows)
    body, y = _y_axis(0, hi, "{:.0f}")
    pw = W - L - R
    bw = pw / len(rows)
    cum, pts = 0, []
    for i, (kind, n) in enumerate(rows):
        x0 = L + i * bw
        body.append(
            f'<rect class="bar" x="{x0 + bw * 0.15:.1f}" y="{y(n):.1f}" width="{bw * 0.7:.1f}" '
            f'height="{H - B - y(n):.1f}" fill="#1f77b4"><title>{escape(kind)}: {n}</title></rect>'
        )
        body.append(
            f'<text x="{x0 + bw / 2:.1f}" y="{H - B + 16}" font-size="11" text-anchor="middle">'
            f"{escape(kind[:14])}</text>"
        )
        cum += n
        pts.append((x0 + bw / 2, T + (H - T - B) * (1 - cum / total)))
    path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in enumerate(pts))
    body.append(f'<path d="{path}" fill="none" stroke="#d62728" stroke-width="2"/>')
    body += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="#d62728"/>' for px, py in pts]
    body.append(f'<text x="{W - R}" y="{T + 10}" font-size="11" fill="#d62728" text-anchor="end">cumulative %</text>')
    return _frame(title, body, cls="pareto")


def p_chart(title: str, points: Sequence[tuple[str, float, float, float, bool]], p_bar: float) -> Markup:
    """Reject rate per period with its 3-sigma limits (stepped) and the centre line; points
    outside the limits drawn red and larger."""
    if not points:
        return empty(title, "pchart")
    hi = min(1.0, max(max(p, u) for _, p, u, _, _ in points) * 1.15 or 0.1)
    body, y = _y_axis(0, hi, "{:.1%}")
    pw = W - L - R
    step = pw / len(points)
    xs = [L + step * (i + 0.5) for i in range(len(points))]
    body += _x_labels([lab for lab, *_ in points], xs)
    ucl = " ".join(
        f"{'M' if i == 0 else 'L'}{x - step / 2:.1f},{y(u):.1f} L{x + step / 2:.1f},{y(u):.1f}"
        for i, (x, (_, _, u, _, _)) in enumerate(zip(xs, points, strict=True))
    )
    lcl = " ".join(
        f"{'M' if i == 0 else 'L'}{x - step / 2:.1f},{y(lo):.1f} L{x + step / 2:.1f},{y(lo):.1f}"
        for i, (x, (_, _, _, lo, _)) in enumerate(zip(xs, points, strict=True))
    )
    body.append(f'<path d="{ucl}" fill="none" stroke="#888" stroke-dasharray="4 3"/>')
    body.append(f'<path d="{lcl}" fill="none" stroke="#888" stroke-dasharray="4 3"/>')
    body.append(f'<line x1="{L}" x2="{W - R}" y1="{y(p_bar):.1f}" y2="{y(p_bar):.1f}" stroke="#2ca02c"/>')
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y(p):.1f}" for i, (x, (_, p, *_)) in enumerate(zip(xs, points, strict=True))
    )
    body.append(f'<path class="series" d="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for x, (lab, p, u, lo, out) in zip(xs, points, strict=True):
        body.append(
            f'<circle class="{"out" if out else "in"}" cx="{x:.1f}" cy="{y(p):.1f}" r="{5 if out else 3}" '
            f'fill="{"#d62728" if out else "#1f77b4"}"><title>{escape(lab)}: {p:.2%} '
            f"(limits {lo:.2%} to {u:.2%}){' OUT OF CONTROL' if out else ''}</title></circle>"
        )
    body.append(
        f'<text x="{W - R}" y="{T + 10}" font-size="11" text-anchor="end" fill="#2ca02c">'
        f"p&#772; = {p_bar:.2%}; dashed: 3&#963; limits</text>"
    )
    return _frame(title, body, cls="pchart")
