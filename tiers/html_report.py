"""The HTML report of a program's month-end: one self-contained file, <warehouse>/reports/<program>/<YYYY-MM>.html.

It opens from disk with no server and no network: plotly.js is inlined once, and no font, style or script
is fetched. The inlined plotly.js is the "cartesian" partial bundle (bar, box, heatmap, scatter: all the
report draws), 1.5 MB instead of the full 4.8 MB that the plotly package ships; it is vendored under
templates/ from the npm package plotly.js-cartesian-dist-min of the same plotly.js version as the plotly
package's own bundle (tests/test_html_report.py checks the two versions agree). Every number is a DuckDB aggregate over the published snapshots (never a Python loop over
customers). Each chart repeats its numbers as a plain HTML table, so the report reads without
JavaScript, and all of them sit in the JSON block ``report-data``, so tests and scripts can check them.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import duckdb
import plotly.graph_objects as go
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.utils import htmlsafe_json_dumps

from tiers.errors import TiersError
from tiers.months import Month
from tiers.paths import duckdb_path
from tiers.snapshots import publish, published_months, published_programs, snapshot_path
from tiers.warehouse import Warehouse

# The contract's reasons, in the order a customer meets them; all are shown, so a 0 reads as "none".
REASONS = ["initial", "upgrade", "meets", "held_until_review", "buffer", "downgrade", "credit_cap"]
# The tier against last month's, with a fixed colour each so the meaning survives any palette change.
DIRECTIONS = {"up": ("upgraded", "#2ca02c"), "down": ("downgraded", "#d62728"),
              "same": ("unchanged", "#9da5ae"), "new": ("first rated", "#1f77b4")}
AT_RISK_LISTED = 50
_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATES = Path(__file__).parent / "templates"
PLOTLY_BUNDLE = TEMPLATES / "plotly-cartesian.min.js"
_TEMPLATES = Environment(loader=FileSystemLoader(TEMPLATES),
                         autoescape=select_autoescape(["j2"]), trim_blocks=True, lstrip_blocks=True)


def report_path(warehouse: Path, program: str, month: Month) -> Path:
    return Path(warehouse) / "reports" / program / f"{month}.html"


def build_report(warehouse: Path, month: Month, program: str | None = None) -> list[Path]:
    """Write the report of ``month`` for ``program`` (default: every program published for that month)."""
    store = Warehouse(Path(warehouse))
    programs = [program] if program else published_programs(store, month)
    if not programs:
        published = "; ".join(f"{p} {_spans(published_months(store, p))}" for p in published_programs(store))
        raise TiersError(f"no program has a snapshot for {month} in {store.snapshots}"
                         + (f" (published: {published})" if published else ": nothing is published there"))
    paths = []
    for name in programs:
        data = report_data(store, name, month)
        paths.append(_write(store, report_path(store.root, name, month), render(data)))
    return paths


def report_data(store: Warehouse, program: str, month: Month) -> dict:
    """Every figure of the report, as plain JSON-ready rows (dates and decimals become text later)."""
    months = published_months(store, program)
    if month not in months:
        if not months:
            others = ", ".join(published_programs(store)) or "none"
            raise TiersError(f"{program}: nothing is published in {store.snapshots} (programs: {others})")
        raise TiersError(f"{program}: no snapshot for {month} in {store.snapshots} (published: {_spans(months)})")
    # Last month's snapshot is the state the engine moved from (its previous_tier), so only that month counts.
    previous = month.plus(-1) if month.plus(-1) in months else None
    con = duckdb.connect()
    # duckdb_path: DuckDB globs even a list of files; a warehouse named wh[1] must not read wh1's.
    files = [duckdb_path(snapshot_path(store, program, m)) for m in months if m <= month]
    # union_by_name: a rule change may add or drop pts_/fig_ columns between months.
    con.read_parquet(files, hive_partitioning=True, union_by_name=True).create_view("snap")
    now = {"as_of": month.last_day}

    def rows(sql: str, **params) -> list[dict]:
        result = con.execute(sql, params)
        names = [column[0] for column in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]

    # A tier's latest name; earned tiers nobody holds fall back to their number.
    con.execute("CREATE TEMP TABLE names AS "
                "SELECT tier, arg_max(tier_name, as_of) AS tier_name FROM snap GROUP BY tier")
    migration = None
    if previous:
        # A full join, so customers who joined (from NULL) or left (to NULL) this month are counted too.
        migration = rows(
            "SELECT p.tier AS from_tier, c.tier AS to_tier, count(*) AS customers "
            "FROM (SELECT customer_id, tier FROM snap WHERE as_of = $before) AS p "
            "FULL JOIN (SELECT customer_id, tier FROM snap WHERE as_of = $as_of) AS c USING (customer_id) "
            "GROUP BY ALL ORDER BY from_tier DESC NULLS FIRST, to_tier DESC NULLS LAST",
            before=previous.last_day, **now)
    points = rows(
        "SELECT tier, count(points) AS customers, min(points) AS min, quantile_disc(points, 0.25) AS q1, "
        "quantile_disc(points, 0.5) AS median, quantile_disc(points, 0.75) AS q3, max(points) AS max "
        "FROM snap WHERE as_of = $as_of GROUP BY tier HAVING count(points) > 0 ORDER BY tier DESC", **now)
    return {
        "program": program,
        "month": str(month),
        "as_of": month.last_day,
        "previous_month": str(previous) if previous else None,
        "customers": con.execute("SELECT count(*) FROM snap WHERE as_of = $as_of", now).fetchone()[0],
        "rules_versions": [r["rules_version"] for r in rows(
            "SELECT DISTINCT rules_version FROM snap WHERE as_of = $as_of ORDER BY ALL", **now)],
        "tiers": rows("SELECT tier, tier_name FROM names ORDER BY tier DESC"),
        "distribution": rows(
            "SELECT as_of, tier, count(*) AS customers FROM snap GROUP BY ALL ORDER BY as_of, tier DESC"),
        "migration": migration,
        "reasons": rows(
            "SELECT reason, CASE WHEN previous_tier IS NULL THEN 'new' WHEN tier > previous_tier THEN 'up' "
            "WHEN tier < previous_tier THEN 'down' ELSE 'same' END AS direction, count(*) AS customers "
            "FROM snap WHERE as_of = $as_of GROUP BY ALL ORDER BY reason, direction", **now),
        "at_risk": rows(
            "SELECT tier, count(*) FILTER (WHERE at_risk) AS at_risk, count(*) AS customers, "
            "min(next_review) FILTER (WHERE at_risk) AS next_review "
            "FROM snap WHERE as_of = $as_of GROUP BY tier ORDER BY tier DESC", **now),
        # Earned as tier_decisions.sql earns it (computed tier or floor). Highest tiers first (the most to
        # lose), then the closest to falling.
        "at_risk_listed": rows(
            "SELECT s.customer_id, s.tier, s.tier_name, s.earned_tier, e.tier_name AS earned_name, "
            "s.points, s.reason, s.failed_reviews, s.buffer_since, s.next_review "
            "FROM (SELECT *, greatest(computed_tier, COALESCE(floor_tier, 0)) AS earned_tier FROM snap "
            "      WHERE as_of = $as_of AND at_risk) AS s "
            "LEFT JOIN names AS e ON e.tier = s.earned_tier "
            "ORDER BY s.tier DESC, s.failed_reviews DESC, s.customer_id LIMIT $n", n=AT_RISK_LISTED, **now),
        "points": points or None,  # None: the program scores no points
    }


def render(data: dict) -> str:
    names = {t["tier"]: f"{t['tier']} {t['tier_name']}" for t in data["tiers"]}
    sections = [_distribution(data, names), _migration(data, names), _reasons(data), _at_risk(data, names),
                _points(data, names)]
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data, sections=sections, plotly_js=PLOTLY_BUNDLE.read_text(encoding="utf-8"),
        report_data=htmlsafe_json_dumps(data, default=_text, ensure_ascii=False),
    )


def _distribution(data: dict, names: dict) -> dict:
    months = sorted({row["as_of"] for row in data["distribution"]})
    count = {(row["as_of"], row["tier"]): row["customers"] for row in data["distribution"]}
    labels = [str(Month.of(m)) for m in months]
    fig = go.Figure([go.Bar(name=name, x=labels, y=[count.get((m, tier), 0) for m in months])
                     for tier, name in names.items()])
    # Categories, not dates: a bar per published month-end, labelled as the month it is.
    fig.update_layout(barmode="stack", xaxis_type="category", xaxis_title="month-end", yaxis_title="customers",
                      legend_title="tier")
    rows = [[label, *(count.get((m, t), 0) for t in names), sum(count.get((m, t), 0) for t in names)]
            for m, label in zip(months, labels)]
    return _section("distribution", "Customers per tier, month by month", fig,
                    tables=[_table(["month", *names.values(), "all"], rows)])


def _migration(data: dict, names: dict) -> dict:
    title = "Migration from last month's tier"
    if data["migration"] is None:
        before = Month.parse(data["month"]).plus(-1)
        return _section("migration", title, note=f"{data['program']} has no snapshot for {before}: "
                        "there is no previous tier to migrate from.")
    count = {(row["from_tier"], row["to_tier"]): row["customers"] for row in data["migration"]}
    joined, left = any(f is None for f, _ in count), any(t is None for _, t in count)
    sources = ([None] if joined else []) + list(names)
    targets = list(names) + ([None] if left else [])
    source_names = [names.get(t, "joined this month") for t in sources]
    target_names = [names.get(t, "left this month") for t in targets]
    z = [[count.get((f, t), 0) for t in targets] for f in sources]
    fig = go.Figure(go.Heatmap(z=z, x=target_names, y=source_names, colorscale="Blues", texttemplate="%{z}",
                               hovertemplate="%{y} → %{x}: %{z}<extra></extra>", showscale=False))
    fig.update_layout(xaxis_title=f"tier at {data['month']}", xaxis_side="top",
                      yaxis_title=f"tier at {data['previous_month']}", yaxis_autorange="reversed")
    rows = [[name, *cells, sum(cells)] for name, cells in zip(source_names, z)]
    return _section("migration", f"{title} ({data['previous_month']} → {data['month']})", fig,
                    tables=[_table(["from \\ to", *target_names, "all"], rows)])


def _reasons(data: dict) -> dict:
    count = {(row["reason"], row["direction"]): row["customers"] for row in data["reasons"]}
    reasons = REASONS + sorted({r for r, _ in count} - set(REASONS))
    fig = go.Figure([go.Bar(name=label, y=reasons, x=[count.get((r, d), 0) for r in reasons], orientation="h",
                            marker_color=colour) for d, (label, colour) in DIRECTIONS.items()])
    fig.update_layout(barmode="stack", xaxis_title="customers", yaxis_autorange="reversed",
                      legend_title="tier vs last month")
    rows = [[r, *(count.get((r, d), 0) for d in DIRECTIONS), sum(count.get((r, d), 0) for d in DIRECTIONS)]
            for r in reasons]
    return _section("reasons", f"Upgrades and downgrades by reason, {data['month']}", fig,
                    tables=[_table(["reason", *(label for label, _ in DIRECTIONS.values()), "all"], rows)])


def _at_risk(data: dict, names: dict) -> dict:
    by_tier = data["at_risk"]
    fig = go.Figure(go.Bar(x=[names[r["tier"]] for r in by_tier], y=[r["at_risk"] for r in by_tier],
                           marker_color=DIRECTIONS["down"][1]))
    fig.update_layout(xaxis_title="tier", yaxis_title="customers at risk")
    listed = data["at_risk_listed"]
    with_points = data["points"] is not None
    columns = ["customer", "tier", "earns now", *(["points"] if with_points else []), "reason",
               "failed reviews", "buffer since", "next review"]
    rows = [[r["customer_id"], names[r["tier"]], f"{r['earned_tier']} {r['earned_name'] or ''}".strip(),
             *([r["points"]] if with_points else []), r["reason"], r["failed_reviews"], r["buffer_since"] or "",
             r["next_review"]] for r in listed]
    total = sum(r["at_risk"] for r in by_tier)
    shown = f"the first {len(listed)} of {total}" if total > len(listed) else f"all {total}"
    return _section(
        "at_risk", "Customers at risk at the next review", fig,
        note="At risk: the tier held is above the tier the month's figures and floors earn. Unless that "
             "changes, the next review is a failed one: a fall, or one more review used up in the buffer.",
        tables=[_table(["tier", "at risk", "customers", "next review"],
                       [[names[r["tier"]], r["at_risk"], r["customers"], r["next_review"] or ""] for r in by_tier]),
                _table(columns, rows, caption=f"At-risk customers, {shown}, highest tier first")],
    )


def _points(data: dict, names: dict) -> dict:
    title = f"Points by tier, {data['month']}"
    if data["points"] is None:
        return _section("points", title, note=f"{data['program']} scores no points: its tiers come from its figures.")
    stats = data["points"]
    # The box is drawn from DuckDB's quartiles, so the page carries five numbers a tier, not every customer.
    fig = go.Figure(go.Box(x=[names[r["tier"]] for r in stats], q1=[float(r["q1"]) for r in stats],
                           median=[float(r["median"]) for r in stats], q3=[float(r["q3"]) for r in stats],
                           lowerfence=[float(r["min"]) for r in stats], upperfence=[float(r["max"]) for r in stats],
                           name="points"))
    fig.update_layout(xaxis_title="tier", yaxis_title="points", yaxis_type="log" if _wide(stats) else "linear")
    columns = ["customers", "min", "q1", "median", "q3", "max"]
    return _section("points", title, fig, tables=[_table(
        ["tier", *columns], [[names[r["tier"]], *(r[c] for c in columns)] for r in stats])])


def _wide(stats: list[dict]) -> bool:
    """Tier thresholds grow geometrically (50, 500, 2,000, ...): a log axis when every value allows one."""
    low, high = min(r["min"] for r in stats), max(r["max"] for r in stats)
    return low > 0 and high / low > 100


def _section(key: str, title: str, fig: go.Figure | None = None, note: str = "", tables: list | None = None) -> dict:
    chart = None
    if fig is not None:
        fig.update_layout(template="plotly_white", height=380, margin={"t": 50})
        chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}", config=_CONFIG,
                            default_height="380px")
    return {"key": key, "title": title, "note": note, "chart": chart, "tables": tables or []}


def _table(columns: list[str], rows: list[list], caption: str = "") -> dict:
    return {"columns": columns, "rows": rows, "caption": caption}


def _text(value: object) -> str:
    """JSON for what json cannot spell: dates as ISO text, decimals exactly as stored (never a float)."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _spans(months: list[Month]) -> str:
    """Published months as runs, e.g. ``2024-12..2026-06, 2026-09``: a long history stays one line."""
    runs: list[list[Month]] = []
    for month in months:
        if runs and runs[-1][1].plus(1) == month:
            runs[-1][1] = month
        else:
            runs.append([month, month])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs) or "none"


def _write(store: Warehouse, target: Path, html: str) -> Path:
    """Staged as a hidden file beside its target, then renamed: a reader never sees half a report, and
    the report writes under reports/ only (the staging folder is the writing run's)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".report-{uuid.uuid4().hex}.html.tmp"
    try:
        staged.write_text(html, encoding="utf-8")
        publish(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target
