"""The tier state machine (programs.md section 3) through the real SQL.

Every test drives ``transforms.evaluate.evaluate`` (figure_measures -> tier_decisions -> snapshot)
month after month on an in-memory DuckDB: the month's figures are written as the stored monthly sums
the evaluation reads (txn_figure_month, balance_month), floors and caps as held_products and
credit_events rows, and each month's ``prev`` is the snapshot the previous evaluation published.

The Hypothesis tests generate many customers per example (one evaluation serves them all) and check
properties of the published rows: a tier falls only at a review month-end or under a cap, exactly at
the k-th consecutive failed review; more figures never earn a lower tier; a cap is never exceeded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.loader import RULES_DIR, load_program, load_vocabularies
from rules.states import REASONS
from stores import snapshots
from ground.checksums import sha256_file
from ground.months import Month, month_range
from stores.warehouse import Warehouse
from transforms import runner
from transforms.evaluate import evaluate

VOCAB = load_vocabularies()
ICBC = load_program(RULES_DIR / "icbc_star.yaml", VOCAB)
BOC = load_program(RULES_DIR / "boc_vip.yaml", VOCAB)

# The calendar of programs.md, written out here on purpose (not read from the rule files).
ICBC_REVIEW_MONTHS = {6, 12}
ICBC_K = {7: 5, 6: 3, 5: 2}  # every other tier: 1
ICBC_CAP_TIER = 1
BOC_K = 6
ICBC_FLOOR_PRODUCTS = {4: "credit_card_standard", 5: "credit_card_gold", 6: "wealth_card",
                       7: "private_banking_agreement"}

# ICBC card spending counted in the month, in cents, per computed tier: 400 points per 10,000 CNY, so
# the thresholds 50 / 500 / 2,000 / 10,000 / 80,000 points are 1,250 / 12,500 / 50,000 / 250,000 /
# 2,000,000 CNY.
ICBC_SPEND_BANDS = {
    0: (0, 0),
    1: (1, 124_999),
    3: (125_000, 1_249_999),
    4: (1_250_000, 4_999_999),
    5: (5_000_000, 24_999_999),
    6: (25_000_000, 199_999_999),
    7: (200_000_000, 900_000_000),
}
# BOC monthly average daily financial assets, in cents, per computed tier (200,000 / 1e6 / 6e6 CNY).
BOC_ADB_BANDS = {
    0: (0, 19_999_999),
    1: (20_000_000, 99_999_999),
    2: (100_000_000, 599_999_999),
    3: (600_000_000, 3_000_000_000),
}

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def icbc_k(tier: int) -> int:
    return ICBC_K.get(tier, 1)


def cents(value: int) -> str:
    return f"{value // 100}.{value % 100:02d}"


# ---------------------------------------------------------------------------------------------
# Harness: one in-memory warehouse, evaluated month after month with the real SQL
# ---------------------------------------------------------------------------------------------
def _forget_prev_snapshot(con: duckdb.DuckDBPyConnection) -> None:
    """evaluate() makes prev_snapshot a view (initial month) or a table (later months) and cannot replace
    one kind with the other on the same connection (see test_evaluate_reuses_one_connection_across_months);
    the flows open a connection per evaluation, so here we drop it between months."""
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = 'prev_snapshot'"
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} prev_snapshot")


class Chain:
    def __init__(self, loaded, root: Path):
        self.loaded = loaded
        self.con = duckdb.connect()
        runner.run(self.con, "warehouse_schema")
        self.warehouse = Warehouse(root)

    def close(self) -> None:
        self.con.close()

    def customers(self, ids) -> None:
        self.con.executemany("INSERT INTO customers VALUES (?, NULL)", [[i] for i in ids])

    def product(self, customer: str, code: str, opened: date, closed: date | None) -> None:
        self.con.execute("INSERT INTO held_products VALUES (?, ?, ?, ?)", [customer, code, opened, closed])

    def event(self, customer: str, code: str, started: date, cured: date | None) -> None:
        self.con.execute("INSERT INTO credit_events VALUES (?, ?, ?, ?)", [customer, code, started, cured])

    def icbc_spend(self, month: Month, spend: dict[str, int]) -> None:
        """This month's ICBC card spending, the only counted amount in the window: points = 0.04 * spend."""
        self.con.execute("DELETE FROM txn_figure_month")
        rows = [["icbc_star", "card_spend", month.first_day, c, cents(v)] for c, v in spend.items() if v]
        if rows:
            self.con.executemany("INSERT INTO txn_figure_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)))", rows)

    def boc_assets(self, month: Month, day_sums: dict[str, int]) -> None:
        """This month's summed daily financial assets (BOC averages over the month only)."""
        rows = [[month.first_day, c, "fund", "normal", cents(v), cents(v // month.days)]
                for c, v in day_sums.items() if v]
        if rows:
            self.con.executemany(
                "INSERT INTO balance_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)), CAST(? AS DECIMAL(38, 2)), false)",
                rows,
            )

    def evaluate(self, month: Month) -> dict[str, dict]:
        _forget_prev_snapshot(self.con)
        result = evaluate(self.con, self.warehouse, self.loaded, VOCAB, month)
        return {row["customer_id"]: row for row in pq.read_table(result.path).to_pylist()}

    def publish_prev(self, month: Month, rows: list[dict]) -> None:
        """A hand-made snapshot for ``month`` (the state columns the next evaluation reads)."""
        table = pa.Table.from_pylist(rows, schema=pa.schema(
            [("customer_id", pa.string()), ("tier", pa.int32()), ("failed_reviews", pa.int32()),
             ("buffer_since", pa.date32())]))
        target = snapshots.snapshot_path(self.warehouse, self.loaded.name, month)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        # As a run publishes it: the manifest names the file's SHA-256, which the next evaluation checks.
        snapshots.write_manifest(snapshots.manifest_path(self.warehouse, self.loaded.name, month),
                                 {"snapshot": {"sha256": sha256_file(target)}})


@pytest.fixture
def tmp_chain(tmp_path):
    chains = []

    def make(loaded):
        chain = Chain(loaded, tmp_path / f"warehouse{len(chains)}")
        chains.append(chain)
        return chain

    yield make
    for chain in chains:
        chain.close()


def intervals(flags: list, months: list[Month]):
    """Runs of equal non-None values: (value, first day of the run, first day after the run)."""
    runs, start = [], None
    for i, value in enumerate(flags + [None]):
        if start is not None and (i == len(flags) or value != flags[start]):
            runs.append((flags[start], months[start].first_day, months[i - 1].plus(1).first_day))
            start = None
        if i < len(flags) and value is not None and start is None:
            start = i
    return runs


# ---------------------------------------------------------------------------------------------
# Checking a chain of published months against the properties of section 3
# ---------------------------------------------------------------------------------------------
def earned_of(row: dict) -> int:
    return max(row["computed_tier"], row["floor_tier"] or 0)


def check_chain(months: list[Month], results: list[dict[str, dict]], *, is_review, k, cap_tier) -> dict:
    """Assert the properties on every customer-month; returns counts of what was exercised.

    The consecutive failed reviews are counted from the published rows alone: a failed review is a
    review month-end, without a cap, whose earned tier (max of computed and floor) is below the tier in
    force the month before; the count restarts when a month-end meets or beats that tier, when the tier
    moves, or under a cap.
    """
    seen = {"falls": {}, "buffers": 0, "held": 0, "caps": 0}
    streak: dict[str, int] = {}
    first_failed: dict[str, date] = {}
    for i, month in enumerate(months):
        review = is_review(month)
        for cid, row in results[i].items():
            where = f"{cid} at {month}"
            earned = earned_of(row)
            assert row["at_risk"] == (earned < row["tier"]), where
            # (d) a cap is never exceeded while a credit event is active, and it leaves no buffer
            if row["capped"]:
                seen["caps"] += 1
                assert cap_tier is not None, where
                assert row["tier"] <= cap_tier, where
                if earned >= cap_tier:  # capped to the cap tier exactly, not below it
                    assert row["tier"] == cap_tier, where
                assert (row["reason"], row["failed_reviews"], row["buffer_since"]) == ("credit_cap", 0, None), where
            else:
                assert row["tier"] >= earned, f"{where}: tier in force below the earned tier"
            if i == 0 or cid not in results[i - 1]:
                assert row["previous_tier"] is None, where
                if not row["capped"]:
                    assert (row["tier"], row["reason"], row["failed_reviews"]) == (earned, "initial", 0), where
                streak[cid] = 0
                continue
            prev = results[i - 1][cid]
            assert row["previous_tier"] == prev["tier"], f"{where}: state not carried from last month"
            if row["capped"]:
                streak[cid] = 0
                continue
            # Nothing comes from nowhere: the tier is last month's or the earned one.
            assert row["tier"] in (prev["tier"], earned), where
            # (a) without a cap, a tier falls only at a review month-end
            if row["tier"] < prev["tier"]:
                assert review, f"{where}: fell from {prev['tier']} to {row['tier']} outside a review"
            if earned >= prev["tier"]:
                streak[cid] = 0
                assert row["tier"] == earned, where
                assert row["reason"] == ("upgrade" if earned > prev["tier"] else "meets"), where
                assert (row["failed_reviews"], row["buffer_since"]) == (0, None), where
            elif not review:
                seen["held"] += 1
                assert (row["tier"], row["reason"]) == (prev["tier"], "held_until_review"), where
                assert row["failed_reviews"] == streak[cid], where
                assert row["buffer_since"] == (first_failed[cid] if streak[cid] else None), where
            else:
                # (c) the k-th consecutive failed review is the fall, not one before
                streak[cid] += 1
                if streak[cid] == 1:
                    first_failed[cid] = month.last_day
                needed = k(prev["tier"])
                assert streak[cid] <= needed, where
                if streak[cid] == needed:
                    assert (row["tier"], row["reason"]) == (earned, "downgrade"), (
                        f"{where}: failed review {streak[cid]} of {needed} from tier {prev['tier']} must fall")
                    assert (row["failed_reviews"], row["buffer_since"]) == (0, None), where
                    seen["falls"][prev["tier"]] = seen["falls"].get(prev["tier"], 0) + 1
                    streak[cid] = 0
                else:
                    seen["buffers"] += 1
                    assert (row["tier"], row["reason"]) == (prev["tier"], "buffer"), (
                        f"{where}: failed review {streak[cid]} of {needed} from tier {prev['tier']} must hold")
                    assert row["failed_reviews"] == streak[cid], where
                    assert row["buffer_since"] == first_failed[cid], where
            if row["tier"] != prev["tier"]:
                streak[cid] = 0
    return seen


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------
def in_band(bands: dict[int, tuple[int, int]]):
    """A tier and an amount in its band, edges included."""
    @st.composite
    def draw_amount(draw):
        tier = draw(st.sampled_from(sorted(bands)))
        lo, hi = bands[tier]
        return tier, draw(st.one_of(st.just(lo), st.just(hi), st.integers(lo, hi)))
    return draw_amount()


icbc_segment = st.tuples(
    st.integers(1, 14),                                   # months
    in_band(ICBC_SPEND_BANDS),                            # (tier, spend cents)
    st.sampled_from([None, None, None, None, 4, 5, 6, 7]),  # floor held through the segment
    st.sampled_from([False] * 6 + [True]),                # capped through the segment
)


def flatten(segments, n: int) -> list:
    """A customer's history: segments repeated in order until n months are filled."""
    out = []
    while len(out) < n:
        for length, *values in segments:
            out += [tuple(values)] * length
    return out[:n]


# Histories that reach every buffer: a high tier for a while, then a lower one for long.
SCRIPTED_ICBC = {
    "drop7": [(1, (7, 200_000_000), None, False), (40, (6, 25_000_000), None, False)],
    "drop6": [(2, (6, 199_999_999), None, False), (40, (1, 1), None, False)],
    "drop5": [(1, (5, 5_000_000), None, False), (40, (4, 4_999_999), None, False)],
    "drop4": [(1, (4, 1_250_000), None, False), (40, (0, 0), None, False)],
    "floor7": [(4, (0, 0), 7, False), (40, (3, 125_000), None, False)],
}


@dataclass
class IcbcHistory:
    start: Month
    months: int
    customers: dict[str, list]


icbc_histories = st.builds(
    lambda start, n, generated: IcbcHistory(
        Month.parse(start), n,
        {**{name: flatten(s, n) for name, s in SCRIPTED_ICBC.items()},
         **{f"g{i:03d}": flatten(s, n) for i, s in enumerate(generated)}},
    ),
    st.sampled_from(["2024-01", "2024-06", "2024-12", "2025-04"]),
    st.integers(13, 32),
    st.lists(st.lists(icbc_segment, min_size=1, max_size=5), min_size=10, max_size=30),
)


# ---------------------------------------------------------------------------------------------
# (a), (c), (d) over generated ICBC histories
# ---------------------------------------------------------------------------------------------
@settings(max_examples=8, **SETTINGS)
@given(history=icbc_histories)
def test_icbc_generated_histories_keep_the_state_machine(history):
    months = month_range(history.start, history.start.plus(history.months - 1))
    with tempfile.TemporaryDirectory() as root:
        chain = Chain(ICBC, Path(root))
        try:
            chain.customers(history.customers)
            for cid, states in history.customers.items():
                for floor, opened, closed in intervals([s[1] for s in states], months):
                    chain.product(cid, ICBC_FLOOR_PRODUCTS[floor], opened, closed)
                for _, started, cured in intervals([True if s[2] else None for s in states], months):
                    chain.event(cid, "loan_loss", started, cured)
            results = []
            for i, month in enumerate(months):
                chain.icbc_spend(month, {cid: states[i][0][1] for cid, states in history.customers.items()})
                results.append(chain.evaluate(month))
        finally:
            chain.close()

    for i, month in enumerate(months):
        for cid, states in history.customers.items():
            (band, _), floor, capped = states[i]
            row = results[i][cid]
            # the figures, floors and caps the rows were built from
            assert (row["computed_tier"], row["floor_tier"], row["capped"]) == (band, floor, capped), (cid, month)
    seen = check_chain(months, results, is_review=lambda m: m.month in ICBC_REVIEW_MONTHS, k=icbc_k,
                       cap_tier=ICBC_CAP_TIER)
    # The scripted customers reach the buffers of the high tiers in every long enough history.
    if history.months >= 19:
        assert seen["falls"].get(5) and seen["buffers"], seen


# ---------------------------------------------------------------------------------------------
# (c) for boc_vip: every month-end is a review, a tier falls at the 6th failed one
# ---------------------------------------------------------------------------------------------
boc_segment = st.tuples(st.integers(1, 8), st.sampled_from(sorted(BOC_ADB_BANDS)),
                        st.sampled_from(["lo", "hi", "any"]), st.integers(0, 10**12),
                        st.sampled_from([False] * 4 + [True]))


def boc_day_sum(tier: int, where: str, salt: int, month: Month) -> int:
    lo, hi = BOC_ADB_BANDS[tier]
    first, last = lo * month.days, (hi + 1) * month.days - 1  # every day-sum whose average is in the band
    return {"lo": first, "hi": last, "any": first + salt % (last - first + 1)}[where]


SCRIPTED_BOC = {
    "boc_drop3": [(2, 3, "lo", 0, False), (30, 2, "hi", 0, False)],
    "boc_drop1": [(1, 1, "lo", 0, False), (30, 0, "hi", 0, False)],
    "boc_flicker": [(1, 2, "lo", 0, False), (5, 1, "hi", 0, False), (1, 2, "lo", 0, False), (30, 1, "any", 7, False)],
}


@settings(max_examples=6, **SETTINGS)
@given(start=st.sampled_from(["2024-02", "2024-11", "2025-06"]), n=st.integers(8, 15),
       generated=st.lists(st.lists(boc_segment, min_size=1, max_size=5), min_size=10, max_size=30))
def test_boc_generated_histories_keep_the_state_machine(start, n, generated):
    months = month_range(Month.parse(start), Month.parse(start).plus(n - 1))
    customers = {**{name: flatten(s, n) for name, s in SCRIPTED_BOC.items()},
                 **{f"g{i:03d}": flatten(s, n) for i, s in enumerate(generated)}}
    with tempfile.TemporaryDirectory() as root:
        chain = Chain(BOC, Path(root))
        try:
            chain.customers(customers)
            for cid, states in customers.items():
                # credit events exist, but boc_vip has no caps: they must change nothing
                for _, started, cured in intervals([True if s[3] else None for s in states], months):
                    chain.event(cid, "loan_loss", started, cured)
            results = []
            for i, month in enumerate(months):
                chain.boc_assets(month, {cid: boc_day_sum(*states[i][:3], month) for cid, states in customers.items()})
                results.append(chain.evaluate(month))
        finally:
            chain.close()

    for i, month in enumerate(months):
        for cid, states in customers.items():
            row = results[i][cid]
            assert (row["computed_tier"], row["floor_tier"], row["capped"], row["points"]) == (
                states[i][0], None, False, None), (cid, month)
            assert row["next_review"] == month.plus(1).last_day
            assert row["effective_from"] == month.plus(1).first_day
    seen = check_chain(months, results, is_review=lambda m: True, k=lambda tier: BOC_K, cap_tier=None)
    assert seen["falls"] and seen["buffers"], seen


# ---------------------------------------------------------------------------------------------
# (b) monotonicity: more figures never give a lower computed tier
# ---------------------------------------------------------------------------------------------
ICBC_BALANCE_CODES = sorted({code for f in ICBC.rules.figures.values() if f.source == "balances"
                             for code in f.product_codes})
ICBC_TXN_FIGURES = [name for name, f in ICBC.rules.figures.items() if f.source == "transactions"]
amount_cents = st.one_of(st.integers(0, 3), st.integers(0, 10**7), st.integers(0, 3 * 10**10))

icbc_component = st.one_of(
    st.tuples(st.just("balance"), st.sampled_from(ICBC_BALANCE_CODES), st.sampled_from(VOCAB.risk_classes),
              st.integers(0, 5)),
    st.tuples(st.just("txn"), st.sampled_from(ICBC_TXN_FIGURES), st.just(None), st.integers(0, 5)),
)
# (base amounts, non-negative extras) per pair; the pair's second customer holds base + extra.
figure_pairs = st.lists(
    st.tuples(st.lists(st.tuples(icbc_component, amount_cents), max_size=5),
              st.lists(st.tuples(icbc_component, amount_cents), max_size=3)),
    min_size=15, max_size=40,
)


def add_amounts(*parts) -> dict:
    total: dict = {}
    for part in parts:
        for key, value in part:
            total[key] = total.get(key, 0) + value
    return total


@settings(max_examples=15, **SETTINGS)
@given(month=st.sampled_from(["2025-06", "2024-02", "2025-12"]), pairs=figure_pairs)
def test_icbc_more_figures_never_give_a_lower_computed_tier(month, pairs):
    m = Month.parse(month)
    window = [m.plus(-offset) for offset in range(6)]
    with tempfile.TemporaryDirectory() as root:
        chain = Chain(ICBC, Path(root))
        try:
            for n, (base, extra) in enumerate(pairs):
                for cid, amounts in ((f"p{n:03d}a", add_amounts(base)), (f"p{n:03d}b", add_amounts(base, extra))):
                    chain.customers([cid])
                    for (kind, code, risk, offset), value in amounts.items():
                        if kind == "balance":
                            chain.con.execute(
                                "INSERT INTO balance_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)), 0, false)",
                                [window[offset].first_day, cid, code, risk, cents(value)])
                        else:
                            chain.con.execute(
                                "INSERT INTO txn_figure_month VALUES ('icbc_star', ?, ?, ?, CAST(? AS DECIMAL(38, 2)))",
                                [code, window[offset].first_day, cid, cents(value)])
            got = chain.evaluate(m)
        finally:
            chain.close()

    pts = [c for c in next(iter(got.values())) if c.startswith("pts_")]
    for n, (_, extra) in enumerate(pairs):
        a, b = got[f"p{n:03d}a"], got[f"p{n:03d}b"]
        assert b["computed_tier"] >= a["computed_tier"], (n, a, b)
        assert b["points"] >= a["points"], (n, a, b)
        assert all(b[c] >= a[c] for c in pts), (n, a, b)
        if not any(value for _, value in extra):
            assert (b["points"], b["computed_tier"]) == (a["points"], a["computed_tier"])


boc_component = st.one_of(
    st.tuples(st.just("balance"), st.sampled_from(sorted(BOC.rules.figures["financial_assets"].product_codes)),
              st.just("normal"), st.just(0)),
    st.tuples(st.just("balance"), st.sampled_from(["mortgage", "consumer_loan", "business_loan"]),
              st.sampled_from(VOCAB.risk_classes), st.just(0)),
    st.tuples(st.just("txn"), st.just("card_spending"), st.just(None), st.integers(0, 11)),
)
boc_amount = st.one_of(st.integers(0, 3), st.integers(0, 10**8), st.integers(10**9, 2 * 10**10))


@settings(max_examples=10, **SETTINGS)
@given(pairs=st.lists(
    st.tuples(st.lists(st.tuples(boc_component, st.tuples(boc_amount, boc_amount)), max_size=4),
              st.lists(st.tuples(boc_component, st.tuples(boc_amount, boc_amount)), max_size=3)),
    min_size=15, max_size=40))
def test_boc_more_figures_never_give_a_lower_computed_tier(pairs):
    m = Month(2025, 6)
    with tempfile.TemporaryDirectory() as root:
        chain = Chain(BOC, Path(root))
        try:
            for n, (base, extra) in enumerate(pairs):
                for cid, parts in ((f"p{n:03d}a", [base]), (f"p{n:03d}b", [base, extra])):
                    chain.customers([cid])
                    day_sums = add_amounts(*[[(key, s) for key, (s, _) in p] for p in parts])
                    ends = add_amounts(*[[(key, e) for key, (_, e) in p] for p in parts])
                    for (kind, code, risk, offset), value in day_sums.items():
                        if kind == "balance":
                            chain.con.execute(
                                "INSERT INTO balance_month VALUES (?, ?, ?, ?, CAST(? AS DECIMAL(38, 2)), "
                                "CAST(? AS DECIMAL(38, 2)), false)",
                                [m.first_day, cid, code, risk, cents(value), cents(ends[(kind, code, risk, offset)])])
                        else:
                            chain.con.execute(
                                "INSERT INTO txn_figure_month VALUES ('boc_vip', ?, ?, ?, CAST(? AS DECIMAL(38, 2)))",
                                [code, m.plus(-offset).first_day, cid, cents(value)])
            got = chain.evaluate(m)
        finally:
            chain.close()
    for n in range(len(pairs)):
        a, b = got[f"p{n:03d}a"], got[f"p{n:03d}b"]
        assert b["computed_tier"] >= a["computed_tier"], (n, pairs[n], a, b)


# ---------------------------------------------------------------------------------------------
# One step of the state machine, every case, against the table of programs.md section 3
# ---------------------------------------------------------------------------------------------
def spec_step(prev, earned: int, capped: bool, review: bool, k: int, cap_tier, as_of: date):
    """programs.md section 3, line for line: (tier, reason, failed_reviews, buffer_since)."""
    if prev is None:
        out = (earned, "initial", 0, None)
    elif earned > prev["tier"]:
        out = (earned, "upgrade", 0, None)
    elif earned == prev["tier"]:
        out = (earned, "meets", 0, None)
    elif not review:
        out = (prev["tier"], "held_until_review", prev["failed_reviews"], prev["buffer_since"])
    else:
        failed = prev["failed_reviews"] + 1
        since = prev["buffer_since"] or as_of
        out = (earned, "downgrade", 0, None) if failed >= k else (prev["tier"], "buffer", failed, since)
    if capped:
        out = (min(out[0], cap_tier), "credit_cap", 0, None)
    return out


@pytest.mark.parametrize("program, month", [
    ("icbc_star", "2025-06"), ("icbc_star", "2025-12"), ("icbc_star", "2025-05"), ("icbc_star", "2026-01"),
    ("boc_vip", "2025-03"),
])
def test_every_single_step_follows_the_table(tmp_chain, program, month):
    """Hand-made last-month states (every tier, every failed count below its k, with and without a
    buffer start) times every earned tier, with and without a cap, in one evaluation."""
    loaded = ICBC if program == "icbc_star" else BOC
    chain = tmp_chain(loaded)
    m = Month.parse(month)
    tiers = sorted(loaded.rules.tier_names)
    k = icbc_k if program == "icbc_star" else (lambda tier: BOC_K)
    review = m.month in ICBC_REVIEW_MONTHS if program == "icbc_star" else True
    caps = [False, True] if program == "icbc_star" else [False]

    prev_rows, cases = [], {}
    for prev_tier in tiers:
        for failed in range(k(prev_tier)):
            since = date(2024, 12, 31) if failed else None
            for earned in tiers:
                for capped in caps:
                    cid = f"t{prev_tier}f{failed}e{earned}{'c' if capped else ''}"
                    prev = {"customer_id": cid, "tier": prev_tier, "failed_reviews": failed, "buffer_since": since}
                    prev_rows.append(prev)
                    cases[cid] = (prev, earned, capped)
    for earned in tiers:  # customers new this month: no row last month
        for capped in caps:
            cases[f"new_e{earned}{'c' if capped else ''}"] = (None, earned, capped)
    chain.customers(cases)
    chain.publish_prev(m.plus(-1), prev_rows)
    for cid, (_, earned, capped) in cases.items():
        if capped:
            chain.event(cid, "credit_card_default_11m", date(2020, 1, 1), None)
    if program == "icbc_star":
        chain.icbc_spend(m, {cid: ICBC_SPEND_BANDS[earned][1] for cid, (_, earned, _) in cases.items()})
    else:
        chain.boc_assets(m, {cid: BOC_ADB_BANDS[earned][0] * m.days for cid, (_, earned, _) in cases.items()})

    got = chain.evaluate(m)

    assert set(got) == set(cases)
    for cid, (prev, earned, capped) in cases.items():
        row = got[cid]
        want = spec_step(prev, earned, capped, review, k(prev["tier"]) if prev else 1,
                         ICBC_CAP_TIER if program == "icbc_star" else None, m.last_day)
        assert (row["tier"], row["reason"], row["failed_reviews"], row["buffer_since"]) == want, cid
        assert row["computed_tier"] == earned, cid
        assert row["previous_tier"] == (prev["tier"] if prev else None), cid
        assert row["at_risk"] == (earned < row["tier"]), cid
        assert row["tier_name"] == loaded.rules.tier_names[row["tier"]], cid
    # The evaluation writes exactly the reasons that readers list (rules/states.py): every one this kind of
    # month can give (a review month buffers or downgrades, another holds; only ICBC has caps), no other.
    possible = set(REASONS) - ({"held_until_review"} if review else {"buffer", "downgrade"})
    assert {row["reason"] for row in got.values()} == possible - ({"credit_cap"} if not caps[-1] else set())


# ---------------------------------------------------------------------------------------------
# Examples: reasons, bookkeeping, calendar columns
# ---------------------------------------------------------------------------------------------
def run_icbc_script(chain: Chain, months: list[Month], spend: dict[str, list[int]]) -> list[dict[str, dict]]:
    chain.customers(spend)
    results = []
    for i, month in enumerate(months):
        chain.icbc_spend(month, {cid: amounts[i] for cid, amounts in spend.items()})
        results.append(chain.evaluate(month))
    return results


def column(results, cid, *names):
    return [tuple(r[cid][n] for n in names) if len(names) > 1 else r[cid][names[0]] for r in results]


B = {tier: lo for tier, (lo, _) in ICBC_SPEND_BANDS.items()}  # the least spend that earns each tier


def test_icbc_year_of_reasons_and_bookkeeping(tmp_chain):
    chain = tmp_chain(ICBC)
    months = month_range(Month(2025, 1), Month(2025, 12))
    jun, dec = date(2025, 6, 30), date(2025, 12, 31)
    spend = {
        "steady": [B[4]] * 12,
        "climber": [B[3]] + [B[5]] * 11,
        "slider": [B[5]] + [B[4]] * 11,
        "recover": [B[5]] + [B[4]] * 6 + [B[5]] + [B[4]] * 4,
        "four_fall": [B[4]] + [B[3]] * 11,
        "capped": [B[6]] * 12,
        "capped_in_buffer": [B[6]] + [B[5]] * 11,
        "floor_gone": [0] * 12,
    }
    chain.event("capped", "loan_loss", date(2025, 3, 1), date(2025, 5, 1))
    chain.event("capped_in_buffer", "quasi_credit_overdraft_12m", date(2025, 9, 30), date(2025, 10, 1))
    chain.product("floor_gone", "wealth_card", date(2024, 1, 1), date(2025, 4, 1))
    results = run_icbc_script(chain, months, spend)
    held = "held_until_review"

    assert column(results, "steady", "reason") == ["initial"] + ["meets"] * 11
    assert column(results, "climber", "tier", "reason", "previous_tier")[:2] == [
        (3, "initial", None), (5, "upgrade", 3)]
    assert column(results, "slider", "tier", "reason", "failed_reviews", "buffer_since", "at_risk") == (
        [(5, "initial", 0, None, False)] + [(5, held, 0, None, True)] * 4 + [(5, "buffer", 1, jun, True)]
        + [(5, held, 1, jun, True)] * 5 + [(4, "downgrade", 0, None, False)]
    )
    assert column(results, "recover", "tier", "reason", "failed_reviews", "buffer_since") == (
        [(5, "initial", 0, None)] + [(5, held, 0, None)] * 4 + [(5, "buffer", 1, jun)] + [(5, held, 1, jun)]
        + [(5, "meets", 0, None)] + [(5, held, 0, None)] * 3 + [(5, "buffer", 1, dec)]
    )
    assert column(results, "four_fall", "tier", "reason")[4:7] == [(4, held), (3, "downgrade"), (3, "meets")]
    assert column(results, "capped", "tier", "reason", "capped", "at_risk") == (
        [(6, "initial", False, False), (6, "meets", False, False)] + [(1, "credit_cap", True, False)] * 2
        + [(6, "upgrade", False, False)] + [(6, "meets", False, False)] * 7
    )
    assert column(results, "capped_in_buffer", "tier", "reason", "failed_reviews", "buffer_since")[5:10] == [
        (6, "buffer", 1, jun), (6, held, 1, jun), (6, held, 1, jun), (1, "credit_cap", 0, None), (5, "upgrade", 0, None)
    ]
    assert column(results, "floor_gone", "tier", "floor_tier", "reason", "failed_reviews", "at_risk") == (
        [(6, 6, "initial", 0, False)] + [(6, 6, "meets", 0, False)] * 2 + [(6, None, held, 0, True)] * 2
        + [(6, None, "buffer", 1, True)] + [(6, None, held, 1, True)] * 5 + [(6, None, "buffer", 2, True)]
    )
    for month, rows in zip(months, results):
        want_review = {True: date(2025, 6, 30), False: date(2025, 12, 31)}[month.month < 6]
        if month.month == 12:
            want_review = date(2026, 6, 30)
        want_effective = month.plus(1).first_day.replace(day=5)
        assert {(r["next_review"], r["effective_from"]) for r in rows.values()} == {(want_review, want_effective)}
        assert {r["rules_version"] for r in rows.values()} == {ICBC.version}


def test_icbc_buffers_fall_exactly_at_the_kth_failed_review(tmp_chain):
    """Initial at 2024-12; from 2025-01 every customer earns quasi-star only."""
    chain = tmp_chain(ICBC)
    months = month_range(Month(2024, 12), Month(2027, 6))
    spend = {f"from{tier}": [B[tier]] + [B[1]] * (len(months) - 1) for tier in (7, 6, 5, 4, 3)}
    results = run_icbc_script(chain, months, spend)
    reviews = [str(m) for m in months if m.month in ICBC_REVIEW_MONTHS][1:]
    assert reviews == ["2025-06", "2025-12", "2026-06", "2026-12", "2027-06"]

    def story(cid):
        return {str(m): (r[cid]["tier"], r[cid]["reason"], r[cid]["failed_reviews"], r[cid]["buffer_since"])
                for m, r in zip(months, results) if str(m) in reviews}

    first = date(2025, 6, 30)
    assert story("from7") == {
        "2025-06": (7, "buffer", 1, first), "2025-12": (7, "buffer", 2, first), "2026-06": (7, "buffer", 3, first),
        "2026-12": (7, "buffer", 4, first), "2027-06": (1, "downgrade", 0, None),
    }
    assert story("from6") == {
        "2025-06": (6, "buffer", 1, first), "2025-12": (6, "buffer", 2, first), "2026-06": (1, "downgrade", 0, None),
        "2026-12": (1, "meets", 0, None), "2027-06": (1, "meets", 0, None),
    }
    assert story("from5")["2025-06"] == (5, "buffer", 1, first)
    assert story("from5")["2025-12"] == (1, "downgrade", 0, None)
    assert story("from4")["2025-06"] == (1, "downgrade", 0, None)
    assert story("from3")["2025-06"] == (1, "downgrade", 0, None)
    # Between reviews nobody moves: the 7-star holds for the whole 24-month buffer.
    assert all(r["from7"]["tier"] == 7 for r in results[:-1])
    assert results[-2]["from7"]["at_risk"] and not results[-1]["from7"]["at_risk"]


def test_boc_falls_at_the_sixth_failed_month_end(tmp_chain):
    chain = tmp_chain(BOC)
    months = month_range(Month(2025, 9), Month(2026, 4))
    customers = {"fortune": [2] + [1] * 7, "wobble": [2] + [1] * 5 + [2] + [1]}
    chain.customers(customers)
    results = []
    for i, month in enumerate(months):
        chain.boc_assets(month, {c: BOC_ADB_BANDS[t[i]][0] * month.days for c, t in customers.items()})
        results.append(chain.evaluate(month))
    since = date(2025, 10, 31)
    assert column(results, "fortune", "tier", "reason", "failed_reviews", "buffer_since") == (
        [(2, "initial", 0, None)] + [(2, "buffer", n, since) for n in range(1, 6)]
        + [(1, "downgrade", 0, None), (1, "meets", 0, None)]
    )
    assert column(results, "wobble", "tier", "reason", "failed_reviews")[5:] == [
        (2, "buffer", 5), (2, "meets", 0), (2, "buffer", 1)]
    assert column(results, "fortune", "tier_name")[:2] == ["fortune", "fortune"]
    for month, rows in zip(months, results):
        assert {(r["next_review"], r["effective_from"]) for r in rows.values()} == {
            (month.plus(1).last_day, month.plus(1).first_day)}


def test_evaluate_reuses_one_connection_across_months(tmp_path):
    con = duckdb.connect()
    runner.run(con, "warehouse_schema")
    con.execute("INSERT INTO customers VALUES ('c1', NULL)")
    warehouse = Warehouse(tmp_path)
    evaluate(con, warehouse, ICBC, VOCAB, Month(2025, 1))
    second = evaluate(con, warehouse, ICBC, VOCAB, Month(2025, 2))
    assert pq.read_table(second.path).to_pylist()[0]["reason"] == "meets"
