"""The HTML report of a program's month-end: one self-contained file, <warehouse>/reports/<program>/<YYYY-MM>.html.

It opens from disk with no server and no network: plotly.js is inlined once, and no font, style or script
is fetched. The inlined plotly.js is the "cartesian" partial bundle (bar, box, heatmap, scatter: all the
report draws), 1.5 MB instead of the full 4.8 MB that the plotly package ships; it is vendored under
templates/ from the npm package plotly.js-cartesian-dist-min of the same plotly.js version as the plotly
package's own bundle (tests/test_html_report.py checks the two versions agree).

Every number is a DuckDB aggregate over the published snapshots (never a Python loop over customers).
Each chart repeats its numbers as a plain HTML table, so the report reads without JavaScript, and all of
them sit in the JSON block ``report-data``, so tests and scripts can check them. The charts keep small
counts in sight (docs/decisions.md, Report): a fixed colour per tier number, a log axis wherever one count
dwarfs the rest, a points panel per tier, movers in their own colours in the migration matrix, and a
sentence where a chart would have nothing to draw.
"""

from __future__ import annotations

import math
import uuid
from datetime import date
from pathlib import Path

import duckdb
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.utils import htmlsafe_json_dumps

from ground.errors import TiersError
from rules import states
from rules.states import REASONS
from ground.months import Month
from ground.paths import duckdb_path
from interfaces.equity import report_data as equity_report_data
from stores.snapshots import publish, published_months, published_programs, snapshot_path
from stores.warehouse import Warehouse

# The tier against last month's (tier_move below), with a fixed colour each so the meaning survives any
# palette change. Every reason of REASONS is shown, so a 0 reads as "none".
DIRECTIONS = {"up": ("upgraded", "#2ca02c"), "down": ("downgraded", "#d62728"),
              "same": ("unchanged", "#9da5ae"), "new": ("first rated", "#1f77b4")}
# A tier's colour, by the tier's number in its rule file (the snapshot's `tier`), so that a tier keeps its
# colour in every report of its program whichever tiers a month holds: 0 (unrated, ordinary) a neutral
# grey, then light to strong hues going up. Rule files allow tiers up to 99; past 11 the list wraps.
TIER_COLOURS = ["#b8c0c8", "#9ecae1", "#3182bd", "#74c476", "#238b45", "#fdae6b", "#e6550d", "#a50f15",
                "#9e9ac8", "#54278f", "#8c6d31", "#252525"]
# The migration matrix: each kind of move in its own hue, light to strong with the log of its count.
MOVE_SHADES = {"same": ("#eceef1", "#9aa3ad"), "up": ("#c7e9c0", "#238b45"), "down": ("#fcbba1", "#cb181d"),
               "new": ("#c6dbef", "#2171b5")}
# A chart takes a log axis when its largest count is more than DWARF times its smallest non-zero one.
DWARF = 10
_LOG_TICKS = {"dtick": "D2"}  # a log axis labels 1, 2 and 5 of each power of ten, not every digit
AT_RISK_LISTED = 50
_CONFIG = {"displaylogo": False, "responsive": True}
# A customer's tier against last month's: joined or left (no tier on one side) is "new".
_TIER_MOVE = """
CREATE TEMP MACRO tier_move(from_tier, to_tier) AS CASE
    WHEN from_tier IS NULL OR to_tier IS NULL THEN 'new'
    WHEN to_tier > from_tier THEN 'up' WHEN to_tier < from_tier THEN 'down' ELSE 'same' END
"""
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
    states.define(con)
    con.execute(_TIER_MOVE)
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
            "SELECT p.tier AS from_tier, c.tier AS to_tier, tier_move(p.tier, c.tier) AS move, "
            "count(*) AS customers "
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
            "SELECT reason, tier_move(previous_tier, tier) AS direction, count(*) AS customers "
            "FROM snap WHERE as_of = $as_of GROUP BY ALL ORDER BY reason, direction", **now),
        "at_risk": rows(
            "SELECT tier, count(*) FILTER (WHERE at_risk) AS at_risk, count(*) AS customers, "
            "min(next_review) FILTER (WHERE at_risk) AS next_review "
            "FROM snap WHERE as_of = $as_of GROUP BY tier ORDER BY tier DESC", **now),
        # Earned as tier_decisions.sql earns it (rules/states.py). Highest tiers first (the most to lose),
        # then the closest to falling.
        "at_risk_listed": rows(
            "SELECT s.customer_id, s.tier, s.tier_name, s.earned_tier, e.tier_name AS earned_name, "
            "s.points, s.reason, s.failed_reviews, s.buffer_since, s.next_review "
            "FROM (SELECT *, earned_tier(computed_tier, floor_tier) AS earned_tier FROM snap "
            "      WHERE as_of = $as_of AND at_risk) AS s "
            "LEFT JOIN names AS e ON e.tier = s.earned_tier "
            "ORDER BY s.tier DESC, s.failed_reviews DESC, s.customer_id LIMIT $n", n=AT_RISK_LISTED, **now),
        "points": points or None,  # None: the program scores no points
        "equity": equity_report_data(store, program, month),  # None: tiers equity not run for this month
    }


def render(data: dict) -> str:
    names = {t["tier"]: f"{t['tier']} {t['tier_name']}" for t in data["tiers"]}
    sections = [_distribution(data, names), _migration(data, names), _reasons(data), _at_risk(data, names),
                _points(data, names), _equity(data, names)]
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data, sections=sections, plotly_js=PLOTLY_BUNDLE.read_text(encoding="utf-8"),
        report_data=htmlsafe_json_dumps(data, default=_text, ensure_ascii=False),
    )


def tier_colour(tier: int) -> str:
    """A tier's colour in every chart of every report: by its number, never by its place among the tiers
    a month happens to hold (see TIER_COLOURS)."""
    return TIER_COLOURS[tier % len(TIER_COLOURS)]


def dwarfed(values) -> bool:
    """Whether a linear axis would flatten the small counts: the largest is over DWARF times the smallest
    non-zero one. Then the chart takes a log axis and prints each count on its bar or cell."""
    positive = [float(v) for v in values if v is not None and v > 0]
    return len(positive) > 1 and max(positive) > DWARF * min(positive)


def _distribution(data: dict, names: dict) -> dict:
    months = sorted({row["as_of"] for row in data["distribution"]})
    count = {(row["as_of"], row["tier"]): row["customers"] for row in data["distribution"]}
    labels = [str(Month.of(m)) for m in months]
    if dwarfed(count.values()):
        # A line per tier on a log axis: each tier reads at its own size, where a stack would let the
        # largest tier flatten every other. A month without the tier is 0, off a log axis (see the table).
        fig = go.Figure([go.Scatter(name=name, x=labels, y=[count.get((m, tier), 0) for m in months],
                                    mode="lines+markers", line_color=tier_colour(tier),
                                    marker={"color": tier_colour(tier), "size": 7},
                                    hovertemplate=f"{name}<br>%{{x}}: %{{y:,}} customers<extra></extra>")
                         for tier, name in names.items()])
        fig.update_layout(yaxis_type="log", yaxis_title="customers (log scale)", yaxis=_LOG_TICKS)
    else:
        fig = go.Figure([go.Bar(name=name, x=labels, y=[count.get((m, tier), 0) for m in months],
                                marker_color=tier_colour(tier),
                                hovertemplate=f"{name}<br>%{{x}}: %{{y:,}} customers<extra></extra>")
                         for tier, name in names.items()])
        fig.update_layout(barmode="stack", yaxis_title="customers")
    # Categories, not dates: a point or bar per published month-end, labelled as the month it is.
    fig.update_layout(xaxis_type="category", xaxis_title="month-end", legend_title="tier")
    rows = [[label, *(count.get((m, t), 0) for t in names), sum(count.get((m, t), 0) for t in names)]
            for m, label in zip(months, labels)]
    return _section("distribution", "Customers per tier, month by month", fig,
                    tables=[_table(["month", *names.values(), "all"], rows)])


def movers(migration: list[dict]) -> dict[str, int]:
    """Customers who moved up, moved down, kept their tier, joined and left, from the migration rows."""
    total = {"up": 0, "down": 0, "same": 0, "joined": 0, "left": 0}
    for row in migration:
        f, t = row["from_tier"], row["to_tier"]
        key = "joined" if f is None else "left" if t is None else row["move"]
        total[key] += row["customers"]
    return total


def _migration(data: dict, names: dict) -> dict:
    title = "Migration from last month's tier"
    if data["migration"] is None:
        before = Month.parse(data["month"]).plus(-1)
        return _section("migration", title, note=f"{data['program']} has no snapshot for {before}: "
                        "there is no previous tier to migrate from.")
    count = {(row["from_tier"], row["to_tier"]): row["customers"] for row in data["migration"]}
    move = {(row["from_tier"], row["to_tier"]): row["move"] for row in data["migration"]}
    joined, left = any(f is None for f, _ in count), any(t is None for _, t in count)
    sources = ([None] if joined else []) + list(names)
    targets = list(names) + ([None] if left else [])
    source_names = [names.get(t, "joined this month") for t in sources]
    target_names = [names.get(t, "left this month") for t in targets]
    z = [[count.get((f, t), 0) for t in targets] for f in sources]
    # One layer per kind of move, each in its own hue (movers green and red, stayers grey), its shade the
    # log of the count on a scale shared by all layers: a cell of 3 movers shows beside a diagonal of
    # 9,000, and every non-zero cell prints its count.
    top = math.log10(max(max(row) for row in z)) + 1
    fig = go.Figure()
    for kind, (low, high) in MOVE_SHADES.items():
        shade = [[math.log10(n) + 1 if n and move[f, t] == kind else None for t, n in zip(targets, cells)]
                 for f, cells in zip(sources, z)]
        if any(v is not None for row in shade for v in row):
            fig.add_trace(go.Heatmap(
                z=shade, x=target_names, y=source_names, zmin=0, zmax=top, colorscale=[[0, low], [1, high]],
                text=[[f"{n:,}" if v is not None else "" for n, v in zip(cells, row)] for cells, row in zip(z, shade)],
                texttemplate="%{text}", hovertemplate="%{y} → %{x}: %{text} customers<extra></extra>",
                showscale=False, xgap=2, ygap=2, hoverongaps=False))
    fig.update_layout(xaxis_title=f"tier at {data['month']}", xaxis_side="top",
                      yaxis_title=f"tier at {data['previous_month']}", yaxis_autorange="reversed",
                      height=max(260, 110 + 36 * len(sources)), plot_bgcolor="#f7f8fa", margin_b=20)
    moved = movers(data["migration"])
    note = (f"{moved['up']:,} customers moved up (green, left of the diagonal), {moved['down']:,} moved down "
            f"(red, right of it) and {moved['same']:,} kept their tier (grey, on it)")
    extra = [f"{moved[k]:,} {verb}" for k, verb in (("joined", "joined"), ("left", "left")) if moved[k]]
    note += (f"; {' and '.join(extra)} (blue)." if extra else ".") + " Empty cells: no customer."
    rows = [[name, *cells, sum(cells)] for name, cells in zip(source_names, z)]
    return _section("migration", f"{title} ({data['previous_month']} → {data['month']})", fig, note=note,
                    tables=[_table(["from \\ to", *target_names, "all"], rows)])


def _reasons(data: dict) -> dict:
    count = {(row["reason"], row["direction"]): row["customers"] for row in data["reasons"]}
    reasons = [*REASONS, *sorted({r for r, _ in count} - set(REASONS))]
    rows = [[r, *(count.get((r, d), 0) for d in DIRECTIONS), sum(count.get((r, d), 0) for d in DIRECTIONS)]
            for r in reasons]
    columns = ["reason", *(label for label, _ in DIRECTIONS.values()), "all"]
    title = f"Upgrades and downgrades by reason, {data['month']}"
    # A bar per reason and direction that has customers, so a reason that went both ways shows both.
    bars = [(r, d, count[r, d]) for r in reasons for d in DIRECTIONS if count.get((r, d))]
    if not bars:
        return _section("reasons", title, note=f"{data['program']} has no customer at {data['month']}.",
                        tables=[_table(columns, rows)])
    both = {r for r, _, _ in bars if sum(1 for x, _, _ in bars if x == r) > 1}

    def label(reason: str, direction: str) -> str:
        return f"{reason} ({DIRECTIONS[direction][0]})" if reason in both else reason

    log = dwarfed(n for _, _, n in bars)
    fig = go.Figure([go.Bar(name=name, y=[label(r, d) for r, d, _ in bars if d == key],
                            x=[n for _, d, n in bars if d == key], orientation="h", marker_color=colour,
                            text=[f"{n:,}" for _, d, n in bars if d == key], textposition="outside",
                            cliponaxis=False, hovertemplate="%{y}: %{x:,} customers<extra></extra>")
                     for key, (name, colour) in DIRECTIONS.items() if any(d == key for _, d, _ in bars)])
    fig.update_layout(barmode="overlay", xaxis_title="customers (log scale)" if log else "customers",
                      xaxis_type="log" if log else "linear", xaxis=_LOG_TICKS if log else {},
                      legend_title="tier vs last month",
                      yaxis_categoryorder="array", yaxis_categoryarray=[label(r, d) for r, d, _ in bars],
                      yaxis_autorange="reversed", height=max(260, 110 + 34 * len(bars)), margin_r=60)
    unused = [r for r in reasons if not any(count.get((r, d)) for d in DIRECTIONS)]
    note = f"No customer this month for: {', '.join(unused)}." if unused else ""
    return _section("reasons", title, fig, note=note, tables=[_table(columns, rows)])


def _at_risk(data: dict, names: dict) -> dict:
    by_tier = data["at_risk"]
    listed = data["at_risk_listed"]
    total = sum(r["at_risk"] for r in by_tier)
    title = "Customers at risk at the next review"
    explained = ("At risk: the tier held is above the tier the month's figures and floors earn. Unless that "
                 "changes, the next review is a failed one: a fall, or one more review used up in the buffer.")
    if not total:
        return _section("at_risk", title, note=f"No customer of {data['program']} is at risk at {data['month']}. "
                        + explained)
    held = [r for r in by_tier if r["at_risk"]]
    log = dwarfed(r["at_risk"] for r in held)
    fig = go.Figure(go.Bar(x=[names[r["tier"]] for r in held], y=[r["at_risk"] for r in held],
                           marker_color=[tier_colour(r["tier"]) for r in held],
                           text=[f"{r['at_risk']:,}" for r in held], textposition="outside", cliponaxis=False,
                           hovertemplate="%{x}: %{y:,} at risk<extra></extra>"))
    fig.update_layout(xaxis_title="tier held", xaxis_type="category",
                      yaxis_title="customers at risk (log scale)" if log else "customers at risk",
                      yaxis_type="log" if log else "linear", yaxis=_LOG_TICKS if log else {})
    with_points = data["points"] is not None
    columns = ["customer", "tier", "earns now", *(["points"] if with_points else []), "reason",
               "failed reviews", "buffer since", "next review"]
    rows = [[r["customer_id"], names[r["tier"]], f"{r['earned_tier']} {r['earned_name'] or ''}".strip(),
             *([r["points"]] if with_points else []), r["reason"], r["failed_reviews"], r["buffer_since"] or "",
             r["next_review"]] for r in listed]
    shown = f"the first {len(listed)} of {total}" if total > len(listed) else f"all {total}"
    none = [names[r["tier"]] for r in by_tier if not r["at_risk"]]
    return _section(
        "at_risk", title, fig,
        note=explained + (f" No customer at risk in: {', '.join(none)}." if none else ""),
        tables=[_table(["tier", "at risk", "customers", "next review"],
                       [[names[r["tier"]], r["at_risk"], r["customers"], r["next_review"] or ""] for r in by_tier]),
                _table(columns, rows, caption=f"At-risk customers, {shown}, highest tier first")],
    )


def _points(data: dict, names: dict) -> dict:
    title = f"Points by tier, {data['month']}"
    if data["points"] is None:
        return _section("points", title, note=f"{data['program']} scores no points: its tiers come from its figures.")
    stats = data["points"]
    # A panel per tier, each with its own points axis: the top tier's millions no longer flatten the
    # lower tiers' hundreds. A panel whose top is over DWARF times its lower quartile is log, or its few
    # largest customers would squeeze the box to a line; a minimum of 0 then runs its whisker off the left.
    # The box is drawn from DuckDB's quartiles, so the page carries five numbers a tier, not every customer.
    fig = make_subplots(rows=len(stats), cols=1, vertical_spacing=min(0.5 / len(stats), 0.08))
    for row, r in enumerate(stats, start=1):
        five = {k: float(r[k]) for k in ("min", "q1", "median", "q3", "max")}
        log = five["q1"] > 0 and dwarfed([five["q1"], five["max"]])
        label = names[r["tier"]] + (" (log)" if log else "")
        fig.add_trace(go.Box(y=[label], q1=[five["q1"]], median=[five["median"]], q3=[five["q3"]],
                             lowerfence=[five["min"]], upperfence=[five["max"]], orientation="h",
                             name=names[r["tier"]], marker_color=tier_colour(r["tier"]),
                             fillcolor=tier_colour(r["tier"]), line_color="#3a434c", line_width=1.2,
                             showlegend=False), row=row, col=1)
        # A log axis spans the positive values (plotly cannot place 0 on it): from the smallest, or from
        # half the lower quartile when the minimum is 0, to the maximum.
        if log:
            low = five["min"] if five["min"] > 0 else five["q1"] / 2
            fig.update_xaxes(type="log", range=[math.log10(low) - 0.1, math.log10(five["max"]) + 0.1],
                             row=row, col=1, **_LOG_TICKS)
    fig.update_xaxes(title_text="points", row=len(stats), col=1)
    fig.update_layout(height=110 + 78 * len(stats), margin_t=30)
    columns = ["customers", "min", "q1", "median", "q3", "max"]
    note = "Each tier has its own points scale; “(log)” marks a scale in powers of ten."
    if any(float(r["min"]) <= 0 < float(r["q1"]) and dwarfed([r["q1"], r["max"]]) for r in stats):
        note += " On a log scale, a whisker that runs off the left edge goes down to 0 points or below."
    return _section("points", title, fig, note=note,
                    tables=[_table(["tier", *columns], [[names[r["tier"]], *(r[c] for c in columns)] for r in stats])])


def _equity(data: dict, names: dict) -> dict:
    """Customer equity by tier and the tier migration matrix P, as `tiers equity` published them."""
    title = f"Customer equity by tier, {data['month']}"
    equity = data["equity"]
    if equity is None:
        return _section("equity", title, note=f"No customer equity is published for {data['program']} at "
                        f"{data['month']}: run tiers equity --month {data['month']} --program {data['program']}, "
                        "then this report again.")
    tiers, summary = equity["tiers"], equity["summary"]
    label = {**names, **{r["tier"]: f"{r['tier']} {r['tier_name']}" for r in tiers}}
    states = [(r["from_tier"], r["from_state"]) for r in equity["migration"] if r["to_state"] == "left"]
    state_names = [label.get(tier, name) if tier is not None else name for tier, name in states]
    cell = {(r["from_state"], r["to_state"]): r for r in equity["migration"]}
    # The left row (absorbing) says nothing: only the tiers' rows are drawn.
    rows = [(tier, name) for tier, name in states if tier is not None]
    z = [[cell[(name, to)]["probability"] for _, to in states] for _, name in rows]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.14,
                        subplot_titles=["equity (CNY)", "monthly migration P: row at t, column at t+1"])
    if any(r["equity"] for r in tiers):  # every figure without a rate: no bar to draw (the note says why)
        fig.add_trace(go.Bar(x=[label[r["tier"]] for r in tiers], y=[r["equity"] for r in tiers],
                             marker_color=[tier_colour(r["tier"]) for r in tiers], showlegend=False,
                             text=[f"{r['equity']:,.0f}" for r in tiers], textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{y:,.0f} CNY<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=z, x=state_names, y=[state_names[states.index(r)] for r in rows], zmin=0, zmax=1,
                             colorscale=[[0, "#f7fbff"], [1, "#08519c"]], showscale=False, xgap=2, ygap=2,
                             text=[[f"{p:.0%}" if p else "" for p in row] for row in z], texttemplate="%{text}",
                             hovertemplate="%{y} → %{x}: %{z:.1%}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(type="category", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_layout(height=max(320, 120 + 36 * len(rows)))
    money = lambda value: f"{value:,.0f}"  # noqa: E731 - CNY, rounded for reading (the Parquet keeps the rest)
    note = (f"Customer equity {money(summary['customer_equity'])} CNY = value equity {money(summary['value_equity'])} "
            f"(each customer staying as they are) + retention equity {money(summary['retention_equity'])} (what tier "
            f"moves and departures add or take away), over {summary['horizon_months']} months at "
            f"{summary['discount_rate']:.2%} a year; moves counted over {summary['month_pairs']} month pairs. "
            f"An estimate, not a tier decision; {summary['brand_equity_note']}.")
    if summary["figures_without_rate"]:
        note += f" No rate, counted as 0: {', '.join(summary['figures_without_rate'])}."
    by_tier = _table(["tier", "customers", "margin / month", "CLV / customer", "equity", "share"],
                     [[label[r["tier"]], r["customers"], round(r["mean_margin"], 2), round(r["clv"]), round(r["equity"]),
                       "-" if r["share"] is None else f"{r['share']:.1%}"] for r in tiers])
    matrix = _table(["from \\ to", *state_names],
                    [[state_names[states.index(r)], *(f"{p:.1%}" for p in row)] for r, row in zip(rows, z)],
                    caption="Monthly tier migration P (each row sums to 100%)")
    return _section("equity", title, fig, note=note, tables=[by_tier, matrix])


def _section(key: str, title: str, fig: go.Figure | None = None, note: str = "", tables: list | None = None) -> dict:
    chart = None
    if fig is not None:
        height = fig.layout.height or 380
        fig.update_layout(template="plotly_white", height=height, margin={"t": fig.layout.margin.t or 50})
        chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}", config=_CONFIG,
                            default_height=f"{height}px")
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
