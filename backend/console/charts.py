"""Draw the console's charts as SVG markup on the server, readable without CSS or script.

The console's Content-Security-Policy forbids inline styles, so nothing here writes a `style`
attribute: every look is an SVG presentation attribute, a default that reads on its own, plus a
class (`chart-line`, `chart-her`, `chart-limit`...) that the console's stylesheet may override.
Colours are Okabe and Ito's colour-blind-safe palette, each at least 3:1 on the white background
(WCAG non-text contrast), and lines also differ by dash and markers by shape; text is #333333,
12.6:1. Each chart names itself in <title> and states its numbers in words in <desc>.

Arithmetic is in fractions, as in `safeguards.stats`, so that any finite value, however large or
small, lands inside the drawing; coordinates are rounded to 2 decimals, and the same input
always gives the same markup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal
from fractions import Fraction
from typing import Literal

from markupsafe import Markup, escape

from safeguards.stats import median

Number = Decimal | int | float
ReferenceKind = Literal["plan", "limit", "cut"]
Shade = tuple[str, Fraction, Fraction]  # a band's label, low end and high end, exactly

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
TEXT_GREY = "#333333"
AXIS_GREY = "#767676"
GRID_GREY = "#e0e0e0"
BLUE, VERMILLION, GREEN, PURPLE = "#0072B2", "#D55E00", "#009E73", "#CC79A7"
CHART_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Characters XML 1.0 cannot hold (control characters, lone surrogates): a label carrying one
# would make the whole page fail to parse or to encode.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
DAY_STEPS = (1, 2, 7, 14, 28, 56, 91, 182, 364)
MOST_TICKS_PER_AXIS = 5
MOST_BAR_LABELS = 8
MOST_BARS_LISTED = 12
LEGEND_SLOT = 160


@dataclass(frozen=True)
class Series:
    """One named run of values over aware UTC times; a None value is skipped."""

    name: str
    points: Sequence[tuple[datetime, Number | None]]


@dataclass(frozen=True)
class Reference:
    """A horizontal line at a value: a plan dose, a limit or a score's cut point."""

    label: str
    value: Number
    kind: ReferenceKind = "plan"


@dataclass(frozen=True)
class Band:
    """A shaded range of values, such as the doses a plan allows."""

    label: str
    low: Number
    high: Number


@dataclass(frozen=True)
class Look:
    """How one kind of line is drawn when no stylesheet says otherwise."""

    colour: str
    dash: str | None
    width: str
    marker: Literal["circle", "square"] = "circle"


SERIES_LOOKS = (
    Look(BLUE, None, "2", "circle"),
    Look(VERMILLION, "6 3", "2", "square"),
    Look(GREEN, "2 3", "2", "circle"),
    Look(PURPLE, "8 3 2 3", "2", "square"),
)
REFERENCE_LOOKS: dict[str, Look] = {
    "plan": Look(GREEN, None, "2"),
    "limit": Look(VERMILLION, "6 4", "1.5"),
    "cut": Look("#666666", "2 4", "1"),
}


@dataclass(frozen=True)
class Frame:
    """A chart's size and the margins around its plotting area, in viewBox units."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def plot_right(self) -> int:
        """Return the x of the plotting area's right edge."""
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        """Return the y of the plotting area's bottom edge."""
        return self.height - self.bottom

    def x(self, share: float) -> float:
        """Return the x that lies `share` of the way across the plotting area."""
        return self.left + within_unit(share) * (self.plot_right - self.left)

    def y(self, share: float) -> float:
        """Return the y that lies `share` of the way up the plotting area."""
        return self.plot_bottom - within_unit(share) * (self.plot_bottom - self.top)


TIME_FRAME = Frame(640, 280, 64, 40, 32, 36)
BAR_FRAME = Frame(640, 240, 64, 40, 32, 36)
PEER_FRAME = Frame(640, 140, 32, 32, 24, 28)
EMPTY_FRAME = Frame(640, 60, 0, 0, 0, 0)


@dataclass(frozen=True)
class Scale:
    """A value axis: its ends, its round ticks and the power of ten of their step."""

    low: Fraction
    high: Fraction
    ticks: tuple[Fraction, ...]
    step_exponent: int

    def share(self, value: Fraction) -> float:
        """Return how far up the axis `value` lies, 0 at the low end and 1 at the high."""
        return float((value - self.low) / (self.high - self.low))


@dataclass(frozen=True)
class Span:
    """A time axis from the first reading to the last."""

    start: datetime
    end: datetime

    def share(self, moment: datetime) -> float:
        """Return how far along the axis `moment` lies; a single instant sits in the middle."""
        if self.end == self.start:
            return 0.5
        return (moment - self.start) / (self.end - self.start)


# Public charts


def time_series_chart(chart_id: str, title: str, series: Sequence[Series], *, unit: str = "",
                      references: Sequence[Reference] = (), band: Band | None = None,
                      note: str = "") -> Markup:
    """Draw one or more series over time on one value axis, with reference lines and a band."""
    readings = [(run.name, points) for run in series if (points := sorted_readings(run))]
    if not readings:
        return empty_chart(chart_id, title)
    lines, shade = placed_references(references), shaded_range(band)
    scale = value_scale([*(value for _, points in readings for _, value in points),
                         *(value for _, value in lines), *(shade[1:] if shade else ())])
    moments = [moment for _, points in readings for moment, _ in points]
    span = Span(min(moments), max(moments))
    body = [*band_marks(TIME_FRAME, scale, shade, unit), *value_axis(TIME_FRAME, scale, unit),
            *date_axis(TIME_FRAME, span), *reference_lines(TIME_FRAME, scale, lines)]
    for index, (_, points) in enumerate(readings):
        body += series_marks(TIME_FRAME, scale, span, index, points, unit)
    body += reference_labels(TIME_FRAME, scale, lines, unit)
    if len(readings) > 1:
        body += legend(TIME_FRAME, [name for name, _ in readings])
    sentences = [describe_series(name, points, unit) for name, points in readings]
    sentences += [*describe_references(lines, shade, unit), note]
    return chart(chart_id, title, sentences, TIME_FRAME, body)


def peer_distribution_chart(chart_id: str, title: str, metric: str, unit: str,
                            peers: Sequence[Number | None], her: Number | None, *,
                            her_label: str = "This nurse") -> Markup:
    """Draw peers' values as a box plot over a strip of dots, with hers marked and labelled."""
    peer_values = sorted(value for value in map(exact, peers) if value is not None)
    her_value = exact(her)
    shown = [*peer_values, *([her_value] if her_value is not None else [])]
    if not shown:
        return empty_chart(chart_id, title)
    scale = value_scale(shown)
    frame = PEER_FRAME
    body = [text(frame.left, 16, metric_label(metric, unit), "chart-metric"),
            *peer_axis(frame, scale), *box_plot(frame, scale, peer_values),
            *peer_dots(frame, scale, peer_values, unit)]
    if her_value is not None:
        body += her_marks(frame, scale, her_value, f"{her_label}: {amount(her_value, unit)}")
    sentences = [describe_peers(metric, unit, peer_values),
                 describe_her(her_label, her_value, peer_values, unit)]
    return chart(chart_id, title, sentences, frame, body)


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str | date, Number | None]], *,
              unit: str = "", references: Sequence[Reference] = ()) -> Markup:
    """Draw one bar per category or day, from zero, with optional reference lines."""
    kept = [(category_name(category), number) for category, value in bars
            if (number := exact(value)) is not None]
    if not kept:
        return empty_chart(chart_id, title)
    lines = placed_references(references)
    scale = value_scale([Fraction(0), *(value for _, value in kept),
                         *(value for _, value in lines)])
    frame = BAR_FRAME
    body = [*value_axis(frame, scale, unit), *bar_marks(frame, scale, kept, unit),
            *reference_lines(frame, scale, lines), *reference_labels(frame, scale, lines, unit)]
    sentences = [describe_bars(kept, unit), *describe_references(lines, None, unit)]
    return chart(chart_id, title, sentences, frame, body)


def empty_chart(chart_id: str, title: str) -> Markup:
    """Draw a small chart that says there is no data."""
    frame = EMPTY_FRAME
    notice = text(frame.width / 2, 36, "No data", "chart-empty", anchor="middle")
    return chart(chart_id, title, ["No data to show"], frame, [notice])


# Numbers and words


def exact(value: Number | None) -> Fraction | None:
    """Return `value` as an exact fraction, or None when it is missing or not finite."""
    if value is None:
        return None
    try:
        return Fraction(value)
    except (ValueError, OverflowError):  # NaN or an infinity: nothing to draw
        return None


def placed_references(references: Sequence[Reference]) -> list[tuple[Reference, Fraction]]:
    """Return each reference with its exact value, leaving out any that is not finite."""
    return [(reference, value) for reference in references
            if (value := exact(reference.value)) is not None]


def shaded_range(band: Band | None) -> Shade | None:
    """Return the band's label with its low and high ends in order, if both are finite."""
    if band is None or (low := exact(band.low)) is None or (high := exact(band.high)) is None:
        return None
    return band.label, min(low, high), max(low, high)


def sorted_readings(series: Series) -> list[tuple[datetime, Fraction]]:
    """Return a series' present, finite values in time order, their times in UTC."""
    readings = []
    for moment, value in series.points:
        if moment.tzinfo is None:
            raise ValueError(f"series {series.name!r} has a naive time, {moment}")
        if (number := exact(value)) is not None:
            readings.append((moment.astimezone(UTC), number))
    return sorted(readings)


def spoken(value: Fraction, digits: int = 6) -> str:
    """Return `value` to `digits` significant figures or its whole part, e-notation if extreme."""
    if value.denominator == 1 and abs(value) < 10**15:
        return str(value.numerator)
    if 1 <= abs(value) < 10**15:
        # Rounding inside the whole part would print a plausible but wrong number.
        digits = max(digits, magnitude(abs(value)) + 1)
    # Every step in this context: the ambient one may hold fewer digits than a tick needs.
    context = Context(prec=digits)
    rounded = context.normalize(context.divide(Decimal(value.numerator),
                                               Decimal(value.denominator)))
    plain = Decimal("1e-4") <= rounded.copy_abs() < Decimal("1e15")
    return format(rounded, "f" if plain else "e")


def amount(value: Fraction, unit: str) -> str:
    """Return `value` followed by its unit, if it has one."""
    return f"{spoken(value)} {unit}" if unit else spoken(value)


def tick_label(tick: Fraction, step_exponent: int) -> str:
    """Return a tick's label with just the digits that tell it from its neighbours."""
    if tick == 0:
        return "0"
    return spoken(tick, max(1, magnitude(abs(tick)) - step_exponent + 1))


def counted(count: int, noun: str) -> str:
    """Return `count` with `noun`, plural unless it is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def day(moment: datetime) -> str:
    """Return the UTC date of `moment` as YYYY-MM-DD."""
    return moment.astimezone(UTC).date().isoformat()


def category_name(category: str | date) -> str:
    """Return a bar's category as words, a day as YYYY-MM-DD (an aware time by its UTC day)."""
    if isinstance(category, datetime):
        return day(category)
    return category.isoformat() if isinstance(category, date) else category


def metric_label(metric: str, unit: str) -> str:
    """Return the metric's name with its unit, as in 'waste per visit, mg'."""
    return f"{metric}, {unit}" if unit else metric


# Axes


def magnitude(value: Fraction) -> int:
    """Return the power of ten of a positive `value`'s leading digit."""
    guess = math.floor((value.numerator.bit_length() - value.denominator.bit_length())
                       * math.log10(2))
    while Fraction(10) ** guess > value:
        guess -= 1
    while Fraction(10) ** (guess + 1) <= value:
        guess += 1
    return guess


def round_step(least: Fraction) -> tuple[Fraction, int]:
    """Return the least 1, 2 or 5 times a power of ten that is at least `least`, and the power."""
    exponent = magnitude(least)
    power = Fraction(10) ** exponent
    multiple = next(m for m in (1, 2, 5, 10) if m * power >= least)
    if multiple == 10:
        return power * 10, exponent + 1
    return multiple * power, exponent


def value_scale(values: Sequence[Fraction]) -> Scale:
    """Return an axis with round ticks that holds every one of `values`."""
    low, high = min(values), max(values)
    if low == high:
        # One value alone still needs an axis; put it in the middle of one.
        pad = abs(low) / 10 or Fraction(1)
        low, high = low - pad, high + pad
    step, exponent = round_step((high - low) / (MOST_TICKS_PER_AXIS - 1))
    first, last = math.floor(low / step), math.ceil(high / step)
    ticks = tuple(step * index for index in range(first, last + 1))
    return Scale(ticks[0], ticks[-1], ticks, exponent)


def date_ticks(span: Span) -> list[datetime]:
    """Return up to six evenly spaced UTC midnights inside `span`, or its start if none is."""
    days = (span.end.date() - span.start.date()).days
    if days == 0:
        return [span.start]
    step = next((s for s in DAY_STEPS if days / s <= MOST_TICKS_PER_AXIS),
                math.ceil(days / MOST_TICKS_PER_AXIS / 364) * 364)
    first = datetime.combine(span.start.date(), time(), UTC)
    if first < span.start:
        first += timedelta(days=1)
    count = (span.end - first) // timedelta(days=step)
    return [first + timedelta(days=step * index) for index in range(count + 1)]


def within_unit(share: float) -> float:
    """Return `share` held between 0 and 1."""
    return min(1.0, max(0.0, share))


def at(coordinate: float) -> str:
    """Return a coordinate rounded to 2 decimals, without trailing zeros or a minus zero."""
    return f"{round(coordinate, 2) or 0.0:g}"


# SVG


def element(name: str, *children: str, **attributes: object) -> Markup:
    """Return one SVG element; `class_` is `class`, `_` is `-`, and plain text is escaped."""
    spelled = Markup("").join(
        Markup(' {}="{}"').format(key.rstrip("_").replace("_", "-"), words(str(value)))
        for key, value in attributes.items() if value is not None)
    if not children:
        return Markup("<{}{}/>").format(name, spelled)
    inside = Markup("").join(child if isinstance(child, Markup) else words(child)
                             for child in children)
    return Markup("<{0}{1}>{2}</{0}>").format(name, spelled, inside)


def words(plain: str) -> Markup:
    """Return `plain` escaped for XML, any character XML cannot hold replaced by U+FFFD."""
    return escape(NOT_XML.sub("\ufffd", plain))


def text(x: float, y: float, content: str, class_name: str, *, anchor: str = "start",
         size: str | None = None, halo: bool = False) -> Markup:
    """Return a piece of dark grey text at (`x`, `y`), haloed in white if it may cross a line."""
    outline = {"stroke": "#ffffff", "stroke_width": "3", "stroke_linejoin": "round",
               "paint_order": "stroke"} if halo else {}
    return element("text", content, class_=class_name, x=at(x), y=at(y), fill=TEXT_GREY,
                   text_anchor=anchor, font_size=size, **outline)


def line(class_name: str, look: Look, x1: float, y1: float, x2: float, y2: float) -> Markup:
    """Return a straight line drawn in `look`."""
    return element("line", class_=class_name, x1=at(x1), y1=at(y1), x2=at(x2), y2=at(y2),
                   stroke=look.colour, stroke_width=look.width, stroke_dasharray=look.dash)


def marker(class_name: str, look: Look, x: float, y: float, tooltip: str) -> Markup:
    """Return a point's marker, a circle or a square, with its value as a tooltip."""
    hint = element("title", tooltip)
    if look.marker == "square":
        return element("rect", hint, class_=class_name, x=at(x - 3.5), y=at(y - 3.5),
                       width="7", height="7", fill=look.colour)
    return element("circle", hint, class_=class_name, cx=at(x), cy=at(y), r="4",
                   fill=look.colour)


def chart(chart_id: str, title: str, sentences: Sequence[str], frame: Frame,
          body: Sequence[Markup]) -> Markup:
    """Wrap `body` in an <svg> labelled by its title and by a description of its data."""
    if not CHART_ID.fullmatch(chart_id):
        raise ValueError(f"chart id {chart_id!r} must be a letter then letters, digits, - or _")
    description = " ".join(f"{sentence[:1].upper()}{sentence[1:].rstrip('.')}."
                           for sentence in sentences if sentence)
    return element(
        "svg",
        element("title", title, id=f"{chart_id}-title"),
        element("desc", description, id=f"{chart_id}-desc"),
        element("rect", class_="chart-background", width=frame.width, height=frame.height,
                fill="#ffffff"),
        *body,
        xmlns=SVG_NAMESPACE, id=chart_id, class_="chart", role="img",
        aria_labelledby=f"{chart_id}-title {chart_id}-desc",
        viewBox=f"0 0 {frame.width} {frame.height}", width="100%",
        font_family="system-ui, sans-serif", font_size="12")


def value_axis(frame: Frame, scale: Scale, unit: str) -> list[Markup]:
    """Draw a grid line and a label at each tick of `scale`, and the unit above them."""
    grid = Look(GRID_GREY, None, "1")
    marks = [text(4, frame.top - 14, unit, "chart-unit")] if unit else []
    for tick in scale.ticks:
        y = frame.y(scale.share(tick))
        marks.append(line("chart-grid", grid, frame.left, y, frame.plot_right, y))
        marks.append(text(frame.left - 6, y + 4, tick_label(tick, scale.step_exponent),
                          "chart-tick", anchor="end", size="11"))
    return marks


def date_axis(frame: Frame, span: Span) -> list[Markup]:
    """Draw the time axis along the bottom with a dated tick at a few midnights."""
    axis = Look(AXIS_GREY, None, "1")
    bottom = frame.plot_bottom
    marks = [line("chart-axis", axis, frame.left, bottom, frame.plot_right, bottom)]
    for moment in date_ticks(span):
        x = frame.x(span.share(moment))
        marks.append(line("chart-axis", axis, x, bottom, x, bottom + 4))
        marks.append(text(x, bottom + 18, day(moment), "chart-tick", anchor="middle",
                          size="11"))
    return marks


def reference_lines(frame: Frame, scale: Scale,
                    lines: Sequence[tuple[Reference, Fraction]]) -> list[Markup]:
    """Draw each reference as a horizontal line across the plotting area."""
    levels = [(reference, frame.y(scale.share(value))) for reference, value in lines]
    return [line(f"chart-reference chart-{reference.kind}", REFERENCE_LOOKS[reference.kind],
                 frame.left, y, frame.plot_right, y) for reference, y in levels]


def reference_labels(frame: Frame, scale: Scale, lines: Sequence[tuple[Reference, Fraction]],
                     unit: str) -> list[Markup]:
    """Label each reference line at its right end, drawn last so that no line hides it."""
    return [text(frame.plot_right - 4, max(frame.y(scale.share(value)) - 4, 10),
                 reference_phrase(reference, value, unit), "chart-reference-label",
                 anchor="end", size="11", halo=True)
            for reference, value in lines]


def band_marks(frame: Frame, scale: Scale, shade: Shade | None, unit: str) -> list[Markup]:
    """Draw the band as a pale shaded strip, labelled at its top left."""
    if shade is None:
        return []
    _, low, high = shade
    top, bottom = frame.y(scale.share(high)), frame.y(scale.share(low))
    return [element("rect", class_="chart-band", x=at(frame.left), y=at(top),
                    width=at(frame.plot_right - frame.left), height=at(bottom - top),
                    fill=GREEN, fill_opacity="0.12"),
            text(frame.left + 4, min(top + 13, frame.plot_bottom), band_phrase(shade, unit),
                 "chart-band-label", size="11", halo=True)]


def series_marks(frame: Frame, scale: Scale, span: Span, index: int,
                 points: Sequence[tuple[datetime, Fraction]], unit: str) -> list[Markup]:
    """Draw one series as a line through its points, each marked with its value as a tooltip."""
    look = SERIES_LOOKS[index % len(SERIES_LOOKS)]
    number = f"chart-series-{index + 1}"
    places = [(frame.x(span.share(moment)), frame.y(scale.share(value)))
              for moment, value in points]
    marks = [element("polyline", class_=f"chart-line {number}",
                     points=" ".join(f"{at(x)},{at(y)}" for x, y in places), fill="none",
                     stroke=look.colour, stroke_width=look.width,
                     stroke_dasharray=look.dash, stroke_linejoin="round")]
    for (moment, value), (x, y) in zip(points, places, strict=True):
        tooltip = f"{day(moment)} {moment.astimezone(UTC):%H:%M} UTC: {amount(value, unit)}"
        marks.append(marker(f"chart-point {number}", look, x, y, tooltip))
    return marks


def legend(frame: Frame, names: Sequence[str]) -> list[Markup]:
    """Draw a key above the plot: each series' line, marker and name, side by side."""
    marks = []
    slot = min(LEGEND_SLOT, (frame.plot_right - frame.left) / len(names))
    for index, name in enumerate(names):
        look = SERIES_LOOKS[index % len(SERIES_LOOKS)]
        x, y = frame.left + index * slot, 12
        marks.append(line(f"chart-legend-line chart-series-{index + 1}", look, x, y, x + 24, y))
        marks.append(marker(f"chart-legend-point chart-series-{index + 1}", look, x + 12, y,
                            name))
        marks.append(text(x + 30, y + 4, name, "chart-legend-label"))
    return marks


def peer_axis(frame: Frame, scale: Scale) -> list[Markup]:
    """Draw the horizontal value axis under the peer plot, with its round ticks."""
    axis = Look(AXIS_GREY, None, "1")
    bottom = frame.plot_bottom
    marks = [line("chart-axis", axis, frame.left, bottom, frame.plot_right, bottom)]
    for tick in scale.ticks:
        x = frame.x(scale.share(tick))
        marks.append(line("chart-axis", axis, x, bottom, x, bottom + 4))
        marks.append(text(x, bottom + 18, tick_label(tick, scale.step_exponent), "chart-tick",
                          anchor="middle", size="11"))
    return marks


def quartiles(ordered: Sequence[Fraction]) -> tuple[Fraction, Fraction, Fraction]:
    """Return the first quartile, median and third quartile of sorted values (halves' medians)."""
    half = len(ordered) // 2
    lower, upper = ordered[:half] or ordered, ordered[len(ordered) - half:] or ordered
    return median(lower), median(ordered), median(upper)


def box_plot(frame: Frame, scale: Scale, ordered: Sequence[Fraction]) -> list[Markup]:
    """Draw whiskers from the lowest to the highest peer, a box between the hinges, a median."""
    if not ordered:
        return []
    outline = Look(BLUE, None, "1.5")
    centre = 68
    low_x, high_x = frame.x(scale.share(ordered[0])), frame.x(scale.share(ordered[-1]))
    q1, q2, q3 = (frame.x(scale.share(value)) for value in quartiles(ordered))
    return [line("chart-whisker", outline, low_x, centre, high_x, centre),
            line("chart-whisker", outline, low_x, centre - 8, low_x, centre + 8),
            line("chart-whisker", outline, high_x, centre - 8, high_x, centre + 8),
            element("rect", class_="chart-box", x=at(q1), y=at(centre - 12), width=at(q3 - q1),
                    height="24", fill=BLUE, fill_opacity="0.15", stroke=BLUE,
                    stroke_width="1.5"),
            line("chart-median", Look(TEXT_GREY, None, "2.5"), q2, centre - 14, q2, centre + 14)]


def peer_dots(frame: Frame, scale: Scale, ordered: Sequence[Fraction], unit: str) -> list[Markup]:
    """Draw every peer's value as a translucent dot on a strip under the box."""
    return [element("circle", element("title", f"peer: {amount(value, unit)}"),
                    class_="chart-peer", cx=at(frame.x(scale.share(value))), cy="94", r="4",
                    fill=BLUE, fill_opacity="0.5")
            for value in ordered]


def her_marks(frame: Frame, scale: Scale, value: Fraction, label: str) -> list[Markup]:
    """Draw her value as a large outlined dot on a line across the plot, labelled above."""
    share = scale.share(value)
    x = frame.x(share)
    # Keep the label inside the picture when her value sits near either end.
    anchor = "start" if share < 0.2 else "end" if share > 0.8 else "middle"
    return [line("chart-her-line", Look(VERMILLION, None, "2"), x, 44, x, 102),
            element("circle", element("title", label), class_="chart-her", cx=at(x), cy="68",
                    r="7", fill=VERMILLION, stroke=TEXT_GREY, stroke_width="1.5"),
            text(x, 38, label, "chart-her-label", anchor=anchor, halo=True)]


def bar_marks(frame: Frame, scale: Scale, kept: Sequence[tuple[str, Fraction]],
              unit: str) -> list[Markup]:
    """Draw a bar from zero for each value, and every few categories' names beneath."""
    slot = (frame.plot_right - frame.left) / len(kept)
    zero = frame.y(scale.share(Fraction(0)))
    every = math.ceil(len(kept) / MOST_BAR_LABELS)
    marks = [line("chart-axis", Look(AXIS_GREY, None, "1"), frame.left, zero, frame.plot_right,
                  zero)]
    for index, (name, value) in enumerate(kept):
        left, top = frame.left + index * slot, frame.y(scale.share(value))
        marks.append(element("rect", element("title", f"{name}: {amount(value, unit)}"),
                             class_="chart-bar", x=at(left + slot * 0.15), y=at(min(top, zero)),
                             width=at(slot * 0.7), height=at(abs(zero - top)), fill=BLUE))
        if index % every == 0:
            marks.append(text(left + slot / 2, frame.plot_bottom + 18, name, "chart-tick",
                              anchor="middle", size="11"))
    return marks


# Descriptions


def describe_series(name: str, points: Sequence[tuple[datetime, Fraction]], unit: str) -> str:
    """Say how many values a series has, over which days, its latest, lowest and highest."""
    (first, _), (last, latest) = points[0], points[-1]
    values = [value for _, value in points]
    when = (f"on {day(first)}" if day(first) == day(last)
            else f"from {day(first)} to {day(last)}")
    return (f"{name}: {counted(len(points), 'value')} {when}; latest {amount(latest, unit)}"
            f" on {day(last)}; lowest {amount(min(values), unit)},"
            f" highest {amount(max(values), unit)}")


def describe_references(lines: Sequence[tuple[Reference, Fraction]],
                        shade: Shade | None, unit: str) -> list[str]:
    """Say where each reference line and the band lie."""
    said = [reference_phrase(reference, value, unit) for reference, value in lines]
    sentences = [f"Reference lines: {'; '.join(said)}"] if said else []
    if shade is not None:
        sentences.append(f"Shaded band: {band_phrase(shade, unit)}")
    return sentences


def reference_phrase(reference: Reference, value: Fraction, unit: str) -> str:
    """Return a reference's label and value, as in 'plan dose 0.5 mg/kg'."""
    return f"{reference.label} {amount(value, unit)}"


def band_phrase(shade: Shade, unit: str) -> str:
    """Return a band's label and range, as in 'allowed 0.4 to 0.6 mg/kg'."""
    label, low, high = shade
    return f"{label} {spoken(low)} to {amount(high, unit)}"


def describe_peers(metric: str, unit: str, ordered: Sequence[Fraction]) -> str:
    """Say how many peers there are and their median, middle half and range."""
    if not ordered:
        return f"{metric}: no peers to compare with"
    q1, q2, q3 = quartiles(ordered)
    return (f"{metric} for {counted(len(ordered), 'peer')}: median {amount(q2, unit)},"
            f" middle half {spoken(q1)} to {amount(q3, unit)},"
            f" range {spoken(ordered[0])} to {amount(ordered[-1], unit)}")


def describe_her(label: str, value: Fraction | None, peers: Sequence[Fraction], unit: str) -> str:
    """Say her value and how many peers lie below, level with and above it."""
    if value is None:
        return f"{label}: no value"
    if not peers:
        return f"{label}: {amount(value, unit)}"
    lower = sum(peer < value for peer in peers)
    higher = sum(peer > value for peer in peers)
    return (f"{label}: {amount(value, unit)}; of {counted(len(peers), 'peer')},"
            f" {lower} lower, {len(peers) - lower - higher} equal, {higher} higher")


def describe_bars(kept: Sequence[tuple[str, Fraction]], unit: str) -> str:
    """Say how many bars there are, from which to which, the highest and lowest, or each one."""
    highest = max(kept, key=lambda bar: bar[1])
    lowest = min(kept, key=lambda bar: bar[1])
    summary = (f"{counted(len(kept), 'bar')} from {kept[0][0]} to {kept[-1][0]};"
               f" highest {amount(highest[1], unit)} ({highest[0]}),"
               f" lowest {amount(lowest[1], unit)} ({lowest[0]})")
    if len(kept) > MOST_BARS_LISTED:
        return summary
    return summary + ": " + ", ".join(f"{name} {spoken(value)}" for name, value in kept)
