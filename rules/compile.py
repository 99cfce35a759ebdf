"""Compile a program into the small rule tables the evaluation SQL joins against.

The evaluation SQL (transforms/sql/evaluation.sql) is the same for every program: what differs is
data. Python only touches programs and months here, never customers.

Exact arithmetic: every figure is an integer number of cents ``num`` over an integer ``scale``
(cents per CNY times the window's days for averages), so a figure's CNY value is ``num / scale``.
Points are ``sum(coef * num) / points_scale`` with integer ``coef`` chosen so the sum is exact;
a condition compares ``num * threshold_den`` with ``threshold_num * scale`` (``MEETS``).
No division, no float, anywhere on the way to a tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa

from rules.loader import LoadedProgram, Vocabularies
from rules.schema import BalanceFigure, LatestFigure, LedgerFigure, TransactionFigure
from ground.errors import RuleError
from ground.months import Month, month_range, window

CENTS = 100
_INT64_MAX = 2**63 - 1
# What each operator of a condition accepts, as the range of outcomes of comparing the value with its bound
# (-1 below it, 0 equal, 1 above). The evaluation SQL tests a condition through this range (rule_conditions'
# meets_from..meets_to), and explain through ``meets``: one definition of every comparison.
MEETS = {">=": (0, 1), ">": (1, 1), "<=": (-1, 0), "<": (-1, -1)}


def meets(op: str, outcomes: set[int]) -> bool | None:
    """Whether a value meets ``op`` when comparing it with the bound may give any of ``outcomes``: True
    when every one meets it, False when none does, None when it depends on which (a value known only
    to the cent, within a cent of its bound)."""
    low, high = MEETS[op]
    accepted = [low <= outcome <= high for outcome in outcomes]
    return True if all(accepted) else False if not any(accepted) else None


def _ratio(value) -> tuple[int, int]:
    fraction = Fraction(value)
    return fraction.numerator, fraction.denominator


def rule_tables(loaded: LoadedProgram, vocab: Vocabularies) -> dict[str, pa.Table]:
    """The month-independent tables of one program."""
    program = loaded.rules
    figure_codes, figure_rows, excluded_mcc = [], [], []
    for order, (name, figure) in enumerate(program.figures.items()):
        is_balance, is_txn = isinstance(figure, BalanceFigure), isinstance(figure, TransactionFigure)
        if is_balance:
            # sign -1: subtracted day by day (a net figure).
            for sign, codes in ((1, figure.product_codes), (-1, figure.minus_product_codes)):
                for code in codes:
                    for risk_class in figure.risk_classes or vocab.risk_classes:
                        figure_codes.append({"figure": name, "code": code, "risk_class": risk_class, "sign": sign})
        elif is_txn:
            for code in figure.txn_types:
                figure_codes.append({"figure": name, "code": code, "risk_class": None, "sign": 1})
            excluded_mcc += [{"figure": name, "mcc": mcc} for mcc in figure.exclude.merchant_categories]
        figure_rows.append(
            {
                "figure": name,
                "ord": order,
                "source": figure.source,
                "basis": figure.basis if is_balance else "counted" if is_txn else figure.source,
                "window_months": getattr(figure, "window_months", 1),
                "cap_per_transaction": figure.cap_per_transaction if is_txn else None,
                "apply_fee_factor": figure.apply_fee_factor if is_txn else None,
                "exclude_single_above": figure.exclude.single_amount_above if is_txn else None,
                "foreign_only": figure.foreign_currency_only if is_balance else False,
                # A value in force (a credit score) may be missing: then it meets no condition.
                "absent_is_null": isinstance(figure, LatestFigure),
            }
        )
    conditions = []
    for band in program.tiers:
        for group_index, group in enumerate(band.condition_groups):
            for condition in group:
                op, bound = condition.operator
                num, den = _ratio(bound)
                meets_from, meets_to = MEETS[op]
                conditions.append(
                    {"tier": band.tier, "grp": group_index, "measure": condition.measure,
                     "meets_from": meets_from, "meets_to": meets_to, "thr_num": num, "thr_den": den}
                )
    money = pa.decimal128(18, 2)
    return {
        "rule_figures": pa.Table.from_pylist(
            figure_rows,
            schema=pa.schema(
                [("figure", pa.string()), ("ord", pa.int32()), ("source", pa.string()), ("basis", pa.string()),
                 ("window_months", pa.int32()), ("cap_per_transaction", money), ("apply_fee_factor", pa.bool_()),
                 ("exclude_single_above", money), ("foreign_only", pa.bool_()), ("absent_is_null", pa.bool_())]
            ),
        ),
        "rule_figure_codes": pa.Table.from_pylist(
            figure_codes, schema=pa.schema([("figure", pa.string()), ("code", pa.string()), ("risk_class", pa.string()),
                                            ("sign", pa.int32())])
        ),
        "rule_excluded_mcc": pa.Table.from_pylist(
            excluded_mcc, schema=pa.schema([("figure", pa.string()), ("mcc", pa.string())])
        ),
        "rule_tiers": pa.Table.from_pylist(
            [{"tier": tier, "tier_name": name} for tier, name in program.tier_names.items()],
            schema=pa.schema([("tier", pa.int32()), ("tier_name", pa.string())]),
        ),
        "rule_conditions": pa.Table.from_pylist(
            conditions,
            schema=pa.schema(
                [("tier", pa.int32()), ("grp", pa.int32()), ("measure", pa.string()), ("meets_from", pa.int8()),
                 ("meets_to", pa.int8()), ("thr_num", pa.int64()), ("thr_den", pa.int64())]
            ),
        ),
        "rule_floors": pa.Table.from_pylist(
            [{"product_code": code, "tier": tier} for code, tier in program.floors.items()],
            schema=pa.schema([("product_code", pa.string()), ("tier", pa.int32())]),
        ),
        "rule_caps": pa.Table.from_pylist(
            [{"event_code": code} for code in (program.caps.events if program.caps else [])],
            schema=pa.schema([("event_code", pa.string())]),
        ),
        "rule_buffers": pa.Table.from_pylist(
            [{"tier": tier, "failed_reviews": count} for tier, count in program.calendar.failed_reviews_to_fall.items()],
            schema=pa.schema([("tier", pa.int32()), ("failed_reviews", pa.int32())]),
        ),
    }


@dataclass(frozen=True)
class MonthScales:
    """What an evaluation at ``month`` needs besides the rule tables: windows and exact scales."""

    figures: pa.Table  # figure, first_month, num_factor, scale, coef
    points_scale: int  # points = sum(coef * num) / points_scale; 1 when the program has no points


def month_scales(loaded: LoadedProgram, month: Month, rates: dict[str, Decimal] | None = None) -> MonthScales:
    """``rates``: CNY per unit of each currency a figure is valued in, in force on the month-end
    (``rules.schema.Program.valuation_currencies``; the caller looks them up)."""
    program = loaded.rules
    rows = []
    for name, figure in program.figures.items():
        months = window(month, getattr(figure, "window_months", 1))
        days = sum(m.days for m in months) if getattr(figure, "basis", None) == "average_daily" else 1
        # Amounts are cents; a ledger or a score is a plain integer.
        unit = 1 if isinstance(figure, (LedgerFigure, LatestFigure)) else CENTS
        num_factor, scale = 1, days * unit
        currency = getattr(figure, "valued_in", "CNY")
        if currency != "CNY":
            # value = cents / (100 * days * rate), rate = rate_num / rate_den: exact, with no division.
            rate_num, rate_den = _ratio(rates[currency])
            num_factor, scale = rate_den, scale * rate_num
        rows.append({"figure": name, "first_month": months[0].first_day, "num_factor": num_factor, "scale": scale})

    points_scale = 1
    if program.points:
        per_num, per_den = _ratio(program.points.per_amount)
        # points_f = rate_f * (num_f / scale_f) / per_amount: bring every term to one denominator.
        denominators = {}
        for row in rows:
            if row["figure"] in program.points.rates:
                rate_num, rate_den = _ratio(program.points.rates[row["figure"]])
                denominators[row["figure"]] = (rate_num, rate_den * per_num * row["scale"])
        points_scale = math.lcm(*(den for _, den in denominators.values()))
        for row in rows:
            if row["figure"] in denominators:
                rate_num, den = denominators[row["figure"]]
                row["coef"] = rate_num * per_den * (points_scale // den)
        if points_scale > _INT64_MAX or any(abs(row.get("coef", 0)) > _INT64_MAX for row in rows):
            raise RuleError(f"{loaded.path}: points: rates and per_amount too fine-grained for exact 64-bit "
                            f"integer arithmetic (the window of {month} needs a scale of {points_scale})")
    table = pa.Table.from_pylist(
        [{**row, "coef": row.get("coef")} for row in rows],
        schema=pa.schema(
            [("figure", pa.string()), ("first_month", pa.date32()), ("num_factor", pa.int64()), ("scale", pa.int64()),
             ("coef", pa.int64())]
        ),
    )
    return MonthScales(figures=table, points_scale=points_scale)


def check_exact(loaded: LoadedProgram) -> None:
    """Raise at load time the RuleError that ``month_scales`` would raise in some month. A window's day
    counts repeat every 4 years (windows are at most 24 months), so 48 consecutive months cover them all."""
    if loaded.rules.points:
        rates = dict.fromkeys(loaded.rules.valuation_currencies, Decimal(1))  # rates do not scale points
        for month in month_range(Month(2024, 1), Month(2027, 12)):
            month_scales(loaded, month, rates)
