"""The rules engine: "a new bank is a new rule file, not new code".

1. The third shipped program, ``rules/bohai_wealth.yaml``, through the real ``evaluate()``: every
   month-end a review, a 3-review buffer (6 for private banking), falls to the earned tier, exact
   average-daily thresholds, no points.
2. Schema settings changed in rule files written to tmp_path (copies of a shipped file with one
   setting changed), loaded with ``load_program(path)`` and evaluated on tiny inputs: nothing but
   the YAML differs between the variants and the shipped programs.
3. Malformed rule files are refused by ``load_program`` and ``tiers rules check`` naming the file,
   the key and what was expected.
4. ``rules_version`` is the file's fingerprint; a rule change re-evaluates with the new version, and
   ingestion re-reads transaction months only when transaction rules change.
5. Every shipped program in one run: one plan, one shared ingestion, snapshots for all three.

Inputs are built as in tests/test_state_machine.py and tests/test_sql_units.py: an in-memory DuckDB
with the warehouse schema and stored monthly sums (balance_month / txn_figure_month), or a tiny
landing folder in tmp_path read by the real ``Ingestor``; the published Parquet is read back.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.plan import plan_run
from rules.loader import RULES_DIR, LoadedProgram, load_program, load_programs, load_vocabularies
from stores import snapshots
from ground.checksums import sha256_file
from interfaces.cli import app
from ground.errors import RuleError, TiersError
from ground.months import Month, month_range
from stores.warehouse import Warehouse
from transforms import runner
from transforms.evaluate import evaluate
from transforms.ingest import Ingestor

VOCAB = load_vocabularies()
BOHAI = load_program(RULES_DIR / "bohai_wealth.yaml", VOCAB)
ICBC = load_program(RULES_DIR / "icbc_star.yaml", VOCAB)
GOLDEN = Path(__file__).resolve().parent / "golden"
D = Decimal

# The published columns of data-contract.md section 3, in order (a program with points adds pts_*).
CONTRACT_COLUMNS = [
    "customer_id", "points", "computed_tier", "floor_tier", "capped", "previous_tier", "tier", "tier_name",
    "reason", "failed_reviews", "buffer_since", "at_risk", "next_review", "effective_from", "rules_version",
]
# bohai_wealth's bands, written out here from docs/programs/bohai_wealth.md (not read from the file).
BOHAI_NAMES = {4: "private-banking", 3: "diamond", 2: "platinum", 1: "gold", 0: "ordinary"}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
_variant_ids = itertools.count()


def variant_text(base: str, *edits: tuple[str, str], program: str | None = None) -> str:
    """A shipped rule file's text with each ``old`` (which must occur exactly once) replaced by ``new``."""
    text = (RULES_DIR / f"{base}.yaml").read_text(encoding="utf-8")
    if program:
        edits = ((f"program: {base}\n", f"program: {program}\n"), *edits)
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {base}.yaml"
        text = text.replace(old, new)
    return text


def write_variant(tmp_path: Path, base: str, *edits: tuple[str, str], program: str | None = None) -> Path:
    path = tmp_path / "variants" / f"{program or base}-{next(_variant_ids)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(variant_text(base, *edits, program=program), encoding="utf-8")
    return path


def variant(tmp_path: Path, base: str, *edits: tuple[str, str], program: str | None = None) -> LoadedProgram:
    """Load a changed copy of a shipped rule file the way any rule file is loaded: no code involved."""
    return load_program(write_variant(tmp_path, base, *edits, program=program), VOCAB)


def section(base: str, key: str) -> str:
    """The top-level ``key:`` block of a shipped rule file, up to the next top-level key."""
    text = (RULES_DIR / f"{base}.yaml").read_text(encoding="utf-8")
    match = re.search(rf"^{key}:\n(?:(?:[ #].*)?\n)*", text, flags=re.MULTILINE)
    assert match, key
    return match.group(0)


def bohai_with(tmp_path: Path, program: str, *, figures: str | None = None, points: str = "",
               tiers: str | None = None) -> LoadedProgram:
    """bohai_wealth.yaml with whole sections replaced (figures; points and tiers), under another program name."""
    changes = []
    if figures is not None:
        changes.append((section("bohai_wealth", "figures"), "figures:\n" + figures + "\n"))
    if tiers is not None or points:
        changes.append((section("bohai_wealth", "tiers"), points + "tiers:\n" + (tiers or "") + "\n"))
    if tiers is not None and "tier: 4," not in tiers:  # the shipped buffer of tier 4 would name no tier
        changes.append(("failed_reviews_to_fall: {4: 6}", "failed_reviews_to_fall: {}"))
    return variant(tmp_path, "bohai_wealth", *changes, program=program)


def cut(value: Fraction) -> Decimal:
    """A shown figure: cut (floor) to the cent."""
    return D(int(value * 100 // 1)) / 100


class Book:
    """One in-memory warehouse: reference rows, stored monthly sums, evaluations read back."""

    def __init__(self, root: Path):
        self.root = root
        self.con = duckdb.connect()
        runner.run(self.con, "warehouse_schema")
        self.warehouse = Warehouse(root / "warehouse")

    def close(self) -> None:
        self.con.close()

    def customers(self, *ids: str) -> None:
        self.con.executemany("INSERT INTO customers VALUES (?, NULL)", [[i] for i in ids])

    def product(self, customer: str, code: str, opened: date, closed: date | None = None) -> None:
        self.con.execute("INSERT INTO held_products VALUES (?, ?, ?, ?)", [customer, code, opened, closed])

    def event(self, customer: str, code: str, started: date, cured: date | None = None) -> None:
        self.con.execute("INSERT INTO credit_events VALUES (?, ?, ?, ?)", [customer, code, started, cured])

    def balance(self, month: Month, customer: str, product: str, day_sum, month_end="0",
                risk_class: str = "normal") -> None:
        self.con.execute(
            "INSERT INTO balance_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)), CAST(? AS DECIMAL(38, 2)), false)",
            [month.first_day, customer, product, risk_class, str(day_sum), str(month_end)],
        )

    def adb(self, month: Month, customer: str, amount, product: str = "fund") -> None:
        """``amount`` CNY on every day of ``month``: an average daily balance of exactly ``amount``."""
        amount = D(str(amount))
        if amount:
            self.balance(month, customer, product, amount * month.days, amount)

    def txn_sum(self, program: str, figure: str, month: Month, customer: str, counted: str) -> None:
        self.con.execute(
            "INSERT INTO txn_figure_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)))",
            [program, figure, month.first_day, customer, counted],
        )

    def publish_prev(self, program: str, month: Month, rows: list[dict]) -> None:
        """A hand-made snapshot for ``month``: the state columns the next evaluation reads."""
        table = pa.Table.from_pylist(rows, schema=pa.schema(
            [("customer_id", pa.string()), ("tier", pa.int32()), ("failed_reviews", pa.int32()),
             ("buffer_since", pa.date32())]))
        target = snapshots.snapshot_path(self.warehouse, program, month)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        # As a run publishes it: the manifest names the file's SHA-256, which the next evaluation checks.
        snapshots.write_manifest(snapshots.manifest_path(self.warehouse, program, month),
                                 {"snapshot": {"sha256": sha256_file(target)}})

    def evaluate(self, loaded: LoadedProgram, month: Month) -> dict[str, dict]:
        result = evaluate(self.con, self.warehouse, loaded, VOCAB, month)
        table = pq.read_table(result.path)
        self.columns = table.column_names
        rows = {row["customer_id"]: row for row in table.to_pylist()}
        assert result.customers == len(rows), "evaluate() counted other customers than it published"
        return rows

    def run_adb(self, loaded: LoadedProgram, months: list[Month], adb: dict[str, list]) -> list[dict[str, dict]]:
        """Evaluate month after month; customer c holds adb[c][i] of funds every day of month i."""
        new = [c for c in adb if not self._known(c)]
        if new:
            self.customers(*new)
        results = []
        for i, month in enumerate(months):
            if not self._stored(month):
                for customer, amounts in adb.items():
                    self.adb(month, customer, amounts[i])
            results.append(self.evaluate(loaded, month))
        return results

    def _known(self, customer: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM customers WHERE customer_id = ?", [customer]).fetchone()[0])

    def _stored(self, month: Month) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM balance_month WHERE month = ?", [month.first_day]).fetchone()[0])


@pytest.fixture
def book(tmp_path):
    b = Book(tmp_path)
    yield b
    b.close()


def story(results: list[dict[str, dict]], customer: str, *names: str) -> list[tuple]:
    return [tuple(rows[customer][n] for n in names) for rows in results]


# -- a tiny landing folder, read by the real Ingestor --------------------------------------------
BALANCE_HEADER = ["account_id", "customer_id", "product_code", "balance_date", "balance", "currency", "risk_class"]
TXN_HEADER = ["txn_id", "account_id", "customer_id", "txn_date", "txn_type", "amount", "currency",
              "merchant_category", "fee_factor"]


def days_of(month: Month) -> list[date]:
    return [month.first_day + timedelta(days=i) for i in range(month.days)]


def daily(customer: str, product: str, month: Month, amount: str, *, days: list[date] | None = None,
          risk_class: str = "", account: str | None = None) -> list[list[str]]:
    return [[account or f"{customer}-{product}", customer, product, day.isoformat(), amount, "", risk_class]
            for day in (days if days is not None else days_of(month))]


def txn(txn_id: str, customer: str, txn_type: str, amount: str, *, day: str = "2025-06-10", mcc: str = "",
        fee: str = "") -> list[str]:
    return [txn_id, f"{customer}-acct", customer, day, txn_type, amount, "", mcc, fee]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def write_landing(root: Path, customers: list[str], balances: dict[str, list] | None = None,
                  transactions: dict[str, list] | None = None) -> Path:
    write_csv(root / "customers.csv", ["customer_id", "segment"], [[c, "retail"] for c in customers])
    for month, rows in (balances or {}).items():
        write_csv(root / "balances" / f"{month}.csv", BALANCE_HEADER, rows)
    for month, rows in (transactions or {}).items():
        write_csv(root / "transactions" / f"{month}.csv", TXN_HEADER, rows)
    return root


def ingest(con, landing: Path, programs: list[LoadedProgram], *sources: tuple[str, str]) -> dict:
    """A run's ingestion: a new Ingestor (as each run has), the reference files, then the given months."""
    ingestor = Ingestor(con, landing, landing.parent / "quarantine", VOCAB, programs)
    ingestor.ingest_all_reference()
    results = {(dataset, month): ingestor.ingest_month(dataset, Month.parse(month), "the test")
               for dataset, month in sources}
    for result in results.values():
        assert result.rows_quarantined == 0, result
    return results


# =============================================================================================
# 1. bohai_wealth, the third bank, through the real evaluate()
# =============================================================================================
def test_bohai_is_a_shipped_program_loaded_like_the_others():
    names = [p.name for p in load_programs()]
    assert set(names) >= {"icbc_star", "boc_vip", "bohai_wealth"}
    [loaded] = load_programs(["bohai_wealth"])
    assert loaded.version == BOHAI.version
    assert loaded.rules.tier_names == BOHAI_NAMES
    result = CliRunner().invoke(app, ["rules", "check"])
    assert result.exit_code == 0, result.stderr
    assert "bohai_wealth ok" in result.stdout


def test_bohai_buffers_three_month_ends_six_for_private_banking(book):
    months = month_range(Month(2025, 1), Month(2025, 8))
    m = {"feb": date(2025, 2, 28), "may": date(2025, 5, 31)}
    adb = {
        # diamond, then 100,000 (gold) for seven months: holds two month-ends, falls straight to gold
        "diamond": [2_000_000] + [100_000] * 7,
        # private banking, then 100,000: falls only at the sixth month-end below
        "private": [6_000_000] + [100_000] * 7,
        # below twice, meets once (the count restarts), below three times, then back
        "recover": [2_000_000, 100_000, 100_000, 2_000_000, 100_000, 100_000, 100_000, 2_000_000],
        # below at different depths: falls to what the third month earns (platinum), not to the lowest seen
        "slide": [2_000_000, 100_000, 0, 600_000, 600_000, 600_000, 600_000, 600_000],
        # gold at exactly 50,000, then a cent short on average: ordinary at the third month-end
        "gold": ["50000.00"] + ["49999.99"] * 7,
        # upgrades need no wait: every month-end that earns more moves up
        "climber": [0, 60_000, 2_000_000, 6_000_000, 6_000_000, 6_000_000, 6_000_000, 6_000_000],
    }
    # bohai has no floors and no caps: a held product and a credit event change nothing
    book.product("private", "private_banking_agreement", date(2020, 1, 1))
    book.event("diamond", "loan_loss", date(2024, 1, 1))

    results = book.run_adb(BOHAI, months, adb)

    cols = ("tier", "reason", "failed_reviews", "buffer_since", "computed_tier", "at_risk")
    assert story(results, "diamond", *cols) == [
        (3, "initial", 0, None, 3, False),
        (3, "buffer", 1, m["feb"], 1, True),
        (3, "buffer", 2, m["feb"], 1, True),
        (1, "downgrade", 0, None, 1, False),
    ] + [(1, "meets", 0, None, 1, False)] * 4
    assert story(results, "private", *cols) == (
        [(4, "initial", 0, None, 4, False)]
        + [(4, "buffer", n, m["feb"], 1, True) for n in range(1, 6)]
        + [(1, "downgrade", 0, None, 1, False), (1, "meets", 0, None, 1, False)]
    )
    assert story(results, "recover", "tier", "reason", "failed_reviews", "buffer_since") == [
        (3, "initial", 0, None), (3, "buffer", 1, m["feb"]), (3, "buffer", 2, m["feb"]),
        (3, "meets", 0, None),
        (3, "buffer", 1, m["may"]), (3, "buffer", 2, m["may"]), (1, "downgrade", 0, None),
        (3, "upgrade", 0, None),
    ]
    assert story(results, "slide", "tier", "reason", "computed_tier")[:5] == [
        (3, "initial", 3), (3, "buffer", 1), (3, "buffer", 0), (2, "downgrade", 2), (2, "meets", 2)]
    assert story(results, "gold", "tier", "reason", "computed_tier")[:5] == [
        (1, "initial", 1), (1, "buffer", 0), (1, "buffer", 0), (0, "downgrade", 0), (0, "meets", 0)]
    assert story(results, "climber", "tier", "reason", "previous_tier")[:5] == [
        (0, "initial", None), (1, "upgrade", 0), (3, "upgrade", 1), (4, "upgrade", 3), (4, "meets", 4)]

    for month, rows in zip(months, results):
        assert set(rows) == set(adb)
        for customer, row in rows.items():
            where = (customer, str(month))
            assert row["tier_name"] == BOHAI_NAMES[row["tier"]], where
            # no points, no floors, no caps
            assert (row["points"], row["floor_tier"], row["capped"]) == (None, None, False), where
            # every month-end is a review: the next one is the next month-end; effect from the 1st
            assert row["next_review"] == month.plus(1).last_day, where
            assert row["effective_from"] == month.plus(1).first_day, where
            assert row["rules_version"] == BOHAI.version, where
    assert book.columns == CONTRACT_COLUMNS + ["fig_financial_assets"]  # no pts_ columns


@pytest.mark.parametrize("evaluated", ["2025-07", "2024-02", "2025-02"])  # 31, 29 and 28 days
def test_bohai_thresholds_are_exact_average_daily_balances_of_the_month(tmp_path, book, evaluated):
    """Daily landing rows through the real Ingestor; the average divides by the days of the month."""
    month = Month.parse(evaluated)
    before = month.plus(-1)
    days = month.days
    odd_day = [month.first_day + timedelta(days=16)]
    hair = daily("hair", "fund", month, "50000.00")
    hair[9][4] = "49999.99"  # one day a cent short: the month's average is 50,000 - 0.01/days
    rows = {
        "at": daily("at", "fund", month, "50000.00"),
        "below": daily("below", "fund", month, "49999.99"),
        "hair": hair,
        "split": daily("split", "demand_deposit", month, "20000.00") + daily("split", "time_deposit", month, "30000.00"),
        # 50,000 * days on one day (sparse balances: the other days count zero), and a cent less
        "one_day": daily("one_day", "gold", month, f"{50000 * days}.00", days=odd_day),
        "one_day_short": daily("one_day_short", "gold", month, f"{50000 * days - 1}.99", days=odd_day),
        "loan": daily("loan", "mortgage", month, "9000000.00"),  # a loan is no financial asset
        "card": daily("card", "credit_card_overdraft", month, "9000000.00"),
        "rich_before": [],  # only in the month before: the window is the evaluated month
        "platinum_at": daily("platinum_at", "wmp", month, "500000.00"),
        "platinum_short": daily("platinum_short", "wmp", month, "499999.99"),
        "diamond_at": daily("diamond_at", "insurance", month, "2000000.00"),
        "private_at": daily("private_at", "government_bond", month, "6000000.00"),
        "private_short": daily("private_short", "government_bond", month, "5999999.99"),
    }
    landing = write_landing(
        tmp_path / "landing", list(rows),
        balances={str(before): daily("rich_before", "fund", before, "10000000.00"),
                  str(month): [r for customer_rows in rows.values() for r in customer_rows]},
    )
    ingest(book.con, landing, [BOHAI], ("balances", str(before)), ("balances", str(month)))

    got = book.evaluate(BOHAI, month)

    assert {c: got[c]["computed_tier"] for c in rows} == {
        "at": 1, "below": 0, "hair": 0, "split": 1, "one_day": 1, "one_day_short": 0, "loan": 0, "card": 0,
        "rich_before": 0, "platinum_at": 2, "platinum_short": 1, "diamond_at": 3, "private_at": 4,
        "private_short": 3,
    }
    assert got["at"]["tier_name"] == "gold" and got["below"]["tier_name"] == "ordinary"
    assert all(row["reason"] == "initial" and row["tier"] == row["computed_tier"] for row in got.values())


# =============================================================================================
# 2. Schema variations, as rule files only
# =============================================================================================
# ICBC card spending that earns each tier (400 points per 10,000 CNY, 50 / 500 / 2,000 / 10,000 / 80,000).
ICBC_SPEND = {0: None, 1: "0.01", 3: "1250.00", 4: "12500.00", 5: "50000.00", 6: "250000.00", 7: "2000000.00"}


def test_one_step_falls_to_the_next_lower_tier_of_the_program(tmp_path, book):
    """icbc_star has no tier 2: one step below three-star is quasi-star (1)."""
    one_step = variant(tmp_path, "icbc_star", ("fall_to: earned", "fall_to: one_step"), program="icbc_one_step")
    assert one_step.rules.calendar.fall_to == "one_step"
    june = Month(2025, 6)  # a review month-end
    since = date(2024, 12, 31)
    # customer: (prev tier, prev failed reviews, earned tier) -> (one_step, earned): tier and reason
    cases = {
        "t3_to_0": ((3, 0, 0), (1, "downgrade"), (0, "downgrade")),
        "t4_to_0": ((4, 0, 0), (3, "downgrade"), (0, "downgrade")),
        "t4_to_3": ((4, 0, 3), (3, "downgrade"), (3, "downgrade")),
        "t5_first": ((5, 0, 0), (5, "buffer"), (5, "buffer")),
        "t5_second": ((5, 1, 0), (4, "downgrade"), (0, "downgrade")),
        "t6_third": ((6, 2, 1), (5, "downgrade"), (1, "downgrade")),
        "t7_fifth": ((7, 4, 0), (6, "downgrade"), (0, "downgrade")),
        "t7_to_6": ((7, 4, 6), (6, "downgrade"), (6, "downgrade")),
        "t1_to_0": ((1, 0, 0), (0, "downgrade"), (0, "downgrade")),
        "t6_meets": ((6, 2, 6), (6, "meets"), (6, "meets")),
    }
    book.customers(*cases, "floor7")
    for program in ("icbc_one_step", "icbc_star"):
        book.publish_prev(program, june.plus(-1), [
            {"customer_id": c, "tier": prev, "failed_reviews": failed, "buffer_since": since if failed else None}
            for c, ((prev, failed, _), _, _) in cases.items()
        ] + [{"customer_id": "floor7", "tier": 7, "failed_reviews": 4, "buffer_since": since}])
    for c, ((_, _, earned), _, _) in cases.items():
        if ICBC_SPEND[earned]:
            book.txn_sum("icbc_star", "card_spend", june, c, ICBC_SPEND[earned])
    # earned through a floor (wealth_card: 6) with nothing computed: one step is 6, never below the floor
    book.product("floor7", "wealth_card", date(2020, 1, 1))
    # the variant keeps the program's figures, but its transaction sums are stored under its own name
    book.con.execute("INSERT INTO txn_figure_month SELECT 'icbc_one_step', figure, month, customer_id, counted "
                     "FROM txn_figure_month WHERE program = 'icbc_star'")

    stepped = book.evaluate(one_step, june)
    straight = book.evaluate(ICBC, june)

    for c, ((_, _, earned), want_step, want_earned) in cases.items():
        assert stepped[c]["computed_tier"] == straight[c]["computed_tier"] == earned, c
        assert (stepped[c]["tier"], stepped[c]["reason"]) == want_step, c
        assert (straight[c]["tier"], straight[c]["reason"]) == want_earned, c
        assert stepped[c]["tier"] >= earned, c
        if want_step[1] == "downgrade":
            assert (stepped[c]["failed_reviews"], stepped[c]["buffer_since"]) == (0, None), c
            assert stepped[c]["at_risk"] == (earned < stepped[c]["tier"]), c
    assert stepped["t3_to_0"]["tier_name"] == "quasi-star"
    assert (stepped["floor7"]["floor_tier"], stepped["floor7"]["tier"], stepped["floor7"]["reason"]) == (6, 6, "downgrade")


def test_meeting_the_tier_keeps_the_buffer_when_the_setting_is_off(tmp_path, book):
    keep = variant(tmp_path, "bohai_wealth", ("meeting_tier_resets_buffer: true", "meeting_tier_resets_buffer: false"),
                   program="bohai_keep")
    months = month_range(Month(2025, 1), Month(2025, 5))
    feb, apr = date(2025, 2, 28), date(2025, 4, 30)
    adb = {
        "wobble": [2_000_000, 100_000, 2_000_000, 100_000, 100_000],
        "upgraded": [2_000_000, 100_000, 6_000_000, 100_000, 100_000],
    }
    kept = book.run_adb(keep, months, adb)
    shipped = book.run_adb(BOHAI, months, adb)

    cols = ("tier", "reason", "failed_reviews", "buffer_since", "at_risk")
    # the meeting month keeps the count and its start; the third failed review, counted across it, falls
    assert story(kept, "wobble", *cols) == [
        (3, "initial", 0, None, False), (3, "buffer", 1, feb, True), (3, "meets", 1, feb, False),
        (3, "buffer", 2, feb, True), (1, "downgrade", 0, None, False),
    ]
    # shipped (true): the meeting month clears it, the count starts again in April
    assert story(shipped, "wobble", *cols) == [
        (3, "initial", 0, None, False), (3, "buffer", 1, feb, True), (3, "meets", 0, None, False),
        (3, "buffer", 1, apr, True), (3, "buffer", 2, apr, True),
    ]
    # an upgrade clears the buffer either way
    assert story(kept, "upgraded", *cols)[2:] == [
        (4, "upgrade", 0, None, False), (4, "buffer", 1, apr, True), (4, "buffer", 2, apr, True)]


BOUND_VALUES = {  # customer: the July 2025 day-sum (31 days) whose average is compared with 50,000
    "short": D("1549999.99"),  # 50,000 - 0.01/31
    "cent_below": D("49999.99") * 31,
    "at": D("50000.00") * 31,
    "cent_above": D("50000.01") * 31,
    "over": D("1550000.01"),  # 50,000 + 0.01/31
}
COMPARE = {"at_least": Fraction.__ge__, "above": Fraction.__gt__, "at_most": Fraction.__le__, "below": Fraction.__lt__}


@pytest.mark.parametrize("bound", list(COMPARE))
def test_each_bound_is_exact_at_the_boundary(tmp_path, book, bound):
    loaded = bohai_with(tmp_path, f"bound_{bound}", tiers=(
        f"  - {{tier: 1, name: in, all_of: [{{measure: financial_assets, {bound}: 50000}}]}}\n"
        "  - {tier: 0, name: out}"))
    july = Month(2025, 7)
    book.customers(*BOUND_VALUES)
    for customer, day_sum in BOUND_VALUES.items():
        book.balance(july, customer, "fund", day_sum)

    got = book.evaluate(loaded, july)

    want = {c: int(COMPARE[bound](Fraction(s) / 31, Fraction(50000))) for c, s in BOUND_VALUES.items()}
    assert {c: got[c]["computed_tier"] for c in BOUND_VALUES} == want
    # the expectation is not trivial: each bound splits the five values differently
    assert sum(want.values()) == {"at_least": 3, "above": 2, "at_most": 3, "below": 2}[bound]
    assert want["at"] == (bound in ("at_least", "at_most"))


def test_upper_inclusive_bands_listed_from_the_top_with_above(tmp_path, book):
    """(500, 2000] is 'above 500' under a band 'above 2000'; an upper bound can also close a band."""
    loaded = bohai_with(tmp_path, "upper_inclusive", tiers=(
        "  - {tier: 3, name: high, all_of: [{measure: financial_assets, above: 2000}]}\n"
        "  - {tier: 2, name: mid, all_of: [{measure: financial_assets, above: 500}]}\n"
        "  - {tier: 1, name: dust, all_of: [{measure: financial_assets, above: 0}, {measure: financial_assets, below: 0.5}]}\n"
        "  - {tier: 0, name: low}"))
    july = Month(2025, 7)
    values = {"v500": "500.00", "v500_01": "500.01", "v2000": "2000.00", "v2000_01": "2000.01", "zero": "0",
              "v0_49": "0.49", "v0_50": "0.50", "v0_01": "0.01"}
    book.customers(*values)
    for customer, amount in values.items():
        book.adb(july, customer, amount)

    got = book.evaluate(loaded, july)

    assert {c: got[c]["tier_name"] for c in values} == {
        "v500": "low", "v500_01": "mid", "v2000": "mid", "v2000_01": "high", "zero": "low",
        "v0_49": "dust", "v0_50": "low", "v0_01": "dust",
    }


TWO_FIGURES = (
    "  financial_assets:\n    source: balances\n    basis: average_daily\n    window_months: 1\n"
    "    product_codes: [fund, time_deposit]\n"
    "  loans:\n    source: balances\n    basis: month_end\n    window_months: 1\n"
    "    product_codes: [mortgage]\n"
)


@pytest.mark.parametrize("kind", ["all_of", "any_of"])
def test_all_of_needs_every_condition_any_of_one(tmp_path, book, kind):
    loaded = bohai_with(tmp_path, f"bohai_{kind}", figures=TWO_FIGURES, tiers=(
        f"  - {{tier: 1, name: both, {kind}: [{{measure: financial_assets, at_least: 50000}}, "
        "{measure: loans, at_least: 100000}]}\n"
        "  - {tier: 0, name: none}"))
    july = Month(2025, 7)
    holdings = {  # (average daily financial assets, month-end mortgage)
        "both": ("50000.00", "100000.00"),
        "assets_only": ("50000.00", "99999.99"),
        "loans_only": ("49999.99", "100000.00"),
        "neither": ("49999.99", "99999.99"),
        "nothing": ("0", "0"),
    }
    book.customers(*holdings)
    for customer, (assets, loan) in holdings.items():
        book.adb(july, customer, assets)
        book.balance(july, customer, "mortgage", D(loan) * 31, loan)

    got = book.evaluate(loaded, july)

    want = {"all_of": {"both": 1, "assets_only": 0, "loans_only": 0, "neither": 0, "nothing": 0},
            "any_of": {"both": 1, "assets_only": 1, "loans_only": 1, "neither": 0, "nothing": 0}}[kind]
    assert {c: got[c]["computed_tier"] for c in holdings} == want


def test_risk_classes_and_month_end_basis_through_ingestion(tmp_path, book):
    loaded = bohai_with(tmp_path, "bohai_loans", figures=(
        "  good_loans:\n    source: balances\n    basis: month_end\n    window_months: 1\n"
        "    product_codes: [mortgage, consumer_loan]\n    risk_classes: [normal, special_mention]\n"
        "  all_loans:\n    source: balances\n    basis: month_end\n"
        "    product_codes: [mortgage, consumer_loan]\n"
    ), tiers=(
        "  - {tier: 2, name: good, all_of: [{measure: good_loans, at_least: 500000}]}\n"
        "  - {tier: 1, name: any, all_of: [{measure: all_loans, at_least: 500000}]}\n"
        "  - {tier: 0, name: none}"))
    june, july = Month(2025, 6), Month(2025, 7)
    last = [july.last_day]
    rows = {
        "normal": daily("normal", "mortgage", july, "500000.00", risk_class="normal"),
        "unclassed": daily("unclassed", "mortgage", july, "500000.00"),  # no risk_class: normal
        "special": daily("special", "consumer_loan", july, "500000.00", risk_class="special_mention"),
        "substandard": daily("substandard", "mortgage", july, "500000.00", risk_class="substandard"),
        "split": daily("split", "mortgage", july, "300000.00", days=last, risk_class="normal")
        + daily("split", "consumer_loan", july, "200000.00", days=last, risk_class="special_mention"),
        "split_bad": daily("split_bad", "mortgage", july, "300000.00", days=last)
        + daily("split_bad", "consumer_loan", july, "200000.00", days=last, risk_class="doubtful"),
        # a big average does not help a month-end figure: only July 31st counts
        "end_short": daily("end_short", "mortgage", july, "900000.00", days=days_of(july)[:-1])
        + daily("end_short", "mortgage", july, "499999.99", days=last, account="end_short-2"),
        "end_only": daily("end_only", "mortgage", july, "500000.00", days=last),
        "deposit": daily("deposit", "time_deposit", july, "9000000.00"),
        "last_month": [],
    }
    landing = write_landing(tmp_path / "landing", list(rows), balances={
        "2025-06": daily("last_month", "mortgage", june, "9000000.00"),
        "2025-07": [r for customer_rows in rows.values() for r in customer_rows],
    })
    ingest(book.con, landing, [loaded], ("balances", "2025-06"), ("balances", "2025-07"))

    got = book.evaluate(loaded, july)

    assert {c: got[c]["computed_tier"] for c in rows} == {
        "normal": 2, "unclassed": 2, "special": 2, "substandard": 1, "split": 2, "split_bad": 1,
        "end_short": 0, "end_only": 2, "deposit": 0, "last_month": 0,
    }


def test_transaction_figure_cap_fee_factor_and_exclusions_through_ingestion(tmp_path, book):
    figures = (
        "  capped:\n    source: transactions\n    window_months: 1\n    txn_types: [card_pos, remittance]\n"
        '    cap_per_transaction: "5000.00"\n    apply_fee_factor: false\n'
        '    exclude:\n      single_amount_above: "20000.00"\n      merchant_categories: ["8211", "4900"]\n'
        "  feed:\n    source: transactions\n    window_months: 1\n    txn_types: [card_pos, remittance]\n"
        "    apply_fee_factor: true\n"
    )
    loaded = bohai_with(tmp_path, "bohai_spend", figures=figures, tiers=(
        "  - {tier: 1, name: spender, all_of: [{measure: capped, at_least: 10000}]}\n"
        "  - {tier: 0, name: none}"))
    june = Month(2025, 6)
    transactions = [
        txn("a1", "exact", "card_pos", "8000.00", fee="0.5", mcc="5411"),  # capped 5,000.00, no fee factor
        txn("a2", "exact", "remittance", "20000.00"),  # at the exclusion limit: counts, capped 5,000.00
        txn("b1", "short", "card_pos", "20000.00"),  # 5,000.00
        txn("b2", "short", "card_pos", "4999.99", fee="0.3"),  # 4,999.99
        txn("b3", "short", "card_pos", "20000.01"),  # above the limit: left out
        txn("b4", "short", "card_pos", "3000.00", mcc="8211"),  # excluded merchant
        txn("b5", "short", "card_pos", "3000.00", mcc="4900"),  # excluded merchant
        txn("b6", "short", "transfer", "9000.00"),  # not a listed type
        txn("c1", "half_up", "card_pos", "3000.11", fee="0.5"),  # feed: 1500.055 -> 1500.06
        txn("d1", "last_day", "card_pos", "9000.00", day="2025-06-30"),
    ]
    landing = write_landing(tmp_path / "landing", ["exact", "short", "half_up", "last_day", "none"],
                            transactions={"2025-06": transactions})
    ingest(book.con, landing, [loaded], ("transactions", "2025-06"))

    stored = {(f, c): v for f, c, v in book.con.execute(
        "SELECT figure, customer_id, counted FROM txn_figure_month WHERE program = 'bohai_spend'").fetchall()}
    assert stored == {
        ("capped", "exact"): D("10000.00"), ("capped", "short"): D("9999.99"), ("capped", "half_up"): D("3000.11"),
        ("capped", "last_day"): D("5000.00"),
        # feed: no cap, the fee factor, no exclusions: 20,000 + 1,500.00 (1,499.997) + 20,000.01 + 3,000 + 3,000
        ("feed", "exact"): D("24000.00"), ("feed", "short"): D("47500.01"),
        ("feed", "half_up"): D("1500.06"), ("feed", "last_day"): D("9000.00"),
    }

    got = book.evaluate(loaded, june)

    assert {c: got[c]["computed_tier"] for c in got} == {"exact": 1, "short": 0, "half_up": 0, "last_day": 0,
                                                         "none": 0}


def test_review_months_move_the_reviews_next_review_and_effective_day(tmp_path, book):
    loaded = variant(tmp_path, "bohai_wealth", ("reviews: every_month_end", "reviews: {months: [3, 9]}"),
                     ("failed_reviews_default: 3", "failed_reviews_default: 2"),
                     ("effective_day: 1 ", "effective_day: 15 "), program="bohai_spring_autumn")
    months = month_range(Month(2025, 1), Month(2025, 9))
    mar = date(2025, 3, 31)
    adb = {
        "diamond": [2_000_000] + [100_000] * 8,
        "private": [6_000_000] + [100_000] * 8,
        "climber": [0, 2_000_000] + [2_000_000] * 7,
    }
    results = book.run_adb(loaded, months, adb)

    held = "held_until_review"
    cols = ("tier", "reason", "failed_reviews", "buffer_since")
    assert story(results, "diamond", *cols) == (
        [(3, "initial", 0, None), (3, held, 0, None), (3, "buffer", 1, mar)] + [(3, held, 1, mar)] * 5
        + [(1, "downgrade", 0, None)])
    assert story(results, "private", *cols)[-1] == (4, "buffer", 2, mar)  # private banking still needs 6
    assert story(results, "climber", "tier", "reason")[:2] == [(0, "initial"), (3, "upgrade")]  # any month-end
    for month, rows in zip(months, results):
        want_review = date(2025, 3, 31) if month.month < 3 else date(2025, 9, 30) if month.month < 9 else date(2026, 3, 31)
        assert {r["next_review"] for r in rows.values()} == {want_review}, month
        assert {r["effective_from"] for r in rows.values()} == {month.plus(1).first_day.replace(day=15)}, month
        assert {r["rules_version"] for r in rows.values()} == {loaded.version}


@pytest.mark.parametrize("day", [1, 5, 28])
def test_effective_day_across_the_year_end(tmp_path, book, day):
    loaded = variant(tmp_path, "bohai_wealth", ("reviews: every_month_end", "reviews: {months: [3, 9]}"),
                     ("effective_day: 1 ", f"effective_day: {day} "), program="bohai_december")
    book.customers("c1")
    got = book.evaluate(loaded, Month(2025, 12))
    assert (got["c1"]["effective_from"], got["c1"]["next_review"]) == (date(2026, 1, day), date(2026, 3, 31))


def test_decimal_rates_and_per_amount_stay_exact(tmp_path, book):
    """rates 0.5 and 0.1 (YAML floats) per 10,000: points = deposits / 20,000 + funds / 100,000, cut to the cent."""
    loaded = bohai_with(tmp_path, "bohai_points", figures=(
        "  deposits:\n    source: balances\n    basis: average_daily\n    window_months: 1\n"
        "    product_codes: [demand_deposit]\n"
        "  funds:\n    source: balances\n    basis: average_daily\n    window_months: 1\n"
        "    product_codes: [fund]\n"
    ), points="points:\n  per_amount: 10000\n  rates: {deposits: 0.5, funds: 0.1}\n\n", tiers=(
        "  - {tier: 2, name: two, all_of: [{measure: points, at_least: 2.5}]}\n"
        "  - {tier: 1, name: some, all_of: [{measure: points, above: 0}]}\n"
        "  - {tier: 0, name: none}"))
    assert loaded.rules.points.rates == {"deposits": D("0.5"), "funds": D("0.1")}
    july = Month(2025, 7)
    day_sums = {  # customer: (deposit day-sum, fund day-sum) over July's 31 days
        "dep_50k": (D("50000.00") * 31, 0),
        "dep_short": (D("49999.99") * 31, 0),
        "dep_hair": (D("1549999.99"), 0),  # 2.5 - 0.0000000161...
        "mix": (D("25000.00") * 31, D("125000.00") * 31),  # 1.25 + 1.25
        "fund_hair": (0, D("7750000.00") - D("0.01")),  # 2.5 - 0.0000000032...
        "small": (D("199.99") * 31, D("999.99") * 31),  # 0.0099995 + 0.0099999: components 0.00, total 0.01
        "odd": (D("1234567.89"), D("7654321.01")),
        "nothing": (0, 0),
    }
    book.customers(*day_sums)
    for customer, (deposits, funds) in day_sums.items():
        if deposits:
            book.balance(july, customer, "demand_deposit", deposits)
        if funds:
            book.balance(july, customer, "fund", funds)

    got = book.evaluate(loaded, july)

    assert book.columns == CONTRACT_COLUMNS + ["pts_deposits", "pts_funds", "fig_deposits", "fig_funds"]
    for customer, (deposits, funds) in day_sums.items():
        pts_deposits = Fraction(1, 2) * Fraction(deposits) / 31 / 10000
        pts_funds = Fraction(1, 10) * Fraction(funds) / 31 / 10000
        total = pts_deposits + pts_funds
        row = got[customer]
        assert (row["points"], row["pts_deposits"], row["pts_funds"]) == (cut(total), cut(pts_deposits), cut(pts_funds)), customer
        assert row["computed_tier"] == (2 if total >= Fraction(5, 2) else 1 if total > 0 else 0), customer
    assert {c: (got[c]["points"], got[c]["computed_tier"]) for c in ("dep_50k", "dep_short", "dep_hair", "mix",
                                                                        "fund_hair", "small", "nothing")} == {
        "dep_50k": (D("2.50"), 2), "dep_short": (D("2.49"), 1), "dep_hair": (D("2.49"), 1), "mix": (D("2.50"), 2),
        "fund_hair": (D("2.49"), 1), "small": (D("0.01"), 1), "nothing": (D("0.00"), 0),
    }
    assert (got["small"]["pts_deposits"], got["small"]["pts_funds"]) == (D("0.00"), D("0.00"))


# =============================================================================================
# 3. Malformed rule files: the file, the key as written, what was expected
# =============================================================================================
SWAPPED_BANDS = (
    "  - {tier: 3, name: diamond, label: 钻石, all_of: [{measure: financial_assets, at_least: 2000000}]}\n"
    "  - {tier: 2, name: platinum, label: 白金, all_of: [{measure: financial_assets, at_least: 500000}]}\n",
    "  - {tier: 2, name: platinum, label: 白金, all_of: [{measure: financial_assets, at_least: 500000}]}\n"
    "  - {tier: 3, name: diamond, label: 钻石, all_of: [{measure: financial_assets, at_least: 2000000}]}\n",
)
MALFORMED = {
    # unknown codes (vocabularies.yaml), other than the product code / floor product of test_cli_errors.py
    "unknown_txn_type": ("boc_vip", ("txn_types: [card_pos]", "txn_types: [card_swipe]"),
                         ["figures.card_spending.txn_types", "'card_swipe'", "not in the vocabulary", "card_pos"]),
    "unknown_risk_class": ("boc_vip", ("risk_classes: [normal]", "risk_classes: [normal, junk]"),
                           ["figures.normal_loans.risk_classes", "'junk'", "not in the vocabulary", "special_mention"]),
    "unknown_credit_event": ("icbc_star", ("events: [loan_loss,", "events: [loan_lost,"),
                             ["caps.events", "'loan_lost'", "not in the vocabulary", "loan_loss"]),
    # bands
    "bands_not_high_to_low": ("bohai_wealth", SWAPPED_BANDS, ["tiers", "from the highest tier down"]),
    "tier_twice": ("bohai_wealth", ("{tier: 3, name: diamond", "{tier: 1, name: diamond"),
                   ["tiers", "each tier appears once"]),
    "fallback_with_conditions": ("bohai_wealth", ("{tier: 0, name: ordinary, label: 普通}",
                                                  "{tier: 0, name: ordinary, all_of: [{measure: financial_assets, at_least: 0}]}"),
                                 ["tiers", "the last band is the fallback and has no conditions"]),
    "band_without_conditions": ("bohai_wealth", ("{tier: 2, name: platinum, label: 白金, all_of: [{measure: financial_assets, at_least: 500000}]}",
                                                 "{tier: 2, name: platinum}"),
                                ["tiers", "only the last band may have no conditions"]),
    "both_all_of_and_any_of": ("bohai_wealth", ("at_least: 500000}]}", "at_least: 500000}], any_of: [{measure: financial_assets, at_least: 1}]}"),
                               ["tiers.2", "all_of or any_of, not both"]),
    # conditions
    "two_bounds": ("bohai_wealth", ("at_least: 500000}", "at_least: 500000, below: 2000000}"),
                   ["tiers.2.all_of.0", "exactly one of at_least, above, at_most, below"]),
    "no_bound": ("bohai_wealth", ("{measure: financial_assets, at_least: 500000}", "{measure: financial_assets}"),
                 ["tiers.2.all_of.0", "exactly one of at_least, above, at_most, below"]),
    "measure_not_a_figure": ("bohai_wealth", ("{measure: financial_assets, at_least: 500000}",
                                              "{measure: financial_asset, at_least: 500000}"),
                             ["tiers", "tier 2 compares 'financial_asset'", "not one of ['financial_assets']"]),
    "points_without_points": ("bohai_wealth", ("{measure: financial_assets, at_least: 50000}", "{measure: points, above: 0}"),
                              ["tiers", "tier 1 compares 'points'", "not one of ['financial_assets']"]),
    "rate_of_no_figure": ("icbc_star", ("    card_spend: 400\n", "    card_spend: 400\n    cards: 5\n"),
                          ["points.rates", "['cards'] are not figures"]),
    # keys and settings
    "unknown_top_level_key": ("bohai_wealth", ("title: Bohai", "titel: x\ntitle: Bohai"),
                              ["titel", "Extra inputs are not permitted"]),
    "unknown_calendar_key": ("bohai_wealth", ("fall_to: earned", "fall_too: earned"),
                             ["calendar.fall_too", "Extra inputs are not permitted"]),
    "month_end_over_six_months": ("boc_vip", ("basis: month_end\n    window_months: 1", "basis: month_end\n    window_months: 6"),
                                  ["figures.normal_loans", "window_months must be 1"]),
    "floor_not_a_tier": ("icbc_star", ("  wealth_card: 6", "  wealth_card: 2"),
                         ["floors.wealth_card", "tier 2 is not one of the program's tiers"]),
    "cap_not_a_tier": ("icbc_star", ("  tier: 1\n\ncalendar", "  tier: 2\n\ncalendar"),
                       ["caps.tier", "tier 2 is not one of the program's tiers"]),
    "buffer_of_no_tier": ("bohai_wealth", ("{4: 6}", "{5: 6}"),
                          ["calendar.failed_reviews_to_fall", "tier 5 is not one of the program's tiers"]),
    "fall_to_unknown": ("bohai_wealth", ("fall_to: earned", "fall_to: two_steps"),
                        ["calendar.fall_to", "'earned' or 'one_step'", "'two_steps'"]),
    "effective_day_31": ("bohai_wealth", ("effective_day: 1 ", "effective_day: 31 "),
                         ["calendar.effective_day", "less than or equal to 28", "31"]),
    "merchant_category_3_digits": ("boc_vip", ('"4900",', '"490",'),
                                   ["figures.card_spending.exclude.merchant_categories.0", "'490'"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_rule_file_names_the_file_the_key_and_the_expectation(tmp_path, case):
    base, edit, expected = MALFORMED[case]
    path = write_variant(tmp_path, base, edit)

    with pytest.raises(RuleError) as raised:
        load_program(path)

    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, (fragment, message)

    checked = CliRunner().invoke(app, ["rules", "check", str(path)])
    assert checked.exit_code == 1
    assert checked.stderr.strip().splitlines() == [f"error: {message}"]
    assert "Traceback" not in checked.stdout + checked.stderr


@pytest.mark.parametrize("case, edit, key, tag", [
    ("month_end_over_six_months", ("basis: month_end\n    window_months: 1", "basis: month_end\n    window_months: 6"),
     "figures.normal_loans", "balances"),
    ("review_month_13", ("reviews: every_month_end", "reviews: {months: [3, 13]}"), "calendar.reviews.months",
     "literal"),
])
def test_union_errors_name_the_key_as_written(tmp_path, case, edit, key, tag):
    base = "boc_vip" if case.startswith("month_end") else "bohai_wealth"
    path = write_variant(tmp_path, base, edit)
    with pytest.raises(RuleError) as raised:
        load_program(path)
    message = str(raised.value)
    assert f"{path}: {key}: " in message, message
    assert f"{key}.{tag}" not in message, message


def test_a_new_rule_file_in_the_rules_folder_is_a_new_program(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for name in ("icbc_star", "boc_vip", "bohai_wealth"):
        shutil.copy(RULES_DIR / f"{name}.yaml", rules_dir)
    (rules_dir / "acme_bank.yaml").write_text(variant_text("bohai_wealth", program="acme_bank"), encoding="utf-8")

    loaded = load_programs(rules_dir=rules_dir)

    assert [p.name for p in loaded] == ["acme_bank", "boc_vip", "bohai_wealth", "icbc_star"]
    assert [p.name for p in load_programs(["acme_bank", "icbc_star"], rules_dir=rules_dir)] == ["acme_bank", "icbc_star"]
    # a file must be named after its program
    (rules_dir / "acme_bank.yaml").rename(rules_dir / "acme.yaml")
    with pytest.raises(RuleError) as raised:
        load_programs(rules_dir=rules_dir)
    assert str(rules_dir / "acme.yaml") in str(raised.value) and "'acme_bank'" in str(raised.value)


# =============================================================================================
# 4. Versioned rules
# =============================================================================================
def test_rules_version_is_the_fingerprint_of_the_file_bytes(tmp_path):
    original = (RULES_DIR / "bohai_wealth.yaml").read_bytes()
    copy = tmp_path / "a" / "bohai_wealth.yaml"
    copy.parent.mkdir()
    copy.write_bytes(original)
    assert BOHAI.version == "sha256:" + hashlib.sha256(original).hexdigest()[:16]
    assert load_program(copy).version == BOHAI.version  # equal bytes, equal version, wherever the file is

    copy.write_bytes(original + b"# a comment\n")  # the same rules, other bytes
    commented = load_program(copy)
    assert commented.rules == BOHAI.rules
    assert commented.version != BOHAI.version

    copy.write_bytes(original)
    assert load_program(copy).version == BOHAI.version
    assert len({ICBC.version, BOHAI.version, load_program(RULES_DIR / "boc_vip.yaml").version}) == 3


def test_a_rule_change_re_evaluates_a_published_month_with_the_new_version(tmp_path, book):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rule_file = rules_dir / "bohai_wealth.yaml"
    shutil.copy(RULES_DIR / "bohai_wealth.yaml", rule_file)
    [v1] = load_programs(["bohai_wealth"], rules_dir=rules_dir)
    jan, feb = Month(2025, 1), Month(2025, 2)
    adb = {"gold55": [55_000, 55_000], "plat": [600_000, 600_000], "low": [1_000, 1_000]}
    first = book.run_adb(v1, [jan, feb], adb)
    assert {r["rules_version"] for rows in first for r in rows.values()} == {v1.version}
    assert [first[1][c]["tier"] for c in adb] == [1, 2, 0]

    # the bank raises gold to 60,000 and drops the buffer: a new file, a new version, new tiers
    rule_file.write_text(variant_text("bohai_wealth", ("at_least: 50000}", "at_least: 60000}"),
                                      ("failed_reviews_default: 3", "failed_reviews_default: 1")), encoding="utf-8")
    [v2] = load_programs(["bohai_wealth"], rules_dir=rules_dir)
    assert v2.version != v1.version

    again = book.evaluate(v2, feb)

    assert {r["rules_version"] for r in again.values()} == {v2.version}
    assert (again["gold55"]["computed_tier"], again["gold55"]["tier"], again["gold55"]["reason"]) == (0, 0, "downgrade")
    assert (again["plat"]["tier"], again["plat"]["reason"]) == (2, "meets")
    assert again["gold55"]["previous_tier"] == 1  # January, published under v1, is last month's state
    jan_rows = pq.read_table(snapshots.snapshot_path(book.warehouse, "bohai_wealth", jan)).to_pylist()
    assert {r["rules_version"] for r in jan_rows} == {v1.version}


def test_a_customer_held_at_a_tier_the_new_rules_removed_is_not_dropped(tmp_path, book):
    diamond = ("  - {tier: 3, name: diamond, label: 钻石, all_of: [{measure: financial_assets, at_least: 2000000}]}\n", "")
    no_diamond = variant(tmp_path, "bohai_wealth", diamond)
    jan, feb = Month(2025, 1), Month(2025, 2)
    book.run_adb(BOHAI, [jan], {"held": [2_000_000], "plain": [60_000]})
    book.adb(feb, "held", 100_000)
    book.adb(feb, "plain", 60_000)

    try:
        result = evaluate(book.con, book.warehouse, no_diamond, VOCAB, feb)
    except TiersError:
        return  # refusing the evaluation with a plain message would be fine too
    published = {r["customer_id"] for r in pq.read_table(result.path).to_pylist()}
    assert published == {"held", "plain"}


def test_ingestion_re_reads_transactions_only_when_transaction_rules_change(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rule_file = rules_dir / "boc_vip.yaml"
    june = Month(2025, 6)
    landing = write_landing(
        tmp_path / "landing", ["spender"],
        balances={"2025-06": daily("spender", "fund", june, "1000.00")},
        transactions={"2025-06": [txn("t1", "spender", "card_pos", "150000.00"),
                                  txn("t2", "spender", "card_pos", "60000.00")]},
    )
    warehouse = Warehouse(tmp_path / "warehouse")
    months = (("balances", "2025-06"), ("transactions", "2025-06"))

    def run(text: str, *extra: LoadedProgram) -> tuple[bool, bool, Decimal]:
        """A new run after writing the rule file: (balances read?, transactions read?, counted card spending)."""
        rule_file.write_text(text, encoding="utf-8")
        programs = load_programs(rules_dir=rules_dir) + list(extra)
        with runner.connect(warehouse) as con:
            results = ingest(con, landing, programs, *months)
            [(spent,)] = con.execute("SELECT counted FROM txn_figure_month WHERE program = 'boc_vip' "
                                     "AND figure = 'card_spending'").fetchall()
        return results[months[0]].read_now, results[months[1]].read_now, spent

    shipped = variant_text("boc_vip")
    assert run(shipped) == (True, True, D("60000.00"))  # the 150,000 purchase is above the single limit
    assert run(shipped) == (False, False, D("60000.00"))
    # balance figures do not shape stored sums: nothing is read again
    balance_edit = variant_text("boc_vip", ("product_codes: [mortgage, consumer_loan, business_loan]",
                                            "product_codes: [mortgage, consumer_loan]"))
    assert run(balance_edit) == (False, False, D("60000.00"))
    # nor does a comment, or the window (the months summed), though each is a new rules_version
    assert run(balance_edit + "# reviewed\n") == (False, False, D("60000.00"))
    window_edit = variant_text("boc_vip", ("window_months: 12", "window_months: 6"))
    assert run(window_edit) == (False, False, D("60000.00"))
    # a transaction rule does: the month is read again and counted under the new rule
    limit_edit = variant_text("boc_vip", ('single_amount_above: "100000.00"', 'single_amount_above: "200000.00"'))
    assert run(limit_edit) == (False, True, D("210000.00"))
    assert run(limit_edit) == (False, False, D("210000.00"))
    # a new bank without transaction figures changes no stored sum; one with them re-reads the month once
    assert run(limit_edit, BOHAI) == (False, False, D("210000.00"))
    assert run(limit_edit, BOHAI, ICBC) == (False, True, D("210000.00"))
    assert run(limit_edit, BOHAI, ICBC) == (False, False, D("210000.00"))


# =============================================================================================
# 5. Every program in one run
# =============================================================================================
BOC_TRACKS = GOLDEN / "boc_tracks" / "landing"
# boc_tracks is an all-CNY bank without card data: the CGB and UBS standards do not apply to it.
APPLYING = {"icbc_star", "boc_vip", "bohai_wealth", "private_banking_cbrc", "private_banking_8m"}
NOT_APPLYING = {"cgb_card_star", "private_banking_ubs"}
ALL_PROGRAMS = APPLYING | NOT_APPLYING


def test_plan_of_every_shipped_program_ingests_each_dataset_month_once(tmp_path):
    programs = load_programs()
    assert {p.name for p in programs} == ALL_PROGRAMS
    jul, aug = Month(2025, 7), Month(2025, 8)

    plan = plan_run(BOC_TRACKS, Warehouse(tmp_path / "warehouse"), programs, jul, aug, programs_named=False)

    assert {note.split(":")[0] for note in plan.skipped} == NOT_APPLYING
    assert [m for m, _ in plan.evaluations] == [jul] * 5 + [aug] * 5
    assert {name for m, name in plan.evaluations if m == jul} == APPLYING
    assert {name for m, name in plan.evaluations if m == aug} == APPLYING
    wanted = [(dataset, str(month)) for dataset, month, _ in plan.ingest]
    assert len(wanted) == len(set(wanted))
    # icbc_star: six months of both; boc_vip: twelve months of transactions; bohai_wealth: the month's balances
    assert set(wanted) == (
        {("balances", str(m)) for m in month_range(Month(2025, 2), aug)}
        | {("transactions", str(m)) for m in month_range(Month(2024, 8), aug)}
    )


def test_backfill_of_every_program_shares_one_ingestion(prefect_harness, tmp_path):
    from flows.runs import backfill

    landing = tmp_path / "landing"
    shutil.copytree(BOC_TRACKS, landing)
    warehouse = tmp_path / "warehouse"

    result = backfill.fn(str(landing), "2025-07", "2025-08", str(warehouse))

    assert {note.split(":")[0] for note in result["skipped"]} == NOT_APPLYING
    assert sorted((e.month, e.program) for e in result["evaluated"]) == sorted(
        (m, p) for m in ("2025-07", "2025-08") for p in APPLYING)
    ingested = [(i.dataset, i.month) for i in result["ingested"]]
    assert len(ingested) == len(set(ingested)), "a dataset-month was ingested twice"
    months = {(d, m) for d, m in ingested if m is not None}
    assert months == ({("balances", str(m)) for m in month_range(Month(2025, 2), Month(2025, 8))}
                      | {("transactions", str(m)) for m in month_range(Month(2024, 8), Month(2025, 8))})
    assert all(i.read_now for i in result["ingested"] if i.month is not None)

    versions = {p.name: p.version for p in load_programs()}
    customers = {"assets", "loan", "spender", "big-ticket", "private", "fortune"}
    rows = {}
    for program in APPLYING:
        for month in (Month(2025, 7), Month(2025, 8)):
            path = snapshots.snapshot_path(Warehouse(warehouse), program, month)
            rows[program, str(month)] = {r["customer_id"]: r for r in pq.read_table(path).to_pylist()}
            assert set(rows[program, str(month)]) == customers, (program, month)
            assert {r["rules_version"] for r in rows[program, str(month)].values()} == {versions[program]}

    def tiers(program, month):
        return {c: (r["tier"], r["tier_name"]) for c, r in rows[program, month].items()}

    # the same balances, three schemes
    assert tiers("bohai_wealth", "2025-07") == {
        "assets": (1, "gold"), "loan": (0, "ordinary"), "spender": (0, "ordinary"), "big-ticket": (0, "ordinary"),
        "private": (4, "private-banking"), "fortune": (2, "platinum")}
    assert tiers("bohai_wealth", "2025-08") == tiers("bohai_wealth", "2025-07")
    assert {r["reason"] for r in rows["bohai_wealth", "2025-08"].values()} == {"meets"}
    assert tiers("boc_vip", "2025-07") == {
        "assets": (1, "wealth"), "loan": (0, "ordinary"), "spender": (1, "wealth"), "big-ticket": (1, "wealth"),
        "private": (3, "private-banking"), "fortune": (2, "fortune")}
    big = rows["boc_vip", "2025-08"]["big-ticket"]
    assert (big["computed_tier"], big["tier"], big["reason"], big["failed_reviews"]) == (0, 1, "buffer", 1)
    assert rows["icbc_star", "2025-08"]["private"]["points"] is not None
    assert rows["bohai_wealth", "2025-08"]["private"]["points"] is None
    # 6,000,000 of funds a day: private banking at the regulator's net floor, not at 8,000,000 gross;
    # the loan customer's mortgage is not deducted from anything (it holds no financial assets).
    assert {c for c, (tier, _) in tiers("private_banking_cbrc", "2025-07").items() if tier} == {"private"}
    assert {c for c, (tier, _) in tiers("private_banking_8m", "2025-07").items() if tier} == set()
