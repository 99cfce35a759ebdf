"""The rule-file schema: what a bank's tier scheme may say, validated with pydantic.

A program reduces each customer's month to named *figures* (balance averages, month-end balances,
counted transaction amounts), optionally scores them as *points*, maps figures and points to a tier
through ordered *bands*, applies *floors* (held products) and *caps* (credit events), and moves the
tier in force through a *calendar* of reviews with buffers. Amounts are CNY decimals; every
threshold and rate is a ``Decimal`` so nothing on the way to a tier is a float.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ground.months import Month
from rules import sources


def _not_text(value: object) -> object:
    # Thresholds and rates are YAML numbers; text ("50000") is refused, not quietly converted. The
    # loader reads YAML floats as Decimal, so a number arrives here as an int or a Decimal.
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a number, not text or a boolean (write 50000, not \"50000\")")
    return value


Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
# DECIMAL(18,2), the snapshots' money type: at most 2 decimals and 16 digits before the point, so a
# threshold's integer fraction fits the int64 columns of rules/compile.py.
Money = Annotated[Decimal, Field(max_digits=18, decimal_places=2)]
# Amounts of a figure's definition, written as decimal strings in the shipped files ("5000.00").
NonNegativeAmount = Annotated[Money, Field(ge=0)]
# A tier threshold: a number as written in YAML, never text.
Threshold = Annotated[Money, BeforeValidator(_not_text)]
# Points rates and per_amount may be finer than a cent, but no finer than 6 decimals.
Rate = Annotated[Decimal, BeforeValidator(_not_text), Field(max_digits=22, decimal_places=6)]


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class BalanceFigure(_Strict):
    """Balances of the listed products: the window's average daily balance, or the month-end balance."""

    source: Literal["balances"]
    basis: Literal["average_daily", "month_end"]
    window_months: int = Field(1, ge=1, le=24)
    product_codes: list[str] = Field(min_length=1)
    # Balances of these products are subtracted, day by day (a net figure, which may be negative).
    minus_product_codes: list[str] = []
    # Only balances whose loan classification is listed count (none listed: all count).
    risk_classes: list[str] | None = None
    # Only rows whose currency is not CNY count (each still converted to CNY as every row is).
    foreign_currency_only: bool = False
    # The figure in this currency, at its rate in force on the month-end (compared exactly).
    valued_in: Currency = "CNY"

    @model_validator(mode="after")
    def _month_end_is_one_month(self) -> "BalanceFigure":
        if self.basis == "month_end" and self.window_months != 1:
            raise ValueError("a month_end figure reads the evaluated month only: window_months must be 1")
        both = sorted(set(self.product_codes) & set(self.minus_product_codes))
        if both:
            raise ValueError(f"{both} are both added (product_codes) and subtracted (minus_product_codes)")
        return self


class LedgerFigure(_Strict):
    """The sum over the window of a monthly integer ledger (card reward points): a count, not CNY."""

    source: Literal["card_points"]
    window_months: int = Field(1, ge=1, le=24)


class LatestFigure(_Strict):
    """The latest value in force on the month-end of a dated reference file (a credit score); a customer
    with none has no value, which meets no condition."""

    source: Literal["credit_scores"]


class TransactionExclusions(_Strict):
    single_amount_above: NonNegativeAmount | None = None
    merchant_categories: list[Annotated[str, Field(pattern=r"^[0-9]{4}$")]] = []


class TransactionFigure(_Strict):
    """Transactions of the listed types, each counted as round_half_up(min(amount, cap) * fee_factor, 2)."""

    source: Literal["transactions"]
    window_months: int = Field(1, ge=1, le=24)
    txn_types: list[str] = Field(min_length=1)
    cap_per_transaction: NonNegativeAmount | None = None
    apply_fee_factor: bool = True
    exclude: TransactionExclusions = TransactionExclusions()


Figure = Annotated[Union[BalanceFigure, TransactionFigure, LedgerFigure, LatestFigure], Field(discriminator="source")]

# Where each source's data comes from (rules/sources.py): a monthly dataset read over the figure's window,
# or a reference file; and the sources a bank may not have at all (a program reading one does not apply
# to a landing folder without it, data-contract.md section 4).
MONTHLY_SOURCES = tuple(source.name for source in sources.monthly())
OPTIONAL_SOURCES = tuple(source.name for source in sources.optional())


class Points(_Strict):
    """points = sum over figures of rate * figure / per_amount."""

    per_amount: Annotated[Rate, Field(gt=0)]
    rates: dict[Identifier, Rate] = Field(min_length=1)


class Condition(_Strict):
    """``measure`` (a figure name, or ``points``) compared with exactly one bound."""

    measure: Identifier
    at_least: Threshold | None = None
    above: Threshold | None = None
    at_most: Threshold | None = None
    below: Threshold | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> "Condition":
        bounds = [name for name in ("at_least", "above", "at_most", "below") if getattr(self, name) is not None]
        if len(bounds) != 1:
            raise ValueError("a condition takes exactly one of at_least, above, at_most, below")
        return self

    @property
    def operator(self) -> tuple[str, Decimal]:
        for name, op in (("at_least", ">="), ("above", ">"), ("at_most", "<="), ("below", "<")):
            value = getattr(self, name)
            if value is not None:
                return op, value
        raise AssertionError("validated to have one bound")


_LOWER_BOUNDS, _UPPER_BOUNDS = (">=", ">"), ("<=", "<")


def _implies(condition: Condition, other: Condition) -> bool:
    """Whether every value meeting ``condition`` meets ``other`` (same measure, bounds on the same side)."""
    if condition.measure != other.measure:
        return False
    (op, value), (other_op, other_value) = condition.operator, other.operator
    for side, strict in ((_LOWER_BOUNDS, ">"), (_UPPER_BOUNDS, "<")):
        if op in side and other_op in side:
            tighter = value > other_value if side is _LOWER_BOUNDS else value < other_value
            return tighter or (value == other_value and (op == other_op or op == strict))
    return False


def _written(condition: Condition) -> str:
    name, = (name for name in ("at_least", "above", "at_most", "below") if getattr(condition, name) is not None)
    return f"{condition.measure} {name} {getattr(condition, name)}"


class TierBand(_Strict):
    """A tier and what earns it: all_of (every condition), any_of (one is enough), or neither (fallback)."""

    tier: int = Field(ge=0, le=99)
    name: str = Field(min_length=1)
    label: str | None = None
    all_of: list[Condition] | None = None
    any_of: list[Condition] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "TierBand":
        if self.all_of is not None and self.any_of is not None:
            raise ValueError("a band takes all_of or any_of, not both")
        if (self.all_of is not None and not self.all_of) or (self.any_of is not None and not self.any_of):
            raise ValueError("all_of / any_of need at least one condition (leave both out for the fallback band)")
        return self

    def keyed_groups(self, index: int) -> list[list[tuple[str, Condition]]]:
        """``condition_groups`` with each condition's key as written (``tiers.2.any_of.0.at_least``)."""
        kind = "all_of" if self.all_of else "any_of"
        keyed = [
            (f"tiers.{index}.{kind}.{position}.{name}", condition)
            for position, condition in enumerate(self.all_of or self.any_of or [])
            for name in ("at_least", "above", "at_most", "below") if getattr(condition, name) is not None
        ]
        return [keyed] if self.all_of else [[pair] for pair in keyed]

    @property
    def condition_groups(self) -> list[list[Condition]]:
        """Disjunctive normal form: the band holds when every condition of some group holds."""
        if self.all_of:
            return [list(self.all_of)]
        if self.any_of:
            return [[condition] for condition in self.any_of]
        return []


class Caps(_Strict):
    events: list[str] = Field(min_length=1)
    tier: int = Field(ge=0)


class ReviewMonths(_Strict):
    months: list[int] = Field(min_length=1)

    @field_validator("months")
    @classmethod
    def _calendar_months(cls, months: list[int]) -> list[int]:
        if any(not 1 <= month <= 12 for month in months):
            raise ValueError("review months are 1 to 12")
        return sorted(set(months))


# A hundred years of monthly reviews: any count beyond is a typo, and the rule tables hold counts in 32 bits.
MAX_FAILED_REVIEWS = 1200


class Calendar(_Strict):
    reviews: Literal["every_month_end"] | ReviewMonths
    failed_reviews_to_fall: dict[int, int] = {}
    failed_reviews_default: int = Field(1, ge=1, le=MAX_FAILED_REVIEWS)
    fall_to: Literal["earned", "one_step"] = "earned"
    meeting_tier_resets_buffer: bool = True
    effective_day: int = Field(1, ge=1, le=28)

    @field_validator("failed_reviews_to_fall")
    @classmethod
    def _positive(cls, counts: dict[int, int]) -> dict[int, int]:
        if any(count < 1 for count in counts.values()):
            raise ValueError("a tier falls after at least 1 failed review")
        if any(count > MAX_FAILED_REVIEWS for count in counts.values()):
            raise ValueError(f"a tier falls after at most {MAX_FAILED_REVIEWS} failed reviews")
        return counts

    def is_review_month(self, month: int) -> bool:
        return self.reviews == "every_month_end" or month in self.reviews.months

    def failed_reviews_before_fall(self, tier: int) -> int:
        return self.failed_reviews_to_fall.get(tier, self.failed_reviews_default)

    def next_review(self, month: Month) -> date:
        """The first review month-end strictly after the end of ``month``."""
        following = month.plus(1)
        while not self.is_review_month(following.month):
            following = following.plus(1)
        return following.last_day

    def effective_from(self, month: Month) -> date:
        """The day the result for ``month`` is published and takes effect: a day of the next month."""
        following = month.plus(1)
        return date(following.year, following.month, self.effective_day)


class Program(_Strict):
    program: Identifier
    title: str = ""
    figures: dict[Identifier, Figure] = Field(min_length=1)
    points: Points | None = None
    tiers: list[TierBand] = Field(min_length=2)
    floors: dict[str, int] = {}
    caps: Caps | None = None
    calendar: Calendar

    @model_validator(mode="after")
    def _consistent(self) -> "Program":
        tiers = [band.tier for band in self.tiers]
        if len(set(tiers)) != len(tiers):
            raise ValueError("tiers: each tier appears once")
        names = [band.name for band in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tiers: each tier has its own name (a snapshot's tier_name must tell tiers apart)")
        if tiers != sorted(tiers, reverse=True):
            raise ValueError("tiers: list bands from the highest tier down")
        if self.tiers[-1].condition_groups:
            raise ValueError("tiers: the last band is the fallback and has no conditions")
        if any(not band.condition_groups for band in self.tiers[:-1]):
            raise ValueError("tiers: only the last band may have no conditions")
        measures = set(self.figures) | ({"points"} if self.points else set())
        for band in self.tiers:
            for group in band.condition_groups:
                for condition in group:
                    if condition.measure not in measures:
                        raise ValueError(
                            f"tiers: tier {band.tier} compares {condition.measure!r}, "
                            f"which is not one of {sorted(measures)}"
                        )
        self._every_band_reachable()
        if self.points:
            unknown = set(self.points.rates) - set(self.figures)
            if unknown:
                raise ValueError(f"points.rates: {sorted(unknown)} are not figures")
        known = set(tiers)
        for product, tier in self.floors.items():
            if tier not in known:
                raise ValueError(f"floors.{product}: tier {tier} is not one of the program's tiers")
        if self.caps and self.caps.tier not in known:
            raise ValueError(f"caps.tier: tier {self.caps.tier} is not one of the program's tiers")
        for tier in self.calendar.failed_reviews_to_fall:
            if tier not in known:
                raise ValueError(f"calendar.failed_reviews_to_fall: tier {tier} is not one of the program's tiers")
        return self

    def _every_band_reachable(self) -> None:
        """A band is tried only when every higher band failed. So a condition group of a lower band is
        dead when some group of a higher band holds whenever it does: each higher condition is implied
        by a lower condition on the same measure (e.g. tier 2 asks assets >= 1,000,000 and tier 3
        asks assets >= 500,000: tier 2 is never reached). A higher tier must be strictly harder to
        reach, so an equal threshold is dead too. Implication between points and the figures they
        are scored from is not followed."""
        for low_index, low in enumerate(self.tiers):
            for low_group in low.keyed_groups(low_index):
                for high_index, high in enumerate(self.tiers[:low_index]):
                    for high_group in high.keyed_groups(high_index):
                        pairs = [
                            next(((low_key, low_c, key, c) for low_key, low_c in low_group if _implies(low_c, c)), None)
                            for key, c in high_group
                        ]
                        if None in pairs:
                            continue
                        low_key = pairs[0][0] if len({p[0] for p in pairs}) == 1 else low_group[0][0].rsplit(".", 2)[0]
                        high_key = pairs[0][2] if len(pairs) == 1 else high_group[0][0].rsplit(".", 2)[0]
                        way = " this way" if len(low.condition_groups) > 1 else ""
                        raise ValueError(
                            f"{low_key}: tier {low.tier} ({low.name}) can never be reached{way}: whenever "
                            f"{' and '.join(_written(c) for _, c in low_group)} holds, tier {high.tier} ({high.name}) "
                            f"already does ({high_key}: {' and '.join(_written(p[3]) for p in pairs)}), and "
                            "it comes first; a higher tier must be strictly harder to reach"
                        )

    @property
    def tier_names(self) -> dict[int, str]:
        return {band.tier: band.name for band in self.tiers}

    @property
    def history_months(self) -> dict[str, int]:
        """How many months of each monthly dataset an evaluation reads: {'balances': n, 'transactions': m, ...}."""
        needed = dict.fromkeys(MONTHLY_SOURCES, 0)
        for figure in self.figures.values():
            if figure.source in needed:
                needed[figure.source] = max(needed[figure.source], figure.window_months)
        return needed

    @property
    def optional_sources(self) -> list[str]:
        """The datasets the figures read that a bank may not have at all (``OPTIONAL_SOURCES``)."""
        return sorted({figure.source for figure in self.figures.values() if figure.source in OPTIONAL_SOURCES})

    @property
    def valuation_currencies(self) -> list[str]:
        """The currencies figures are valued in (each needs its rate in force on the month-end)."""
        return sorted({figure.valued_in for figure in self.figures.values()
                       if isinstance(figure, BalanceFigure) and figure.valued_in != "CNY"})
