"""The console's SVG charts: well-formed, labelled in words, free of inline style, true to scale."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from backend.console.charts import (
    Band,
    Reference,
    Series,
    bar_chart,
    peer_distribution_chart,
    time_series_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 9, 1, 14, 0, tzinfo=UTC)
PLACED = ("x", "y", "x1", "y1", "x2", "y2", "cx", "cy")
SIZED = ("width", "height", "r")


def weekly(values):
    """Return one reading a week from START, in order."""
    return [(START + timedelta(days=7 * week), value) for week, value in enumerate(values)]


def dose_chart():
    """Draw twelve weekly doses against a plan dose, a limit and an allowed band."""
    doses = Series("Dose", weekly([Decimal(30 + week) for week in range(12)]))
    return time_series_chart(
        "dose", "Doses", [doses], unit="mg",
        references=[Reference("plan dose", 35), Reference("limit", Decimal("45"), "limit")],
        band=Band("allowed", 30, 40), note="Latest 0.5 mg/kg")


def scores_chart(phq9=(20, 15, 10, 5), madrs=(30, 24, 18, 12)):
    """Draw PHQ-9 and MADRS scores with PHQ-9's severity cut points."""
    cuts = [Reference(f"PHQ-9 {word}", value, "cut")
            for word, value in [("mild", 5), ("moderate", 10), ("moderately severe", 15),
                                ("severe", 20)]]
    return time_series_chart("scores", "Scores", [Series("PHQ-9", weekly(phq9)),
                                                  Series("MADRS", weekly(madrs))],
                             references=cuts)


def waste_chart(peers=(1, 2.5, Decimal("3"), None, 4), her=3.5):
    """Draw a nurse's waste per visit against her peers'."""
    return peer_distribution_chart("waste", "Waste per visit", "waste per visit", "mg", peers, her)


def visits_chart():
    """Draw a week of visits per day against a maximum."""
    days = [(date(2026, 11, day), day % 4) for day in range(1, 8)]
    return bar_chart("visits", "Visits per day", days, unit="visits",
                     references=[Reference("maximum", 3, "limit")])


CHARTS = {
    "dose": dose_chart,
    "scores": scores_chart,
    "waste": waste_chart,
    "visits": visits_chart,
    "no series": lambda: time_series_chart("none", "Doses", []),
    "no peers": lambda: waste_chart(peers=[], her=None),
    "no bars": lambda: bar_chart("none", "Visits", [(date(2026, 11, 1), None)]),
}


def parse(chart):
    """Return the chart's root element, failing the test if it is not well-formed XML."""
    return ET.fromstring(str(chart))  # noqa: S314 - our own markup, not untrusted input


def tagged(root, tag):
    """Return every element of the chart with this SVG tag."""
    return list(root.iter(f"{SVG}{tag}"))


def classed(root, name):
    """Return every element of the chart carrying this class name."""
    return [node for node in root.iter() if name in node.get("class", "").split()]


def own_text(root, tag):
    """Return the text of the chart's own <title> or <desc>."""
    return root.find(f"{SVG}{tag}").text


def title_value(node):
    """Return the value a mark's tooltip gives, after its last ': '."""
    return node.find(f"{SVG}title").text.rsplit(": ", 1)[1]


def tick_labels(root):
    """Return the texts of the axis ticks, in order."""
    return [node.text for node in classed(root, "chart-tick")]


@pytest.mark.parametrize("draw", CHARTS.values(), ids=list(CHARTS))
def test_every_chart_is_an_image_labelled_by_its_title_and_description(draw):
    chart = draw()
    root = parse(chart)
    chart_id = root.get("id")
    assert isinstance(chart, Markup)
    assert root.tag == f"{SVG}svg"
    assert (root.get("role"), root.get("width")) == ("img", "100%")
    assert root.get("aria-labelledby") == f"{chart_id}-title {chart_id}-desc"
    assert root.find(f"{SVG}title").get("id") == f"{chart_id}-title"
    assert root.find(f"{SVG}desc").get("id") == f"{chart_id}-desc"
    assert own_text(root, "title") and own_text(root, "desc")


@pytest.mark.parametrize("draw", CHARTS.values(), ids=list(CHARTS))
def test_no_chart_carries_inline_style(draw):
    root = parse(draw())
    assert not tagged(root, "style")
    assert not [node for node in root.iter() if "style" in node.attrib]


@pytest.mark.parametrize(("draw", "said"), [
    (dose_chart, ["Dose: 12 values from 2026-09-01 to 2026-11-17",
                  "latest 41 mg on 2026-11-17", "lowest 30 mg, highest 41 mg",
                  "Reference lines: plan dose 35 mg; limit 45 mg",
                  "Shaded band: allowed 30 to 40 mg", "Latest 0.5 mg/kg."]),
    (scores_chart, ["PHQ-9: 4 values", "latest 5 on 2026-09-22", "MADRS: 4 values",
                    "latest 12", "PHQ-9 moderate 10"]),
    (waste_chart, ["Waste per visit for 4 peers: median 2.75 mg", "middle half 1.75 to 3.5 mg",
                   "range 1 to 4 mg",
                   "This nurse: 3.5 mg; of 4 peers, 3 lower, 0 equal, 1 higher"]),
    (visits_chart, ["7 bars from 2026-11-01 to 2026-11-07", "highest 3 visits (2026-11-03)",
                    "lowest 0 visits (2026-11-04)", "2026-11-02 2", "maximum 3 visits"]),
])
def test_descriptions_state_the_numbers_in_words(draw, said):
    description = own_text(parse(draw()), "desc")
    for words in said:
        assert words in description


@pytest.mark.parametrize(("peers", "her"), [
    ([1, 2, 3, 4], 2.5),
    ([1, 2, 3, 4], 2),
    ([1, 2, 3, 4], 40),
    ([1, 2, 3, 4], -4),
    ([Decimal("0.8")], Decimal("0.5")),
    ([7, 7, 7], 7),
    ([7, 7, 7], 8),
    ([Decimal("1.25"), 0.5, None, 3], Decimal("1.25")),
])
def test_her_marker_lies_where_her_value_lies_among_the_peers(peers, her):
    root = parse(waste_chart(peers=peers, her=her))
    [marker] = classed(root, "chart-her")
    her_x = float(marker.get("cx"))
    present = sorted(Decimal(str(peer)) for peer in peers if peer is not None)
    her = Decimal(str(her))
    dots = [float(dot.get("cx")) for dot in classed(root, "chart-peer")]
    assert len(dots) == len(present)
    for value, x in zip(present, dots, strict=True):
        assert (x < her_x, x == her_x, x > her_x) == (value < her, value == her, value > her)
    assert classed(root, "chart-her-label")[0].text == f"This nurse: {her} mg"


@pytest.mark.parametrize(("peers", "her", "said"), [
    ([], 3, "waste per visit: no peers to compare with. This nurse: 3 mg."),
    ([1, 2], None, "This nurse: no value."),
    ([5], 5, "of 1 peer, 0 lower, 1 equal, 0 higher"),
    ([1, 2, 3], 9, "of 3 peers, 3 lower, 0 equal, 0 higher"),
])
def test_peer_chart_copes_with_few_peers_or_no_value_of_hers(peers, her, said):
    root = parse(waste_chart(peers=peers, her=her))
    assert said.lower() in own_text(root, "desc").lower()
    assert len(classed(root, "chart-her")) == (her is not None)
    assert len(classed(root, "chart-peer")) == len(peers)


def test_a_box_spans_the_middle_half_with_the_median_inside():
    root = parse(waste_chart(peers=[1, 2, 3, 4, 5, 6, 7, 8, 9], her=5))
    at = {title_value(dot): float(dot.get("cx")) for dot in classed(root, "chart-peer")}
    [box] = classed(root, "chart-box")
    [middle] = classed(root, "chart-median")
    # The halves below and above the median are 1-4 and 6-9: quartiles 2.5 and 7.5.
    assert float(box.get("x")) == pytest.approx((at["2 mg"] + at["3 mg"]) / 2, abs=0.01)
    assert float(box.get("x")) + float(box.get("width")) \
        == pytest.approx((at["7 mg"] + at["8 mg"]) / 2, abs=0.01)
    assert float(middle.get("x1")) == at["5 mg"]


@pytest.mark.parametrize("cut", [5, 10, 15, 20])
def test_a_reference_line_sits_level_with_a_point_of_its_value(cut):
    root = parse(scores_chart(phq9=(20, 15, 10, 5)))
    lines = classed(root, "chart-cut")
    level = {title_value(point): float(point.get("cy")) for point in classed(root, "chart-point")
             if "chart-series-1" in point.get("class")}
    assert all(line.get("y1") == line.get("y2") for line in lines)
    assert level[str(cut)] in {float(line.get("y1")) for line in lines}


def test_a_bar_chart_maximum_sits_level_with_a_bar_of_that_height():
    root = parse(visits_chart())
    [limit] = classed(root, "chart-limit")
    tallest = min(float(bar.get("y")) for bar in classed(root, "chart-bar"))
    assert float(limit.get("y1")) == float(limit.get("y2")) == tallest


def test_the_band_spans_from_its_low_to_its_high_value():
    root = parse(dose_chart())
    [band] = classed(root, "chart-band")
    level = {title_value(point): float(point.get("cy")) for point in classed(root, "chart-point")}
    assert float(band.get("y")) == level["40 mg"]
    assert float(band.get("y")) + float(band.get("height")) == pytest.approx(level["30 mg"])


def test_axes_tick_at_round_numbers_and_at_days():
    ticks = tick_labels(parse(scores_chart()))
    assert ticks[:4] == ["0", "10", "20", "30"]
    assert ticks[4:] == ["2026-09-02", "2026-09-09", "2026-09-16"]
    assert tick_labels(parse(waste_chart(peers=[Decimal("0.5")] * 3, her=Decimal("0.5")))) \
        == ["0.45", "0.5", "0.55"]


@pytest.mark.parametrize("draw", [
    lambda: time_series_chart("c", "Doses", []),
    lambda: time_series_chart("c", "Doses", [Series("Dose", weekly([None, float("nan")]))]),
    lambda: waste_chart(peers=[None], her=None),
    lambda: bar_chart("c", "Visits", []),
    lambda: bar_chart("c", "Visits", [("Mon", None), ("Tue", Decimal("Infinity"))]),
])
def test_no_data_says_so_and_keeps_its_title(draw):
    root = parse(draw())
    assert [node.text for node in tagged(root, "text")] == ["No data"]
    assert own_text(root, "desc") == "No data to show."
    assert own_text(root, "title")


MARKUP = '<b>&"'


@pytest.mark.parametrize("draw", [
    lambda: time_series_chart("c", MARKUP, [Series(MARKUP, weekly([1, 2]))], unit=MARKUP,
                              references=[Reference(MARKUP, 1)], band=Band(MARKUP, 1, 2),
                              note=MARKUP),
    lambda: peer_distribution_chart("c", MARKUP, MARKUP, MARKUP, [1, 2], 3, her_label=MARKUP),
    lambda: bar_chart("c", MARKUP, [(MARKUP, 1), ("b", 2)], unit=MARKUP,
                      references=[Reference(MARKUP, 1, "limit")]),
])
def test_labels_are_escaped_and_read_back_as_written(draw):
    chart = str(draw())
    root = parse(chart)
    assert "<b>" not in chart
    assert not [node for node in root.iter() if node.tag.endswith("}b")]
    assert own_text(root, "title") == MARKUP
    assert MARKUP in own_text(root, "desc")


def test_characters_xml_cannot_hold_are_replaced():
    root = parse(time_series_chart("c", "a\x00b\ud800c", []))
    assert own_text(root, "title") == "a\ufffdb\ufffdc"


@pytest.mark.parametrize("draw", CHARTS.values(), ids=list(CHARTS))
def test_the_same_input_draws_the_same_markup(draw):
    assert draw() == draw()


def test_decimals_ints_and_floats_of_one_value_draw_alike():
    drawn = {peer_distribution_chart("c", "t", "m", "mg", [value, 1], value)
             for value in (3, 3.0, Decimal("3.00"))}
    assert len(drawn) == 1


@pytest.mark.parametrize("chart_id", ["", "1st", "a b", 'a"', "a<"])
def test_a_chart_id_must_be_a_plain_name(chart_id):
    with pytest.raises(ValueError, match="chart id"):
        time_series_chart(chart_id, "Doses", [])


def test_a_naive_time_is_refused():
    naive = datetime(2026, 9, 1)  # noqa: DTZ001 - the mistake under test
    with pytest.raises(ValueError, match="naive"):
        time_series_chart("c", "Doses", [Series("Dose", [(naive, 1)])])


def test_coordinates_are_rounded_to_two_decimals():
    root = parse(dose_chart())
    for node in root.iter():
        for name in (PLACED + SIZED if node is not root else ()):
            if name in node.attrib:
                assert round(float(node.get(name)), 2) == float(node.get(name))


def view_box(root):
    """Return the chart's width and height from its viewBox."""
    _, _, width, height = (float(part) for part in root.get("viewBox").split())
    return width, height


def drawn_at(node):
    """Return each (x, y) an element is drawn at: ends, centre, corners and polyline points."""
    def number(name):
        return float(node.get(name, "0"))

    corners = [(number("x1"), number("y1")), (number("x2"), number("y2")),
               (number("cx"), number("cy")), (number("x"), number("y")),
               (number("x") + number("width"), number("y") + number("height"))]
    return corners + [tuple(float(part) for part in pair.split(","))
                      for pair in node.get("points", "").split()]


def assert_drawn_inside(root):
    """Check that every coordinate of the chart is a finite number inside its viewBox."""
    width, height = view_box(root)
    for node in root.iter():
        if node is root:
            continue
        for x, y in drawn_at(node):
            assert math.isfinite(x) and math.isfinite(y), (node.tag, node.attrib)
            assert 0 <= x <= width and 0 <= y <= height, (node.tag, node.attrib)


NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12),
    st.sampled_from([0, 1e308, -1e308, 5e-324, -5e-324, 1e-300]),
)


@settings(deadline=None)
@given(values=st.lists(NUMBERS, max_size=15), her=st.one_of(st.none(), NUMBERS))
def test_any_finite_values_draw_inside_the_picture(values, her):
    reference = [Reference("reference", values[0], "limit")] if values else []
    charts = [
        time_series_chart("c", "t", [Series("s", weekly(values))], references=reference,
                          band=Band("b", her, values[-1]) if values and her is not None else None),
        time_series_chart("c", "t", [Series("one", weekly(values)),
                                     Series("two", weekly(values[::-1]))]),
        peer_distribution_chart("c", "t", "m", "mg", values, her),
        bar_chart("c", "t", [(f"day {index}", value) for index, value in enumerate(values)],
                  references=reference),
    ]
    for chart in charts:
        assert_drawn_inside(parse(chart))
