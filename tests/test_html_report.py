"""The HTML report: one self-contained file per program and month, whose numbers are DuckDB's own counts
of the snapshots, and whose inlined JavaScript draws every chart in a browser with no network.

The warehouse is built once, in-process, from two golden scenarios: icbc_buffers (stars, points, the
review calendar) and boc_tracks (no points, a fall at 2025-08).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from tiers.errors import TiersError
from tiers.html_report import AT_RISK_LISTED, PLOTLY_BUNDLE, _spans, build_report, report_path
from tiers.months import Month

GOLDEN = Path(__file__).resolve().parent / "golden"
BACKFILLS = {"icbc_star": ("icbc_buffers", "2024-12", "2026-06"), "boc_vip": ("boc_tracks", "2024-12", "2025-08")}
# The last month of each scenario (downgrades, buffers, at-risk), a review month, and a first month.
CASES = [("icbc_star", "2026-06"), ("icbc_star", "2025-12"), ("icbc_star", "2024-12"), ("boc_vip", "2025-08")]
CHARTS = ["distribution", "migration", "reasons", "at_risk", "points"]
# What a browser would fetch: any external script or stylesheet, an @import, or a url() off this file.
FETCHES = re.compile(r"""<script\b[^>]*\bsrc\s*=|<link\b[^>]*\bhref\s*=|@import|url\(\s*['"]?\s*(?:https?:)?//""", re.I)
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
    data = embedded(reports[program, month])
    as_of = Month.parse(month).last_day
    this_month = "WHERE program = $p AND as_of = $d"
    args = {"p": program, "d": as_of}

    distribution = counted(warehouse, "SELECT CAST(as_of AS VARCHAR), tier, count(*) FROM SNAP "
                                      "WHERE program = $p AND as_of <= $d GROUP BY ALL", **args)
    assert {(r["as_of"], r["tier"], r["customers"]) for r in data["distribution"]} == set(distribution)
    assert data["customers"] == counted(warehouse, f"SELECT count(*) FROM SNAP {this_month}", **args)[0][0]

    # The report joins last month's snapshot; the engine's own previous_tier column must agree (these
    # scenarios have no customer joining or leaving, so the two ways count the same customers).
    if month == BACKFILLS[program][1]:
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
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no chromium or chromium-browser on PATH (Debian: apt-get install chromium)")
    html = reports[program, month]
    charts = re.findall(r'<div id="chart-([\w-]+)" class="plotly-graph-div"', html)
    assert charts == [c for c in CHARTS if program != "boc_vip" or c != "points"]
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         report_path(warehouse, program, Month.parse(month)).as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
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
