"""Why a customer has the tier they have: ``tiers explain CUSTOMER --month YYYY-MM``.

Everything is read back from what the run published, never recomputed from raw data: the snapshot row
(figures ``fig_*``, points ``pts_*``, computed / floor / capped and the state-machine columns), the
manifest beside it (which rule file) and the rule file itself (bands, rates, floors, caps, calendar).
The state machine's terms (the earned tier, when a tier falls) are rules/states.py's macros, evaluated
on the row's own columns; whether a band's condition holds uses the rules' one comparison
(rules/compile.py, ``meets``).
Never the warehouse's DuckDB file: a reader must not block or break a writing run (data-contract.md
section 3), so the floor and the cap are the snapshot's ``floor_tier`` and ``capped``, and the rule
file says which products give that floor and which credit events cap. The snapshot is the authority:
the explanation describes its decision, it does not re-decide.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb

from rules import states
from rules.compile import meets
from rules.loader import LoadedProgram, default_rules_dir, load_program
from rules.schema import BalanceFigure, Condition, LatestFigure, LedgerFigure, Program, TierBand
from stores import snapshots
from ground.errors import TiersError
from ground.months import Month, window
from ground.paths import duckdb_path
from stores.warehouse import Warehouse

CENT = Decimal("0.01")
_WORDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}


# -- numbers as people read them ------------------------------------------------------------------

def _amount(value: Decimal) -> str:
    return f"{value:,.2f}"


def _bound(value: Decimal) -> str:
    return f"{int(value):,}" if value == value.to_integral_value() else f"{value.normalize():,f}"


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _outcomes(value: Decimal, bound: Decimal) -> set[int]:
    """What comparing the exact value with ``bound`` may give (-1 below, 0 equal, 1 above), knowing only
    its cut: the exact value lies in [value, value + 0.01)."""
    low, high = value, value + CENT
    return {outcome for outcome, possible in ((-1, low < bound), (0, low <= bound < high), (1, high > bound))
            if possible}


# -- reading what the run published ----------------------------------------------------------------

def _snapshot_row(con: duckdb.DuckDBPyConnection, path: Path, customer_id: str) -> dict | None:
    """The customer's row, with the tier it earned (``earned_tier``, rules/states.py) read off its columns."""
    # duckdb_path: DuckDB globs the path even as a parameter; a warehouse wh[1] must not read wh1.
    cursor = con.execute("SELECT *, earned_tier(computed_tier, floor_tier) AS earned_tier "
                         "FROM read_parquet($path) WHERE customer_id = $id",
                         {"path": duckdb_path(path), "id": customer_id})
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def _rule_file(warehouse: Warehouse, program: str, month: Month) -> tuple[LoadedProgram, dict]:
    """The rule file as it is now: the one the manifest names (a what-if scratch warehouse names its own
    copy), else <program>.yaml in the rules folder in force (--rules-dir, TIERS_RULES_DIR)."""
    manifest_file = snapshots.manifest_path(warehouse, program, month)
    manifest = json.loads(manifest_file.read_text(encoding="utf-8")) if manifest_file.is_file() else {}
    candidates = [Path(manifest["rules_file"])] if manifest.get("rules_file") else []
    candidates.append(default_rules_dir() / f"{program}.yaml")
    for path in candidates:
        if path.is_file():
            return load_program(path), manifest
    raise TiersError(f"no rule file for {program}: looked for {', '.join(map(str, candidates))}")


# -- the parts of an explanation -------------------------------------------------------------------

def _unit(rules: Program, measure: str) -> str:
    """What a measure is counted in: CNY, the currency a figure is valued in, points, or nothing (a score)."""
    figure = rules.figures.get(measure)
    if measure == "points" or isinstance(figure, LedgerFigure):
        return "points"
    if isinstance(figure, LatestFigure):
        return ""
    return figure.valued_in if isinstance(figure, BalanceFigure) else "CNY"


def _figures(rules: Program, row: dict, month: Month) -> list[dict]:
    figures = []
    for name, figure in rules.figures.items():
        months = window(month, getattr(figure, "window_months", 1))
        span = str(month) if len(months) == 1 else f"{months[0]}..{months[-1]}"
        if isinstance(figure, LedgerFigure):
            codes, basis = [], f"sum of {figure.source} over {span}"
        elif isinstance(figure, LatestFigure):
            codes, basis = [], f"latest of {figure.source} on or before {month.last_day.isoformat()} (none: unknown)"
        elif isinstance(figure, BalanceFigure):
            codes = figure.product_codes
            if figure.basis == "month_end":
                basis = f"month-end balance on {month.last_day.isoformat()}"
            else:
                basis = f"average daily balance over {span} ({sum(m.days for m in months)} days)"
            if figure.minus_product_codes:
                basis += f", minus {', '.join(figure.minus_product_codes)} day by day"
            if figure.risk_classes:
                basis += f", {'/'.join(figure.risk_classes)} loans only"
            if figure.foreign_currency_only:
                basis += ", foreign-currency rows only"
            if figure.valued_in != "CNY":
                basis += f", in {figure.valued_in} at its rate in force on {month.last_day.isoformat()}"
        else:
            codes = figure.txn_types
            basis = f"counted amount over {span}"
            details = []
            if figure.cap_per_transaction is not None:
                details.append(f"each transaction capped at {_amount(figure.cap_per_transaction)}")
            if figure.apply_fee_factor:
                details.append("times its fee factor")
            if figure.exclude.single_amount_above is not None:
                details.append(f"single amounts above {_amount(figure.exclude.single_amount_above)} left out")
            if figure.exclude.merchant_categories:
                details.append(f"{len(figure.exclude.merchant_categories)} zero-rate merchant categories left out")
            if details:
                basis += f" ({', '.join(details)})"
        value = row.get(f"fig_{name}")
        entry = {"name": name, "basis": basis, "codes": list(codes), "value": None if value is None else str(value),
                 "unit": _unit(rules, name)}
        if rules.points and name in rules.points.rates:
            points = row.get(f"pts_{name}")
            entry["rate"] = f"{_bound(rules.points.rates[name])} per {_bound(rules.points.per_amount)} CNY"
            entry["points"] = None if points is None else str(points)
        figures.append(entry)
    return figures


def _measure(row: dict, measure: str) -> Decimal | None:
    return row.get("points") if measure == "points" else row.get(f"fig_{measure}")


def _figure_value(value: Decimal | None, unit: str) -> str:
    """A figure as shown: money to the cent; a ledger's count or a score as the integer it is."""
    if value is None:
        return "unknown"
    return f"{int(value):,}" if unit in ("points", "") else _amount(value)


def _value_text(measure: str, value: Decimal | None, unit: str = "CNY") -> str:
    shown = "unknown" if value is None else _amount(value) if measure == "points" else _figure_value(value, unit)
    if measure == "points":
        return f"{shown} points"
    return f"{measure.replace('_', ' ')} {shown}" + (f" {unit}" if unit else "")


def _condition(row: dict, condition: Condition, unit: str) -> dict:
    op, bound = condition.operator
    value = _measure(row, condition.measure)
    # A missing value meets no condition (as in tier_decisions.sql): shown as missed, value unknown.
    entry = {"measure": condition.measure, "unit": unit, "operator": op, "threshold": str(bound),
             "value": None if value is None else str(value),
             "met": False if value is None else meets(op, _outcomes(value, bound))}
    if value is not None and op in (">=", ">"):
        entry["short"] = str(max(bound - value, Decimal(0)))
    return entry


def _rule_text(band: TierBand) -> str:
    def one(c: Condition) -> str:
        op, bound = c.operator
        return f"{c.measure} {op} {_bound(bound)}"

    if band.any_of and len(band.any_of) > 1:
        return "any of: " + "; ".join(one(c) for c in band.any_of)
    if band.any_of:
        return one(band.any_of[0])
    if band.all_of:
        return " and ".join(one(c) for c in band.all_of)
    return "otherwise (fallback)"


def _bands(rules: Program, row: dict, warnings: list[str]) -> list[dict]:
    """Every band with its conditions met or missed, made consistent with the snapshot's computed tier:
    the shown figures are cut to the cent, so a condition within a cent of its bound is settled by the
    tier the exact comparison gave (met in the earned band, missed in the bands above it)."""
    computed = row["computed_tier"]
    bands = []
    for band in rules.tiers:
        groups = [[_condition(row, c, _unit(rules, c.measure)) for c in group] for group in band.condition_groups]
        if band.tier > computed:
            status = "missed"
            if any(all(c["met"] is True for c in group) for group in groups):
                warnings.append(f"the rule file's {band.name} band holds for these figures, "
                                f"yet the snapshot computed tier {computed}")
            for condition in (c for group in groups for c in group):
                condition["met"] = condition["met"] is True
        elif band.tier == computed:
            status = "earned"
            if groups and not any(all(c["met"] is True for c in group) for group in groups):
                possible = [g for g in groups if all(c["met"] is not False for c in g)]
                if not possible:
                    warnings.append(f"the rule file's {band.name} band does not hold for these figures, "
                                    "yet the snapshot computed it")
                for condition in possible[0] if possible else []:
                    condition["met"] = True
        else:
            status = "below earned"
        bands.append({"tier": band.tier, "name": band.name, "label": band.label, "rule": _rule_text(band),
                      "status": status, "groups": groups})
    if computed not in rules.tier_names:
        warnings.append(f"computed tier {computed} is not a band of the current rule file")
    return bands


def _gap_text(condition: dict) -> str:
    value = None if condition["value"] is None else Decimal(condition["value"])
    text = _value_text(condition["measure"], value, condition["unit"])
    bound = _bound(Decimal(condition["threshold"]))
    if condition["operator"] == ">=" and "short" in condition:
        return f"{text}, {_amount(Decimal(condition['short']))} short of {bound}"
    return f"{text}, needs {_WORDS[condition['operator']]} {bound}"


def _next_band_up(bands: list[dict], computed: int) -> dict | None:
    """The lowest band above the computed tier, and the easiest way into it: the group with the fewest
    missed conditions, then the smallest shortfall relative to its threshold."""
    above = [b for b in bands if b["tier"] > computed]
    if not above:
        return None
    band = above[-1]

    def effort(group: list[dict]) -> tuple:
        missed = [c for c in group if not c["met"]]
        relative = sum(Decimal(c.get("short", "0")) / max(Decimal(c["threshold"]), CENT) for c in missed)
        return len(missed), relative

    missed = [c for c in min(band["groups"], key=effort) if not c["met"]]
    # Nothing missed only when the current rule file disagrees with the snapshot (already warned about).
    gap = " and ".join(_gap_text(c) for c in missed) or "its conditions hold under the current rule file"
    return {"tier": band["tier"], "name": band["name"], "missing": missed, "gap": f"{gap} for {band['name']}"}


def _figures_summary(bands: list[dict], computed: int, next_up: dict | None) -> str:
    """What the figures earn, in words: the conditions that won the computed band (those not already
    named in the gap) and what the next band up still needs."""
    earned = next((b for b in bands if b["tier"] == computed), None)
    gap_measures = {c["measure"] for c in next_up["missing"]} if next_up else set()
    won = []
    if earned and earned["groups"]:
        group = next((g for g in earned["groups"] if all(c["met"] for c in g)), [])
        won = [f"{_value_text(c['measure'], Decimal(c['value']), c['unit'])} {c['operator']} {_bound(Decimal(c['threshold']))}"
               for c in group if c["measure"] not in gap_measures and c["value"] is not None]
    parts = won + [next_up["gap"] if next_up else "the highest band"]
    return "; ".join(parts)


def _floor(rules: Program, row: dict) -> dict:
    """The snapshot's floor, and the products that give that tier under the rule file (one of them is
    held; which one the snapshot does not record)."""
    tier = row["floor_tier"]
    products = [] if tier is None else sorted(code for code, floor in rules.floors.items() if floor == tier)
    return {"tier": tier, "products": products}


def _cap(rules: Program, row: dict, warnings: list[str]) -> dict:
    """The snapshot's cap, and the credit events that cap under the rule file (one of them is active)."""
    events = list(rules.caps.events) if rules.caps and row["capped"] else []
    if row["capped"] and not rules.caps:
        warnings.append("the snapshot is capped, but the current rule file has no caps")
    return {"capped": row["capped"], "cap_tier": rules.caps.tier if rules.caps else None, "events": events}


def _buffer_clause(tier: str, failed: int, since: date | None, k: int, falls: bool, next_review: date) -> str:
    """Where a held tier stands in its buffer; ``failed`` already counts this month's review if any, and
    ``falls`` says whether the next failed review is the one it falls at."""
    so_far = (f"the {next_review} review would be its first failed one" if failed == 0
              else f"{_plural(failed, 'failed review')} since {since}")
    text = f"{so_far}, and a {tier} falls after {_plural(k, 'failed review')}"
    if falls:
        return f"{text}, so it falls at the {next_review} review unless it earns {tier} again"
    return text if failed == 0 else f"{text}; next review {next_review}"


def _decision(e: dict) -> str:
    """One sentence per reason (programs.md section 3)."""
    tier, prev, reason = e["tier_name"], e["previous_tier_name"], e["reason"]
    as_of, next_review = e["as_of"], e["next_review"]
    if e["earned_tier"] > e["computed_tier"]:  # only a floor lifts the earned tier above the figures'
        held = e["floor"]["products"]
        source = f"the {held[0]} floor" if len(held) == 1 else (
            f"a {_either(held)} floor" if held else "a held-product floor")
        earned = (f"earned {e['earned_tier_name']} through {source} "
                  f"(its figures earn {e['computed_tier_name']}: {e['figures_summary']})")
    else:
        earned = f"earned {e['earned_tier_name']} ({e['figures_summary']})"
    buffer = _buffer_clause(prev or tier, e["failed_reviews"], e["buffer_since"], e["falls_after_failed_reviews"],
                            e["falls_at_next_failed_review"], next_review)
    if reason == "initial":
        return f"First evaluation at {tier}: {earned}."
    if reason == "upgrade":
        return f"Upgraded from {prev} to {tier} at the {as_of} month-end: {earned}."
    if reason == "meets":
        return f"Stays {tier}: {earned}; next review {next_review}."
    if reason == "held_until_review":
        return f"Held at {tier} until the {next_review} review: {earned}; {buffer}."
    if reason == "buffer":
        return f"Kept {tier} in its buffer at the {as_of} review: {earned}; {buffer}."
    if reason == "downgrade":
        k = e["falls_after_failed_reviews"]
        return (f"Downgraded from {prev} to {tier} at the {as_of} review, a {prev} falling after "
                f"{_plural(k, 'failed review')}: {earned}.")
    if reason == "credit_cap":
        events = e["cap"]["events"]
        by = f"an active credit event ({_either(events)})" if events else "an active credit event"
        return (f"Capped at {tier} by {by}: {earned}; a cap has no buffer, and the tier climbs back at the "
                f"first month-end after the event is cured.")
    return f"{tier} ({reason}): {earned}."


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _explain(warehouse: Warehouse, program: str, month: Month, customer_id: str) -> dict:
    with duckdb.connect() as con:
        states.define(con)
        return _explain_on(con, warehouse, program, month, customer_id)


def _explain_on(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, program: str, month: Month,
                customer_id: str) -> dict:
    row = _snapshot_row(con, snapshots.snapshot_path(warehouse, program, month), customer_id)
    if row is None:
        raise TiersError(f"customer {customer_id!r} is not in the {program} snapshot for {month} in {warehouse.root}")
    loaded, manifest = _rule_file(warehouse, program, month)
    rules, as_of = loaded.rules, month.last_day
    warnings = []
    if loaded.version != row["rules_version"]:
        warnings.append(f"the rule file {loaded.path} is now {loaded.version}, but this snapshot was computed with "
                        f"{row['rules_version']}: the bands and rates shown may have changed since")
    names = rules.tier_names

    def name(tier: int | None) -> str | None:
        return None if tier is None else names.get(tier, f"tier {tier}")

    bands = _bands(rules, row, warnings)
    figures = _figures(rules, row, month)
    # Each figure's points and the total are cut to the cent separately, so the parts can add up to a
    # cent or two less than the total: say so rather than let a reader think one of them is wrong.
    parts = [Decimal(f["points"]) for f in figures if f.get("points") is not None]
    next_up = _next_band_up(bands, row["computed_tier"])
    earned = row["earned_tier"]
    # The buffer that matters is the tier in force's, except for a downgrade: then it is the one that fell.
    buffered = row["previous_tier"] if row["reason"] == "downgrade" else row["tier"]
    falls_after = rules.calendar.failed_reviews_before_fall(buffered)
    explanation = {
        "program": program,
        "as_of": as_of,
        "customer_id": customer_id,
        "decision": None,
        "figures": figures,
        "points": row["points"],
        "figure_points_sum": str(sum(parts)) if parts else None,
        # What the program has at all, so "no cap" reads as "the program has no caps", not "no event".
        "program_has": {"points": rules.points is not None, "floors": bool(rules.floors), "caps": rules.caps is not None},
        "computed_tier": row["computed_tier"],
        "computed_tier_name": name(row["computed_tier"]),
        "bands": bands,
        "next_band_up": None if next_up is None else {k: next_up[k] for k in ("tier", "name", "gap")},
        "figures_summary": _figures_summary(bands, row["computed_tier"], next_up),
        "floor": _floor(rules, row),
        "cap": _cap(rules, row, warnings),
        "earned_tier": earned,
        "earned_tier_name": name(earned),
        "previous_tier": row["previous_tier"],
        "previous_tier_name": name(row["previous_tier"]),
        "tier": row["tier"],
        "tier_name": row["tier_name"],
        "reason": row["reason"],
        "failed_reviews": row["failed_reviews"],
        "buffer_since": row["buffer_since"],
        "falls_after_failed_reviews": falls_after,
        "falls_at_next_failed_review": states.falls_at_review(con, row["failed_reviews"], falls_after),
        "review_month": rules.calendar.is_review_month(month.month),
        "at_risk": row["at_risk"],
        "next_review": row["next_review"],
        "effective_from": row["effective_from"],
        "rules_version": row["rules_version"],
        "rules_file": str(loaded.path),
        "current_rules_version": loaded.version,
        "code_version": manifest.get("code_version"),
        "warnings": warnings,
    }
    explanation["decision"] = _decision(explanation)
    return _json_ready(explanation)


def explain_customer(warehouse: Path, customer_id: str, month: Month, program: str | None = None) -> list[dict]:
    """One explanation per program: ``program``, or every program with a snapshot for ``month``."""
    store = Warehouse(Path(warehouse))
    if program is not None:
        if not snapshots.snapshot_path(store, program, month).is_file():
            published = ", ".join(map(str, snapshots.published_months(store, program))) or "none"
            raise TiersError(f"{program} has no snapshot for {month} in {store.root} (published months: {published})")
        programs = [program]
    else:
        programs = snapshots.published_programs(store, month)
        if not programs:
            raise TiersError(f"no snapshot of any program for {month} in {store.root}")
    return [_explain(store, name, month, customer_id) for name in programs]


# -- plain text --------------------------------------------------------------------------------------

def render_text(explanation: dict) -> str:
    e = explanation
    yes_no = {True: "yes", False: "no", None: "?"}
    lines = [f"{e['customer_id']} in {e['program']} at {e['as_of']}", f"Decision: {e['decision']}", "", "Figures:"]
    width = max(len(f["name"]) for f in e["figures"])
    for f in e["figures"]:
        value = _figure_value(None if f["value"] is None else Decimal(f["value"]), f["unit"])
        line = f"  {f['name']:<{width}}  {value:>16} {f['unit']}  {f['basis']}"
        if "rate" in f:
            points = "unknown" if f["points"] is None else _amount(Decimal(f["points"]))
            line += f"; {f['rate']} = {points} points"
        lines.append(line)
    if e["points"] is not None:
        total = Decimal(e["points"])
        parts = e.get("figure_points_sum")
        note = "cut to the cent"
        if parts is not None and Decimal(parts) != total:
            gap = total - Decimal(parts)
            note = (f"cut to the cent once; the points above, each cut to the cent, add up to {_amount(Decimal(parts))}, "
                    f"{_amount(abs(gap))} {'less' if gap > 0 else 'more'}")
        lines.append(f"  {'total':<{width}}  {_amount(total):>16} points ({note})")
    elif not e["program_has"]["points"]:
        lines.append("  no points: the program's bands compare these figures")
    lines += ["", "Bands (highest first):"]
    name_width = max(len(b["name"]) for b in e["bands"])
    for band in e["bands"]:
        conditions = [c for group in band["groups"] for c in group]
        # Which condition decided is only worth showing when there is more than one.
        marks = ", ".join(f"{c['measure']} {'met' if c['met'] else 'missed'}"
                          for c in conditions) if len(conditions) > 1 and band["status"] != "below earned" else ""
        lines.append(f"  {band['tier']:>2} {band['name']:<{name_width}}  {band['rule']:<32}  {band['status']}"
                     + (f" ({marks})" if marks else ""))
    if e["next_band_up"]:
        lines.append(f"  next band up: {e['next_band_up']['gap']}")
    floor, cap, has = e["floor"], e["cap"], e["program_has"]
    if floor["tier"] is None and not has["floors"]:
        lines += ["", "Floor: none (the program has no floors)"]
    else:
        if floor["products"]:
            held = f"a held {_either(floor['products'])}"
        else:
            held = "no floor product held" if floor["tier"] is None else "a held product"
        lines += ["", f"Floor: {floor['tier'] if floor['tier'] is not None else 'none'} ({held})"]
    if not cap["capped"] and not has["caps"]:
        lines.append("Cap: none (the program has no caps)")
    else:
        if cap["events"]:
            active = f"an active {_either(cap['events'])}"
        else:
            active = "no active credit event" if not cap["capped"] else "an active credit event"
        cap_text = f"capped at {cap['cap_tier']}" if cap["capped"] else "not capped"
        lines.append(f"Cap: {cap_text} ({active})")
    previous = ("none (first evaluation)" if e["previous_tier"] is None
                else f"{e['previous_tier']} {e['previous_tier_name']}")
    lines += [
        f"Earned: {e['earned_tier']} {e['earned_tier_name']} (computed {e['computed_tier']} {e['computed_tier_name']})",
        f"Previous tier: {previous}",
        f"Tier in force: {e['tier']} {e['tier_name']}, reason {e['reason']}",
        f"Buffer: {e['failed_reviews']} failed review(s)"
        + (f" since {e['buffer_since']}" if e["buffer_since"] else "")
        + f"; falls after {e['falls_after_failed_reviews']}; at risk: {yes_no[e['at_risk']]}",
        f"Next review: {e['next_review']}; effective from: {e['effective_from']}",
        f"Rules: {e['rules_version']} ({e['rules_file']})",
    ]
    lines += [f"Warning: {w}" for w in e["warnings"]]
    return "\n".join(lines)
