"""The customer-equity settings (``tiers equity``, docs/equity.md): what each figure earns the bank.

    discount_rate: 0.08          # annual; months are discounted at (1 + d/12)
    horizon_months: 60           # H: a customer's value counts H months, this one included
    programs:
      icbc_star:
        margin_rates: {short_term_assets: 0.015}   # annual margin per CNY of a balance figure
        fee_rates: {card_spend: 0.006}             # fee per CNY of a counted (transaction) figure

Shipped as rules/equity.yaml beside the programs (never read as one: rules/loader.py's NOT_PROGRAMS);
a bank's rules folder may hold its own. A figure with no rate contributes 0 and is listed as such.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ground.errors import RuleError
from rules.loader import EQUITY_SETTINGS_FILE, LoadedProgram, default_rules_dir, load_settings
from rules.schema import BalanceFigure, Identifier, TransactionFigure

DEFAULT_DISCOUNT_RATE = Decimal("0.08")
DEFAULT_HORIZON_MONTHS = 60


def _not_text(value: object) -> object:
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a number, not text or a boolean (write 0.015, not \"0.015\")")
    return value


# A share of the amount, per year (margins) or per CNY counted (fees).
RateValue = Annotated[Decimal, BeforeValidator(_not_text), Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgramRates(_Strict):
    margin_rates: dict[Identifier, RateValue] = {}
    fee_rates: dict[Identifier, RateValue] = {}


class EquitySettings(_Strict):
    discount_rate: RateValue = DEFAULT_DISCOUNT_RATE
    horizon_months: int = Field(DEFAULT_HORIZON_MONTHS, ge=1, le=1200)
    programs: dict[Identifier, ProgramRates] = {}


def default_settings_file() -> Path:
    """The settings beside the rules folder in force, else the shipped ones."""
    beside = default_rules_dir() / EQUITY_SETTINGS_FILE.name
    return beside if beside.is_file() else EQUITY_SETTINGS_FILE


def load_equity_settings(path: Path | None = None) -> tuple[EquitySettings, Path]:
    path = Path(path) if path is not None else default_settings_file()
    if not path.is_file():
        raise RuleError(f"{path}: no such equity settings file")
    settings = load_settings(path, EquitySettings)
    assert isinstance(settings, EquitySettings)
    return settings, path


def money_figures(program: LoadedProgram) -> dict[str, str]:
    """The figures that are amounts of CNY, by kind: ``balance`` (an average or month-end balance) or
    ``counted`` (transaction amounts over a window). Points, scores and figures valued in another
    currency are not money the bank earns a margin on (the foreign-currency figure is also a part of a
    CNY balance figure already), so they take no rate."""
    kinds = {}
    for name, figure in program.rules.figures.items():
        if isinstance(figure, BalanceFigure):
            if figure.valued_in == "CNY":
                kinds[name] = "balance"
        elif isinstance(figure, TransactionFigure):
            kinds[name] = "counted"
    return kinds


def figure_rates(settings: EquitySettings, path: Path, program: LoadedProgram) -> dict[str, tuple[str, Decimal | None]]:
    """Each figure of ``program``: its kind (``balance`` or ``counted``) and its rate (None: no rate given).
    A rate for a figure the program does not have, or of the wrong kind, is an error naming the key."""
    rates = settings.programs.get(program.name, ProgramRates())
    kinds = money_figures(program)
    others = sorted(set(program.rules.figures) - set(kinds))
    for key, given, kind in (("margin_rates", rates.margin_rates, "balance"), ("fee_rates", rates.fee_rates, "counted")):
        for name in given:
            where = f"{path}: programs.{program.name}.{key}.{name}"
            if name in others:
                raise RuleError(f"{where}: {name} is not an amount of CNY (a count, a score or a foreign-currency "
                                "figure), so it earns no margin; remove its rate")
            if name not in kinds:
                raise RuleError(f"{where}: {program.name} has no figure {name!r} (figures: {', '.join(kinds)})")
            if kinds[name] != kind:
                right = "margin_rates (a balance figure)" if kinds[name] == "balance" else "fee_rates (a counted figure)"
                raise RuleError(f"{where}: {name} is a {kinds[name]} figure; give its rate under {right}")
    return {name: (kind, (rates.margin_rates if kind == "balance" else rates.fee_rates).get(name))
            for name, kind in kinds.items()}
