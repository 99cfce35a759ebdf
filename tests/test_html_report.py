"""The HTML report: one self-contained file per program and month, whose numbers are DuckDB's own counts
of the snapshots, and whose inlined JavaScript draws every chart in a browser with no network.

The warehouse is built once, in-process, from two golden scenarios: icbc_buffers (stars, points, the
review calendar) and boc_tracks (no points, a fall at 2025-08). A copy of their last months with 3,000
more customers (and none at risk at boc_vip) shows what the charts do when one count dwarfs the rest or
there is nothing to draw; a slow test builds twelve month-ends of 2,000 synthetic customers for the
size of a full report. Chromium, where installed, renders each page offline and takes its screenshot.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ground.errors import TiersError
from interfaces.html_report import (AT_RISK_LISTED, DIRECTIONS, PLOTLY_BUNDLE, REASONS, TIER_COLOURS, _spans,
                               tier_colour, build_report, report_path)
from ground.months import Month

GOLDEN = Path(__file__).resolve().parent / "golden"
BACKFILLS = {"icbc_star": ("icbc_buffers", "2024-12", "2026-06"), "boc_vip": ("boc_tracks", "2024-12", "2025-08")}
# The last month of each scenario (downgrades, buffers, at-risk), a review month, and a first month.
CASES = [("icbc_star", "2026-06"), ("icbc_star", "2025-12"), ("icbc_star", "2024-12"), ("boc_vip", "2025-08")]
CHARTS = ["distribution", "migration", "reasons", "at_risk", "points"]
# What a browser would fetch: any external script or stylesheet, an @import, or a url() off this file.
FETCHES = re.compile(r"""<script\b[^>]*\bsrc\s*=|<link\b[^>]*\bhref\s*=|@import|url\(\s*['"]?\s*(?:https?:)?//""", re.I)
NEWPLOT = re.compile(r'Plotly\.newPlot\(\s*"chart-([\w-]+)",\s*')
REPORT_DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def warehouse(prefect_harness, tmp_path_factory) -> Path:
    from flows.runs import backfill

    root = tmp_path_factory.mktemp("html-report") / "warehouse"
    for program, (scenario, first, last) in BACKFILLS.items():
        backfill.fn(str(GOLDEN / scenario / "landing"), first, last, str(root), [program])
    return root


@pytest.fixture(scope="module")
def reports(warehouse) -> dict[tuple[str, str], str]:
    built = {}
    for program, month in CASES:
        [path] = build_report(warehouse, Month.parse(month), program)
        assert path == report_path(warehouse, program, Month.parse(month))
        built[program, month] = path.read_text(encoding="utf-8")
    return built


def figures(html: str) -> dict[str, tuple[list, dict]]:
    """Each chart's traces and layout, as the page hands them to Plotly.newPlot."""
    decoder, charts = json.JSONDecoder(), {}
    for call in NEWPLOT.finditer(html):
        traces, end = decoder.raw_decode(html, call.end())
        layout, _ = decoder.raw_decode(html, html.index("{", end))
        charts[call.group(1)] = (traces, layout)
    return charts


def embedded(html: str) -> dict:
    [block] = REPORT_DATA.findall(html)
    return json.loads(block)


def counted(warehouse: Path, sql: str, **params) -> list[tuple]:
    """An independent count, straight from the snapshot files as an analyst would query them."""
    source = "read_parquet($glob, hive_partitioning = true, union_by_name = true)"
    return duckdb.sql(sql.replace("SNAP", source),
                      params={"glob": str(warehouse / "snapshots" / "**" / "*.parquet"), **params}).fetchall()


@pytest.mark.parametrize("program, month", CASES)
def test_report_is_self_contained(reports, program, month):
    html = reports[program, month]
    assert html.startswith("<!DOCTYPE html>")
    assert not [m.group(0) for m in FETCHES.finditer(html)]
    head, body = html.split("</head>")
    assert head.count("* plotly.js (cartesian - minified) v") == 1  # the library itself, inlined once in the head
    assert "* plotly.js" not in body  # and not again with each chart


def test_bundled_plotlyjs_matches_the_plotly_package():
    """The vendored partial bundle must be the plotly.js the plotly package writes its figures for: after
    a plotly upgrade, vendor the same version again (docs/decisions.md, Report)."""
    from plotly.offline import get_plotlyjs

    version = re.compile(r"\* plotly\.js (?:\([^)]*\) )?v(\d+\.\d+\.\d+)")
    assert version.search(PLOTLY_BUNDLE.read_text(encoding="utf-8")[:500]).group(1) == \
        version.search(get_plotlyjs()[:500]).group(1)


@pytest.mark.parametrize("program, month", CASES)
def test_report_stays_small(reports, program, month):
    """icbc_star 2026-06 spans 19 months. Past plotly.js, the page holds per-tier counts and at most
    AT_RISK_LISTED customers, so its size does not grow with the number of customers."""
    size = len(reports[program, month].encode("utf-8"))
    assert size < 2_000_000, f"{program} {month}: {size:,} bytes"
    assert size - PLOTLY_BUNDLE.stat().st_size < 250_000


@pytest.mark.parametrize("program, month", CASES)
def test_figures_equal_duckdb_counts(warehouse, reports, program, month):
    check_counts(warehouse, program, month, reports[program, month], first_month=month == BACKFILLS[program][1])


def check_counts(warehouse: Path, program: str, month: str, html: str, first_month: bool = False) -> None:
    """Every number of the report (its data block, each chart's labels and each sentence) against DuckDB."""
    data = embedded(html)
    as_of = Month.parse(month).last_day
    this_month = "WHERE program = $p AND as_of = $d"
    args = {"p": program, "d": as_of}

    distribution = counted(warehouse, "SELECT CAST(as_of AS VARCHAR), tier, count(*) FROM SNAP "
                                      "WHERE program = $p AND as_of <= $d GROUP BY ALL", **args)
    assert {(r["as_of"], r["tier"], r["customers"]) for r in data["distribution"]} == set(distribution)
    assert data["customers"] == counted(warehouse, f"SELECT count(*) FROM SNAP {this_month}", **args)[0][0]

    # The report joins last month's snapshot; the engine's own previous_tier column must agree (these
    # scenarios have no customer joining or leaving, so the two ways count the same customers).
    if first_month:
        assert data["migration"] is None
    else:
        moves = counted(warehouse, f"SELECT previous_tier, tier, count(*) FROM SNAP {this_month} GROUP BY ALL", **args)
        assert {(r["from_tier"], r["to_tier"]): r["customers"] for r in data["migration"]} == {
            (f, t): n for f, t, n in moves}

    by_reason: dict[str, int] = {}
    for row in data["reasons"]:
        by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + row["customers"]
    assert by_reason == dict(counted(warehouse, f"SELECT reason, count(*) FROM SNAP {this_month} GROUP BY ALL", **args))
    [(ups, downs)] = counted(warehouse, "SELECT count(*) FILTER (WHERE tier > previous_tier), "
                                        f"count(*) FILTER (WHERE tier < previous_tier) FROM SNAP {this_month}", **args)
    assert sum(r["customers"] for r in data["reasons"] if r["direction"] == "up") == ups
    assert sum(r["customers"] for r in data["reasons"] if r["direction"] == "down") == downs

    at_risk = dict(counted(warehouse, f"SELECT tier, count(*) FROM SNAP {this_month} AND at_risk GROUP BY ALL", **args))
    assert {r["tier"]: r["at_risk"] for r in data["at_risk"] if r["at_risk"]} == at_risk
    listed = {r["customer_id"] for r in data["at_risk_listed"]}
    assert len(listed) == min(sum(at_risk.values()), AT_RISK_LISTED)
    everyone = counted(warehouse, f"SELECT customer_id FROM SNAP {this_month} AND at_risk", **args)
    assert listed <= {customer for (customer,) in everyone}

    if program == "boc_vip":
        assert data["points"] is None  # Bank of China scores no points: the section says so instead of a chart
    else:
        stats = counted(warehouse, "SELECT tier, count(points), CAST(min(points) AS VARCHAR), "
                                   f"CAST(max(points) AS VARCHAR) FROM SNAP {this_month} GROUP BY tier", **args)
        assert {(r["tier"], r["customers"], r["min"], r["max"]) for r in data["points"]} == set(stats)

    # What the charts print and the sentences say, against the same counts.
    charts = figures(html)
    names = {t["tier"]: f"{t['tier']} {t['tier_name']}" for t in data["tiers"]}
    reasons = dict(counted(warehouse, "SELECT reason || '/' || CASE WHEN previous_tier IS NULL THEN 'new' "
                                      "WHEN tier > previous_tier THEN 'up' WHEN tier < previous_tier THEN 'down' "
                                      f"ELSE 'same' END, count(*) FROM SNAP {this_month} GROUP BY ALL", **args))
    labels = {label: key for key, (label, _) in DIRECTIONS.items()}
    printed = {}
    for trace in charts["reasons"][0]:
        for reason, text in zip(trace["y"], trace["text"]):
            printed[reason.split(" (")[0] + "/" + labels[trace["name"]]] = int(text.replace(",", ""))
    assert printed == reasons
    unused = sorted(set(REASONS) - {key.split("/")[0] for key in reasons})
    assert (f"No customer this month for: {', '.join(r for r in REASONS if r in unused)}." in html) == bool(unused)
    if at_risk:
        [bars] = charts["at_risk"][0]
        printed = {x: int(text.replace(",", "")) for x, text in zip(bars["x"], bars["text"])}
        assert printed == {names[t]: n for t, n in at_risk.items()}
    else:
        assert "at_risk" not in charts and f"No customer of {program} is at risk at {month}" in html
    if not first_month:
        cells = {}
        for trace in charts["migration"][0]:
            for source, texts in zip(trace["y"], trace["text"]):
                for target, text in zip(trace["x"], texts):
                    if text:
                        cells[source, target] = int(text.replace(",", ""))
        moves = counted(warehouse, f"SELECT previous_tier, tier, count(*) FROM SNAP {this_month} GROUP BY ALL", **args)
        assert cells == {(names.get(f, "joined this month"), names.get(t, "left this month")): n for f, t, n in moves}
        [(up, down, same)] = counted(warehouse, "SELECT count(*) FILTER (WHERE tier > previous_tier), "
                                     "count(*) FILTER (WHERE tier < previous_tier), "
                                     f"count(*) FILTER (WHERE tier = previous_tier) FROM SNAP {this_month}", **args)
        assert f"{up:,} customers moved up (green, left of the diagonal), {down:,} moved down (red, right of it) " \
               f"and {same:,} kept their tier" in html


def test_figures_tell_the_scenarios_story(reports):
    """Spot checks against the scenario READMEs, so a report and a query cannot be wrong the same way."""
    icbc = embedded(reports["icbc_star", "2026-06"])
    assert {(r["reason"], r["direction"]): r["customers"] for r in icbc["reasons"]}[("downgrade", "down")] == 1
    assert {r["customer_id"] for r in icbc["at_risk_listed"]} == {"seven-star", "recovers"}
    boc = embedded(reports["boc_vip", "2025-08"])
    assert {(r["from_tier"], r["to_tier"]): r["customers"] for r in boc["migration"]}[(1, 0)] == 1  # `loan` falls
    assert [r["customer_id"] for r in boc["at_risk_listed"]] == ["big-ticket"]


def test_every_program_of_the_month_and_missing_months(warehouse):
    paths = build_report(warehouse, Month.parse("2025-08"), None)
    assert paths == [report_path(warehouse, p, Month.parse("2025-08")) for p in ("boc_vip", "icbc_star")]
    assert not list((warehouse / "reports").rglob(".report-*"))  # written by rename, nothing left behind
    with pytest.raises(TiersError, match=r"boc_vip: no snapshot for 2026-06 .*published: 2024-12\.\.2025-08"):
        build_report(warehouse, Month.parse("2026-06"), "boc_vip")
    with pytest.raises(TiersError, match=r"icbc_star 2024-12\.\.2026-06"):
        build_report(warehouse, Month.parse("2030-01"), None)
    assert _spans([Month(2024, 12), Month(2025, 1), Month(2025, 3)]) == "2024-12..2025-01, 2025-03"


@pytest.mark.parametrize("program, month", [("icbc_star", "2026-06"), ("boc_vip", "2025-08")])
def test_charts_render_offline_in_chromium(warehouse, reports, program, month, tmp_path):
    html = reports[program, month]
    charts = re.findall(r'<div id="chart-([\w-]+)" class="plotly-graph-div"', html)
    assert charts == [c for c in CHARTS if program != "boc_vip" or c != "points"]
    done = chromium("--dump-dom", report_path(warehouse, program, Month.parse(month)).as_uri(),
                    profile=tmp_path / "profile")
    dom = done.stdout
    # The source has empty chart divs; only plotly.js running in the page puts an SVG in each of them.
    starts = [dom.index(f'id="chart-{chart}"') for chart in charts] + [len(dom)]
    for chart, start, end in zip(charts, starts, starts[1:]):
        assert 'class="main-svg"' in dom[start:end], f"chart {chart} was not drawn"
    assert 'class="main-svg"' not in html  # so the SVGs above came from the JavaScript


def test_migration_counts_customers_who_joined_or_left(warehouse, tmp_path):
    """The golden scenarios keep their customers; here `climber` leaves and `newcomer` joins at 2026-06."""
    store = tmp_path / "warehouse"
    edits = {"2026-05": "", "2026-06": "WHERE customer_id <> 'climber' UNION ALL SELECT * REPLACE ('newcomer' AS "
             "customer_id, NULL AS previous_tier, 'initial' AS reason) FROM snap WHERE customer_id = 'four-star'"}
    con = duckdb.connect()
    for month, edit in edits.items():
        folder = Path("snapshots", "program=icbc_star", f"as_of={Month.parse(month).last_day}")
        (store / folder).mkdir(parents=True)
        con.execute(f"CREATE OR REPLACE VIEW snap AS FROM read_parquet('{warehouse / folder / 'data.parquet'}')")
        con.execute(f"COPY (FROM snap {edit}) TO '{store / folder / 'data.parquet'}' (FORMAT parquet)")
    [path] = build_report(store, Month.parse("2026-06"), "icbc_star")
    html = path.read_text(encoding="utf-8")
    moves = {(r["from_tier"], r["to_tier"]): r["customers"] for r in embedded(html)["migration"]}
    assert moves[(5, None)] == 1 and moves[(None, 1)] == 1  # a five-star left, a quasi-star joined
    assert "joined this month" in html and "left this month" in html
    # Joiners and leavers are a layer of their own (blue), and the sentence counts them.
    [blue] = [trace for trace in figures(html)["migration"][0] if trace["colorscale"][-1][1] == "#2171b5"]
    assert {(y, x): text for y, row in zip(blue["y"], blue["text"]) for x, text in zip(blue["x"], row) if text} == {
        ("joined this month", "1 quasi-star"): "1", ("5 five-star", "left this month"): "1"}
    assert "; 1 joined and 1 left (blue)." in html
    with pytest.raises(TiersError, match=r"published: 2026-05\.\.2026-06"):
        build_report(store, Month.parse("2026-04"), "icbc_star")


def test_writes_under_reports_only(warehouse, tmp_path):
    """A reader (data-contract.md section 3): the report adds files under reports/ and changes nothing else,
    the writer's database included; it works with that database gone."""
    store = tmp_path / "warehouse"
    shutil.copytree(warehouse, store, ignore=shutil.ignore_patterns("reports", "tiers.duckdb*", "tiers.lock"))

    def tree() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*")}

    before = tree()
    [path] = build_report(store, Month.parse("2025-08"), "boc_vip")
    after = tree()
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("reports") for k in after.keys() - before.keys())
    assert str(path.relative_to(store)) in after and not (store / "tiers.duckdb").exists()


# The golden scenarios hold six customers each, so no count dwarfs another. Here icbc_star's last two
# months gain 3,000 quasi-stars who meet their tier (points 0 to 8,000, most of them low) and 5 who rise
# to three-star, and boc_vip's last month has nobody at risk: what a bank's month-end looks like, and a
# program with no points and no at-risk customer.
EDITS = {
    ("icbc_star", "2026-05"): "FROM snap UNION ALL SELECT snap.* REPLACE ('bulk-' || i AS customer_id, "
                              "CAST(pow(1.003, i) - 1 AS DECIMAL(18, 2)) AS points) FROM snap, range(3000) AS r(i) "
                              "WHERE customer_id = 'five-star' UNION ALL SELECT snap.* REPLACE ('riser-' || i AS "
                              "customer_id) FROM snap, range(5) AS r(i) WHERE customer_id = 'five-star'",
    ("icbc_star", "2026-06"): "FROM snap UNION ALL SELECT snap.* REPLACE ('bulk-' || i AS customer_id, "
                              "CAST(pow(1.003, i) - 1 AS DECIMAL(18, 2)) AS points) FROM snap, range(3000) AS r(i) "
                              "WHERE customer_id = 'five-star' UNION ALL SELECT snap.* REPLACE ('riser-' || i AS "
                              "customer_id, 3 AS tier, 'three-star' AS tier_name, 'upgrade' AS reason, "
                              "CAST(60 AS DECIMAL(18, 2)) AS points) FROM snap, range(5) AS r(i) "
                              "WHERE customer_id = 'five-star'",
    ("boc_vip", "2025-07"): "FROM snap",
    ("boc_vip", "2025-08"): "SELECT * REPLACE (false AS at_risk) FROM snap",
}


@pytest.fixture(scope="module")
def edited(warehouse, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("edited") / "warehouse"
    con = duckdb.connect()
    for (program, month), edit in EDITS.items():
        folder = Path("snapshots", f"program={program}", f"as_of={Month.parse(month).last_day}")
        (store / folder).mkdir(parents=True)
        con.execute(f"CREATE OR REPLACE VIEW snap AS FROM read_parquet('{warehouse / folder / 'data.parquet'}')")
        con.execute(f"COPY ({edit}) TO '{store / folder / 'data.parquet'}' (FORMAT parquet)")
    for program, month in (("icbc_star", "2026-06"), ("boc_vip", "2025-08")):
        build_report(store, Month.parse(month), program)
    return store


def edited_report(edited: Path, program: str, month: str) -> str:
    return report_path(edited, program, Month.parse(month)).read_text(encoding="utf-8")


def test_edited_figures_equal_duckdb_counts(edited):
    check_counts(edited, "icbc_star", "2026-06", edited_report(edited, "icbc_star", "2026-06"))
    check_counts(edited, "boc_vip", "2025-08", edited_report(edited, "boc_vip", "2025-08"))


def test_log_axes_where_one_count_dwarfs_the_rest(reports, edited):
    skewed = figures(edited_report(edited, "icbc_star", "2026-06"))
    # 3,003 `meets` beside 5 upgrades, 2 buffers and 1 downgrade: a log axis, each count printed on its bar.
    traces, layout = skewed["reasons"]
    assert layout["xaxis"]["type"] == "log"
    assert {y: t for trace in traces for y, t in zip(trace["y"], trace["text"])} == {
        "meets": "3,003", "upgrade": "5", "buffer": "2", "downgrade": "1"}
    # 3,003 quasi-stars beside one seven-star: a line per tier on a log axis instead of a stack.
    traces, layout = skewed["distribution"]
    assert layout["yaxis"]["type"] == "log" and {t["type"] for t in traces} == {"scatter"}
    # A points panel per tier. The five-stars' 10 to 6,000 and the quasi-stars' 0 to 8,000 (a quarter
    # of them under 9) on log axes of their own, from half the lower quartile when the minimum is 0; the
    # three-stars' 60 on a linear one.
    traces, layout = skewed["points"]
    axes = {trace["name"]: layout["xaxis" + trace["xaxis"][1:]] for trace in traces}
    assert axes["5 five-star"]["type"] == axes["1 quasi-star"]["type"] == "log"
    assert axes["3 three-star"].get("type", "linear") == "linear"
    [quasi] = [trace for trace in traces if trace["name"] == "1 quasi-star"]
    assert quasi["lowerfence"] == [0] and 0 < quasi["q1"][0] < 10 < 7000 < quasi["upperfence"][0]
    assert axes["1 quasi-star"]["range"] == pytest.approx([math.log10(quasi["q1"][0] / 2) - 0.1,
                                                           math.log10(quasi["upperfence"][0]) + 0.1])
    assert [trace["y"] for trace in traces] == [["7 seven-star"], ["5 five-star (log)"], ["3 three-star"],
                                                ["1 quasi-star (log)"]]
    html = edited_report(edited, "icbc_star", "2026-06")
    assert "a whisker that runs off the left edge goes down to 0 points" in html
    # Six customers in the golden scenario: plain stacked bars and linear axes.
    traces, layout = figures(reports["icbc_star", "2026-06"])["distribution"]
    assert layout["barmode"] == "stack" and {t["type"] for t in traces} == {"bar"}
    assert figures(reports["icbc_star", "2026-06"])["reasons"][1]["xaxis"]["type"] == "linear"


def test_movers_stand_out_in_the_migration_matrix(edited):
    html = edited_report(edited, "icbc_star", "2026-06")
    traces, _ = figures(html)["migration"]
    layers = {trace["colorscale"][-1][1]: trace for trace in traces}
    # Stayers, risers and fallers each on their own layer (grey, green, red), every non-zero cell printed.
    assert len(layers) == 3
    cells = {colour: {(y, x): text for y, row in zip(t["y"], t["text"]) for x, text in zip(t["x"], row) if text}
             for colour, t in layers.items()}
    assert cells["#238b45"] == {("1 quasi-star", "3 three-star"): "5"}  # up: green
    assert cells["#cb181d"] == {("6 six-star", "1 quasi-star"): "1"}  # down: red
    assert cells["#9aa3ad"][("1 quasi-star", "1 quasi-star")] == "3,002"
    # The shade is the log of the count, on one scale for all layers: 1 faller shows beside 3,002 stayers.
    down = [v for row in layers["#cb181d"]["z"] for v in row if v is not None]
    assert down == [1] and layers["#cb181d"]["zmax"] == layers["#9aa3ad"]["zmax"] == pytest.approx(4.477, abs=1e-3)
    assert "5 customers moved up (green, left of the diagonal), 1 moved down (red, right of it) and 3,005 kept" in html


def test_no_empty_chart(reports, edited):
    """A chart with nothing to draw is a sentence instead; every chart drawn has something in it."""
    pages = {**{case: html for case, html in reports.items()},
             **{(p, m, "edited"): edited_report(edited, p, m) for p, m in (("icbc_star", "2026-06"),
                                                                          ("boc_vip", "2025-08"))}}
    for case, html in pages.items():
        charts = figures(html)
        for key, (traces, _) in charts.items():
            assert traces and all(any(v for v in drawn(t) if v is not None) for t in traces), (case, key)
        for key in CHARTS:
            section = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S).group(1)
            assert key in charts or '<p class="note">' in section, (case, key)
    boc = pages["boc_vip", "2025-08", "edited"]
    assert sorted(figures(boc)) == ["distribution", "migration", "reasons"]
    assert "No customer of boc_vip is at risk at 2025-08" in boc and "boc_vip scores no points" in boc


def drawn(trace: dict) -> list:
    """The values a trace draws: the cells of a heatmap, the fences of a box, the lengths of bars."""
    if trace["type"] == "heatmap":
        return [cell for row in trace["z"] for cell in row]
    if trace["type"] == "box":
        return [fence is not None for fence in trace["upperfence"]]  # a box at 0 points is drawn too
    return trace["x"] if trace.get("orientation") == "h" else trace["y"]


def test_tier_colours_are_fixed_by_tier_number(reports, edited):
    """The same tier has the same colour in every chart of every report, whichever tiers a month holds."""
    seen: dict[str, set[str]] = {}
    pages = [*reports.values(), edited_report(edited, "icbc_star", "2026-06"),
             edited_report(edited, "boc_vip", "2025-08")]
    for html in pages:
        charts = figures(html)
        for trace in charts["distribution"][0]:
            seen.setdefault(trace["name"], set()).add(trace["marker"]["color"])
        for trace in charts.get("points", ([], {}))[0]:
            seen.setdefault(trace["name"], set()).add(trace["fillcolor"])
        if "at_risk" in charts:
            [bars] = charts["at_risk"][0]
            for name, colour in zip(bars["x"], bars["marker"]["color"]):
                seen.setdefault(name, set()).add(colour)
    assert {name: colours for name, colours in seen.items()} == {
        name: {tier_colour(int(name.split()[0]))} for name in seen}
    # icbc 2024-12 holds no quasi-star yet and 2026-06 no six-star; the colours stay put all the same.
    assert {"1 quasi-star", "6 six-star", "7 seven-star", "0 ordinary", "3 private-banking"} <= seen.keys()
    assert tier_colour(7) == TIER_COLOURS[7] != tier_colour(6) and tier_colour(12) == tier_colour(0)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no chromium or chromium-browser on PATH (Debian: apt-get install chromium)")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize("program, month", [("icbc_star", "2026-06"), ("boc_vip", "2025-08")])
def test_screenshot_shows_every_chart_in_its_colours(edited, program, month, tmp_path):
    """The page as a person sees it: Chromium's screenshot, offline, holds each colour the charts draw
    (each tier's, each direction's) as painted pixels, so no chart is blank, cut or drawn in a stray
    palette. The screenshot is kept beside the report's test folder for a look (tmp_path/page.png)."""
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,4000",
             report_path(edited, program, Month.parse(month)).as_uri(), profile=tmp_path / "profile")
    pixels = png_pixels(shot).astype(np.uint32)
    values, counts = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2], return_counts=True)
    painted = {f"#{value:06x}": int(count) for value, count in zip(values, counts)}
    charts = figures(edited_report(edited, program, month))
    expected = {t["marker"]["color"] for t in charts["distribution"][0]}
    expected |= {t["marker"]["color"] for t in charts["reasons"][0]}
    for trace in charts.get("at_risk", ([], {}))[0]:
        expected |= set(trace["marker"]["color"])
    assert len(expected) >= 5
    assert {colour: painted.get(colour, 0) for colour in expected if painted.get(colour, 0) < 40} == {}
    # The page ends above the window's bottom edge, so every chart and sentence is in the picture.
    assert (pixels[-100:] == 255).all()


def png_pixels(path: Path) -> np.ndarray:
    """A PNG's RGB pixels (8-bit, not interlaced, as Chromium writes them), with no imaging library."""
    raw, pos, idat = path.read_bytes(), 8, []
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    while pos < len(raw):
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", raw[pos + 8:pos + 21])
        elif kind == b"IDAT":
            idat.append(raw[pos + 8:pos + 8 + length])
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and not interlace
    step = 3 if colour == 2 else 4
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, width * step + 1)
    out, above = np.zeros((height, width * step), np.int32), np.zeros(width * step, np.int32)
    for y in range(height):
        kind, row = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:  # None
            above = row
        elif kind == 2:  # Up
            above = (row + above) & 255
        else:  # Sub, Average, Paeth: each byte needs the one left of it, so byte by byte
            cur, up = row.tolist(), above.tolist()
            for i in range(len(cur)):
                left, corner = (cur[i - step], up[i - step]) if i >= step else (0, 0)
                if kind == 1:
                    cur[i] = (cur[i] + left) & 255
                elif kind == 3:
                    cur[i] = (cur[i] + ((left + up[i]) >> 1)) & 255
                else:
                    a, b, c = abs(up[i] - corner), abs(left - corner), abs(left + up[i] - 2 * corner)
                    cur[i] = (cur[i] + (left if a <= b and a <= c else up[i] if b <= c else corner)) & 255
            above = np.array(cur, np.int32)
        out[y] = above
    return out.reshape(height, width, step)[..., :3]


@pytest.fixture(scope="module")
def month_end(prefect_harness, tmp_path_factory) -> Path:
    """Twelve month-ends of 2,000 synthetic customers: every tier held, movers each month, a full
    at-risk list, as `tiers demo --customers 2000` makes them."""
    from data.generator import generate_landing
    from flows.runs import backfill

    root = tmp_path_factory.mktemp("month-end")
    # From 2024-08: icbc_star looks back six months, so 2025-01 needs 2024-08 on.
    generate_landing(root / "landing", customers=2000, first_month="2024-08", months=17, file_format="parquet")
    backfill.fn(str(root / "landing"), "2025-01", "2025-12", str(root / "warehouse"), ["icbc_star"])
    return root / "warehouse"


@pytest.mark.slow
def test_twelve_month_report_is_under_2_mb(month_end, tmp_path):
    [path] = build_report(month_end, Month.parse("2025-12"), "icbc_star")
    html = path.read_text(encoding="utf-8")
    data = embedded(html)
    # The page at its largest: twelve months, every tier, the at-risk list full.
    assert len({row["as_of"] for row in data["distribution"]}) == 12 and len(data["tiers"]) == 7
    assert len(data["at_risk_listed"]) == AT_RISK_LISTED
    assert path.stat().st_size < 2_000_000, f"{path.stat().st_size:,} bytes"
    check_counts(month_end, "icbc_star", "2025-12", html)
    # A real month-end is skewed: the charts that need one have their log axis.
    charts = figures(html)
    assert charts["reasons"][1]["xaxis"]["type"] == "log" and charts["distribution"][1]["yaxis"]["type"] == "log"
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,6000", path.as_uri(), profile=tmp_path / "profile")
    pixels = png_pixels(shot).astype(np.uint32)
    painted = set(np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]).tolist())
    assert {tier_colour(t["tier"]) for t in data["tiers"]} <= {f"#{value:06x}" for value in painted}
