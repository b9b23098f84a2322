"""Inline SVG charts for the dashboard: small pure functions from numbers to markup.

No JavaScript, no stylesheet, no font or network fetch: the page opens from disk. Every
text (titles, labels, series names, tooltips) is escaped; the callers pass numbers and a
``fmt`` that turns a number into its label. Each chart is drawn in a ``viewBox`` and scales
to the width of its container.

Conventions: the x axis of `line_chart` and `bar_chart` is ordered categories (sessions or
dates as text, oldest first), evenly spaced; the y axis is linear with "nice" ticks
(1, 2, 2.5 or 5 times a power of ten). A `gauge` shows ``value / limit`` as a filled bar,
green below `WARN_AT`, amber below `BAD_AT`, red from there (and beyond the limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup, escape

SERIES_COLOURS = ("#0969da", "#bc4c00", "#8250df", "#1a7f37")
GOOD, WARN, BAD = "#2da44e", "#d4a72c", "#cf222e"
GRID, AXIS, TEXT, MUTED, TRACK = "#e6e8eb", "#8c959f", "#1f2328", "#57606a", "#eaeef2"
WARN_AT, BAD_AT = 0.7, 0.9
MAX_POINTS_WITH_TOOLTIPS = 400
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'

Formatter = Callable[[float], str]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (first <= low, last >= high)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"nice_ticks needs finite bounds, got low={low}, high={high}")
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.01 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    start, stop = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    return [float(f"{start + i * step:.12g}") for i in range(int(round((stop - start) / step)) + 1)]


def tick_formatter(ticks: Sequence[float]) -> Formatter:
    """Thousands separators and just enough decimals to tell ``ticks`` apart."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(ticks[0]) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    while decimals < 6 and any(abs(float(f"{t:.{decimals}f}") - t) > 1e-9 * max(1.0, abs(t)) for t in ticks):
        decimals += 1  # a step of 0.25 needs two decimals, not one (0.2, 0.8)
    return lambda v: f"{v:,.{decimals}f}"


def percent(decimals: int = 0) -> Formatter:
    """Fractions as percentages: ``percent(1)(0.1234) == "12.3%"``."""
    return lambda v: f"{100 * v:,.{decimals}f}%"


def basis_points(value: float) -> str:
    return f"{value:,.1f} bp"


def dollars(value: float) -> str:
    """US dollars with enough digits to be true: ``$1,234.50``, ``$0.004`` (never ``$0.00`` for an
    amount that is not zero). One formatter for every dollar amount: `research_lib.llm._cost.format_usd`."""
    from research_lib.units import format_usd

    return format_usd(value)


def usage_colour(fraction: float | None) -> str:
    """Green, amber or red for the share of a limit in use (grey when unknown)."""
    if fraction is None or not math.isfinite(fraction):
        return AXIS
    return GOOD if fraction < WARN_AT else WARN if fraction < BAD_AT else BAD


def _text(x: float, y: float, content, *, size: int = 11, anchor: str = "start", fill: str = MUTED,
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}">{escape(content)}</text>')


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'style="max-width:{width}px;display:block" role="img" aria-label="{escape(title)}" {_FONT}>'
            f"<title>{escape(title)}</title>")
    return Markup(head + "".join(body) + "</svg>")


def _x_positions(n: int, left: float, right: float) -> list[float]:
    if n == 1:
        return [(left + right) / 2]
    return [left + i * (right - left) / (n - 1) for i in range(n)]


def _segments(xs: Sequence[float], labels: Sequence[str], values: Sequence[float | None]) -> list[list[tuple]]:
    """Runs of consecutive finite values as ``(x, label, value)`` (None and NaN break a line)."""
    segments: list[list[tuple]] = [[]]
    for xi, label, v in zip(xs, labels, values):
        if v is None or not math.isfinite(v):
            segments.append([])
        else:
            segments[-1].append((xi, label, v))
    return [s for s in segments if s]


def _label_indices(n: int, most: int) -> list[int]:
    """At most ``most`` of ``n`` positions to label: all, or every k-th from the first (a regular
    stride, so that neighbouring labels never crowd)."""
    if n <= most:
        return list(range(n))
    return list(range(0, n, math.ceil(n / max(most, 1))))


def _spread_indices(n: int, most: int) -> list[int]:
    """At most ``most`` positions spread over ``n``, the first and the last among them."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def _no_data(title: str, width: int) -> Markup:
    return _svg(width, 60, title, [_text(width / 2, 34, f"{title}: no data yet", anchor="middle")])


def _frame(title: str, y_label: str, ticks: list[float], scale: Callable[[float], float], left: float, right: float,
           fmt: Formatter) -> list[str]:
    """The title, the y axis' label, and a labelled grid line per tick."""
    out = [_text(left - 70, 16, title, size=13, fill=TEXT, weight="600")]
    if y_label:
        out.append(_text(left - 70, 31, y_label, size=10))
    for t in ticks:
        y = scale(t)
        out.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(_text(left - 6, y + 4, fmt(t), anchor="end"))
    return out


def line_chart(x: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str,
               y_label: str = "", fmt: Formatter | None = None, dashed: Sequence[str] = (),
               width: int = 720, height: int = 260) -> Markup:
    """Lines over the ordered categories ``x``, one per entry of ``series`` (values aligned with
    ``x``; None leaves a gap), with a legend, y ticks and grid, and a tooltip per point.

    ``fmt`` labels values in tooltips (and the ticks; default: `tick_formatter`); the series
    named in ``dashed`` are drawn dashed.
    """
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not x or not values:
        return _no_data(title, width)
    left, right, top, bottom = 78.0, width - 16.0, 40.0, height - 34.0
    legend_y = _legend_y(title, list(series), right)
    top += LEGEND_LINE if legend_y > 16.0 else 0.0
    ticks = nice_ticks(min(values), max(values))
    tick_fmt = fmt or tick_formatter(ticks)
    lo, hi = ticks[0], ticks[-1]

    def scale(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    xs = _x_positions(len(x), left + 6, right - 6)
    body = _frame(title, y_label, ticks, scale, left, right, tick_fmt)
    body.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{AXIS}"/>')
    for i in _spread_indices(len(x), 6):
        anchor = "start" if i == 0 and len(x) > 1 else "end" if i == len(x) - 1 and len(x) > 1 else "middle"
        body.append(_text(xs[i], bottom + 16, x[i], anchor=anchor))
    body += _legend(list(series), SERIES_COLOURS, right, dashed, legend_y)
    tooltips = len(x) <= MAX_POINTS_WITH_TOOLTIPS
    # The first series on top of the later ones, and dashed series above solid ones: where lines
    # coincide, a solid line shows through the gaps of a dashed one drawn over it.
    order = sorted(reversed(list(enumerate(series.items()))), key=lambda item: item[1][0] in dashed)
    for k, (name, vs) in order:
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        dash = ' stroke-dasharray="5 3"' if name in dashed else ""
        for segment in _segments(xs, x, vs):
            if len(segment) > 1:
                points = " ".join(f"{xi:.1f},{scale(v):.1f}" for xi, _, v in segment)
                body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
                            f'stroke-linejoin="round"{dash}/>')
            for xi, label, v in segment if tooltips or len(segment) == 1 else ():
                visible = 0.85 if len(x) <= 40 or len(segment) == 1 else 0
                body.append(f'<circle cx="{xi:.1f}" cy="{scale(v):.1f}" r="3" fill="{colour}" fill-opacity="{visible}">'
                            f"<title>{escape(name)}, {escape(label)}: {escape(tick_fmt(v))}</title></circle>")
    return _svg(width, height, title, body)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, y_label: str = "",
              fmt: Formatter | None = None, notes: Sequence[str] | None = None, colour: str = SERIES_COLOURS[0],
              width: int = 720, height: int = 220) -> Markup:
    """Vertical bars of ``values`` over ``labels`` (negative ones hang below zero, in red), value
    labels when they fit, ``notes`` (one per bar) in each bar's tooltip. A zero is a thin stub."""
    return grouped_bars(labels, {title: values}, title=title, y_label=y_label, fmt=fmt, notes=notes,
                        colours=(colour,), width=width, height=height, legend=False)


def grouped_bars(labels: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str,
                 y_label: str = "", fmt: Formatter | None = None, notes: Sequence[str] | None = None,
                 colours: Sequence[str] = SERIES_COLOURS, width: int = 720, height: int = 240,
                 legend: bool = True) -> Markup:
    """Bars of each entry of ``series`` side by side over ``labels`` (values aligned with them; None
    draws no bar), from a zero line: negative values hang below it. A single series' negative bars
    are red. Every label is drawn under its group when they fit, else an even selection of them."""
    finite = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not labels or not finite:
        return _no_data(title, width)
    left, right, top, bottom = 78.0, width - 16.0, 40.0, height - 34.0
    legend_y = _legend_y(title, list(series), right) if legend else 16.0
    top += LEGEND_LINE if legend_y > 16.0 else 0.0
    low, high = min([*finite, 0.0]), max([*finite, 0.0])
    ticks = nice_ticks(low, high if high > low else 1.0)  # all negative: the axis ends at 0
    tick_fmt = fmt or tick_formatter(ticks)
    lo, hi = ticks[0], ticks[-1]

    def scale(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    body = _frame(title, y_label, ticks, scale, left, right, tick_fmt)
    slot = (right - left) / len(labels)
    group = min(56.0 * len(series), slot * 0.8)
    bar = group / len(series)
    zero = scale(0.0)
    most = max(2, int((right - left) // (7 * max(len(str(label)) for label in labels) + 8)))
    shown = set(_label_indices(len(labels), most))
    for k, (name, values) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        for i, (label, v) in enumerate(zip(labels, values)):
            if v is None or not math.isfinite(v):
                continue
            x = left + slot * (i + 0.5) - group / 2 + k * bar
            top_y, bottom_y = sorted((scale(v), zero))
            if bottom_y - top_y < 1.5:
                top_y = zero - 1.5 if v >= 0 else zero
                bottom_y = top_y + 1.5
            fill = BAD if len(series) == 1 and v < 0 else colour
            note = f" ({notes[i]})" if notes and i < len(notes) and notes[i] else ""
            who = f"{name}, " if legend else ""
            body.append(f'<rect x="{x + 1:.1f}" y="{top_y:.1f}" width="{max(bar - 2, 1):.1f}" '
                        f'height="{bottom_y - top_y:.1f}" rx="2" fill="{fill}"><title>{escape(who)}{escape(label)}: '
                        f"{escape(tick_fmt(v))}{escape(note)}</title></rect>")
            if len(series) == 1 and len(labels) <= 16:
                body.append(_text(x + bar / 2, top_y - 4 if v >= 0 else bottom_y + 11, tick_fmt(v), size=10,
                                  anchor="middle", fill=TEXT))
    for i, label in enumerate(labels):
        if i in shown:
            body.append(_text(left + slot * (i + 0.5), bottom + 16, label, anchor="middle"))
    body.append(f'<line x1="{left}" x2="{right}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="{AXIS}"/>')
    if legend:
        body += _legend(list(series), colours, right, y=legend_y)
    return _svg(width, height, title, body)


def _legend_y(title: str, names: Sequence[str], right: float) -> float:
    """The legend's baseline: on the title's line when both fit, else on a line of its own under
    the y label (the plot then starts lower: see `LEGEND_LINE`)."""
    title_width = 8 + 7.5 * len(title)
    legend_width = sum(40 + 6.5 * len(_short(str(name))) for name in names)
    return 16.0 if title_width + 16 + legend_width <= right else 46.0


LEGEND_NAME_CHARS = 28  # a longer series name is cut in the legend (with an ellipsis)


def _short(name: str) -> str:
    return name if len(name) <= LEGEND_NAME_CHARS else name[:LEGEND_NAME_CHARS - 1] + "\u2026"


LEGEND_LINE = 18.0  # how much lower the plot starts when the legend has a line of its own


def _legend(names: Sequence[str], colours: Sequence[str], right: float, dashed: Sequence[str] = (),
            y: float = 16.0) -> list[str]:
    """Series names with their line or swatch, right-aligned, on the baseline ``y``."""
    out, x = [], right
    for k, name in reversed(list(enumerate(names))):
        colour = colours[k % len(colours)]
        name = _short(str(name))
        x -= 14 + 6.5 * len(name)
        dash = ' stroke-dasharray="5 3"' if name in dashed else ""
        out.append(f'<line x1="{x - 22:.1f}" x2="{x - 4:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" stroke="{colour}" '
                   f'stroke-width="2.5"{dash}/>')
        out.append(_text(x, y, name, fill=TEXT))
        x -= 26
    return out


def histogram(edges: Sequence[float], counts: Sequence[float], *, title: str, x_label: str = "",
              marks: Mapping[str, float] | None = None, band: tuple[float, float] | None = None,
              fmt: Formatter | None = None, width: int = 720, height: int = 240) -> Markup:
    """Counts per bin (``len(edges) == len(counts) + 1``) on a numeric x axis, with vertical
    ``marks`` (label -> x) and a shaded ``band`` (low, high), e.g. a confidence interval."""
    if len(counts) == 0 or len(edges) != len(counts) + 1 or not any(counts):
        return _no_data(title, width)
    marks = {k: v for k, v in (marks or {}).items() if v is not None and math.isfinite(v)}
    if band and not all(v is not None and math.isfinite(v) for v in band):
        band = None  # an interval that could not be estimated is not drawn
    left, right, top, bottom = 78.0, width - 16.0, 40.0, height - 44.0
    xs_all = [*edges, *marks.values(), *(band or ())]
    x_ticks = nice_ticks(min(xs_all), max(xs_all))
    x_fmt = fmt or tick_formatter(x_ticks)
    y_ticks = nice_ticks(0.0, max(counts))

    def sx(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - v / y_ticks[-1] * (bottom - top)

    body = _frame(title, "count", y_ticks, sy, left, right, tick_formatter(y_ticks))
    if band:
        body.append(f'<rect x="{sx(band[0]):.1f}" y="{top}" width="{sx(band[1]) - sx(band[0]):.1f}" '
                    f'height="{bottom - top}" fill="{SERIES_COLOURS[0]}" fill-opacity="0.08"/>')
    for lo, hi, n in zip(edges, edges[1:], counts):
        y = sy(n)
        body.append(f'<rect x="{sx(lo) + 0.5:.1f}" y="{y:.1f}" width="{max(sx(hi) - sx(lo) - 1, 0.5):.1f}" '
                    f'height="{bottom - y:.1f}" fill="{SERIES_COLOURS[0]}"><title>{escape(x_fmt(lo))} to '
                    f"{escape(x_fmt(hi))}: {n:g}</title></rect>")
    body += _x_axis(x_ticks, sx, x_fmt, bottom, left, right, x_label)
    for k, (label, x) in enumerate(marks.items()):
        colour = SERIES_COLOURS[(k + 1) % len(SERIES_COLOURS)]
        body.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top - 4}" y2="{bottom}" stroke="{colour}" '
                    f'stroke-width="2" stroke-dasharray="4 3"><title>{escape(label)}: {escape(x_fmt(x))}</title></line>')
        body.append(_text(min(sx(x) + 4, right - 6.5 * len(label)), top + 10 + 13 * k, label, size=10, fill=colour))
    return _svg(width, height, title, body)


def _x_axis(ticks: Sequence[float], sx: Callable[[float], float], fmt: Formatter, bottom: float, left: float,
            right: float, label: str) -> list[str]:
    out = [f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{AXIS}"/>']
    for t in ticks:
        out.append(_text(sx(t), bottom + 15, fmt(t), anchor="middle"))
    if label:
        out.append(_text((left + right) / 2, bottom + 30, label, size=10, anchor="middle"))
    return out


def scatter(xs: Sequence[float], ys: Sequence[float], *, title: str, x_label: str = "", y_label: str = "",
            hline: float | None = None, hline_label: str = "", x_fmt: Formatter | None = None,
            y_fmt: Formatter | None = None, width: int = 720, height: int = 260) -> Markup:
    """Points (x, y) with a horizontal reference line at ``hline`` (e.g. the median rank)."""
    points = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(x)
              and math.isfinite(y)]
    if not points:
        return _no_data(title, width)
    left, right, top, bottom = 78.0, width - 16.0, 40.0, height - 44.0
    x_ticks = nice_ticks(min(x for x, _ in points), max(x for x, _ in points))
    y_values = [y for _, y in points] + ([hline] if hline is not None else [])
    y_ticks = nice_ticks(min(y_values), max(y_values))
    x_fmt, y_fmt = x_fmt or tick_formatter(x_ticks), y_fmt or tick_formatter(y_ticks)

    def sx(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    body = _frame(title, y_label, y_ticks, sy, left, right, y_fmt)
    body += _x_axis(x_ticks, sx, x_fmt, bottom, left, right, x_label)
    for x, y in points:
        body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{SERIES_COLOURS[0]}" '
                    f'fill-opacity="0.45"><title>{escape(x_fmt(x))}, {escape(y_fmt(y))}</title></circle>')
    if hline is not None:
        body.append(f'<line x1="{left}" x2="{right}" y1="{sy(hline):.1f}" y2="{sy(hline):.1f}" stroke="{BAD}" '
                    f'stroke-width="1.5" stroke-dasharray="5 3"/>')
        if hline_label:
            body.append(_text(right - 4, sy(hline) - 5, hline_label, size=10, anchor="end", fill=BAD))
    return _svg(width, height, title, body)


def gauge(value: float | None, limit: float | None, *, label: str, width: int = 260) -> Markup:
    """A horizontal bar filled to ``value / limit`` (capped at the end, red beyond the limit),
    coloured by `usage_colour`; marks at `WARN_AT` and `BAD_AT` of the limit."""
    height, track_y, track_h = 18, 4, 10
    known = value is not None and limit is not None and limit > 0
    fraction = value / limit if known else None
    body = [f'<rect x="0" y="{track_y}" width="{width}" height="{track_h}" rx="5" fill="{TRACK}"/>']
    if fraction is not None:
        fill = max(0.0, min(fraction, 1.0)) * width
        if fill > 0:
            body.append(f'<rect x="0" y="{track_y}" width="{max(fill, 3):.1f}" height="{track_h}" rx="5" '
                        f'fill="{usage_colour(fraction)}"/>')
    for mark in (WARN_AT, BAD_AT):
        body.append(f'<line x1="{mark * width:.1f}" x2="{mark * width:.1f}" y1="{track_y - 2}" '
                    f'y2="{track_y + track_h + 2}" stroke="#ffffff" stroke-width="1.5"/>')
    what = f"{label}: " + ("unknown" if fraction is None else f"{fraction:.0%} of the limit")
    return _svg(width, height, what, body)
