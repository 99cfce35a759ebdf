"""Customer equity (interfaces/equity.py, `tiers equity`, docs/equity.md).

Two kinds of warehouse:
- hand-written snapshots of bohai_wealth (one balance figure) where every number is worked out by hand
  below, so CLV is checked against a month-by-month loop, not against the code's own matrix powers;
- icbc_buffers published by the real pipeline (2024-12..2025-06, six customers), for the matrix against
  counts made directly with SQL, the published Parquet through `tiers sql`, the report and the what-if.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ground.errors import RuleError, TiersError
from ground.months import Month
from interfaces import equity as model
from rules.equity import load_equity_settings
from rules.loader import RULES_DIR, SHIPPED_RULES_DIR, load_programs, program_files
from stores import snapshots
from stores.warehouse import Warehouse

LANDING = Path(__file__).resolve().parent / "golden" / "icbc_buffers" / "landing"
BOHAI_NAMES = {0: "ordinary", 1: "gold", 2: "platinum", 3: "diamond", 4: "private-banking"}
# Margin 12% a year on the average balance: m = financial_assets / 100 a month. d = 12%: a month ahead
# is worth 1 / 1.01. H = 3: this month and two more.
HAND_SETTINGS = """\
discount_rate: 0.12
horizon_months: 3
programs:
  bohai_wealth:
    margin_rates: {financial_assets: 0.12}
"""


def write_snapshots(root: Path, program: str, months: dict[str, list[tuple[str, int, str | None]]],
                    names: dict[int, str] = BOHAI_NAMES) -> Warehouse:
    """Published snapshots of (customer, tier, fig_financial_assets) rows, in the contract's layout."""
    warehouse = Warehouse(root)
    for month, rows in months.items():
        path = snapshots.snapshot_path(warehouse, program, Month.parse(month))
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        con.execute("CREATE TABLE s (customer_id VARCHAR, tier INTEGER, tier_name VARCHAR, "
                    "fig_financial_assets DECIMAL(18,2))")
        con.executemany("INSERT INTO s VALUES (?, ?, ?, ?)", [(c, t, names[t], f) for c, t, f in rows])
        con.sql("SELECT * FROM s").to_parquet(str(path))
    return warehouse


@pytest.fixture
def settings_file(tmp_path) -> Path:
    path = tmp_path / "equity.yaml"
    path.write_text(HAND_SETTINGS, encoding="utf-8")
    return path


def hand_equity(tmp_path: Path, settings_file: Path, months: dict, months_back: int = 12) -> model.Equity:
    warehouse = write_snapshots(tmp_path / "wh", "bohai_wealth", months)
    settings, path = load_equity_settings(settings_file)
    [bohai] = load_programs(["bohai_wealth"])
    return model.compute(warehouse, bohai, Month.parse(max(months)), settings, path, months_back)


# May: A and B gold, C and D ordinary. June: A stays gold, B falls to ordinary, C stays, D has left.
HAND = {
    "2025-05": [("A", 1, "1000.00"), ("B", 1, "500.00"), ("C", 0, "300.00"), ("D", 0, "100.00")],
    "2025-06": [("A", 1, "1000.00"), ("B", 0, "200.00"), ("C", 0, "400.00")],
}


def test_clv_against_a_month_by_month_loop_computed_by_hand(tmp_path, settings_file):
    """By hand. One pair (May -> June): from gold, 1 of 2 stays and 1 falls: P[gold] = (gold 1/2, ordinary
    1/2); from ordinary, 1 of 2 stays and 1 leaves: P[ordinary] = (ordinary 1/2, left 1/2). Tiers 2..4
    hold nobody in May: they stay where they are. June margins (fig / 100): A 10, B 2, C 4, so R[gold] =
    10, R[ordinary] = (2 + 4) / 2 = 3.

    Month by month, a customer in gold at T is, a month later, 1/2 gold and 1/2 ordinary: expected margin
    1/2 * 10 + 1/2 * 3 = 6.5; two months later 1/4 gold, 1/4 + 1/4 = 1/2 ordinary, 1/4 left: 2.5 + 1.5 =
    4. From ordinary: 1/2 ordinary (1.5), then 1/4 ordinary (0.75). With H = 3, k runs to 2."""
    equity = hand_equity(tmp_path, settings_file, HAND)
    delta = 1 / 1.01
    by_hand = {"A": 10 + 6.5 * delta + 4 * delta**2, "B": 2 + 1.5 * delta + 0.75 * delta**2,
               "C": 4 + 1.5 * delta + 0.75 * delta**2}
    # The same loop, written out: a distribution over the states moved one month at a time.
    gold, ordinary, left = 0, 1, 2
    step = {gold: {gold: 0.5, ordinary: 0.5}, ordinary: {ordinary: 0.5, left: 0.5}, left: {left: 1.0}}
    reward = {gold: 10.0, ordinary: 3.0, left: 0.0}
    for customer, start, margin in (("A", gold, 10.0), ("B", ordinary, 2.0), ("C", ordinary, 4.0)):
        where, value = {start: 1.0}, margin
        for k in (1, 2):
            after: dict[int, float] = {}
            for state, share in where.items():
                for target, p in step[state].items():
                    after[target] = after.get(target, 0.0) + share * p
            where = after
            value += sum(share * reward[s] for s, share in where.items()) / 1.01**k
        assert value == pytest.approx(by_hand[customer], rel=1e-12)

    clv = dict(equity.con.execute("SELECT customer_id, clv FROM customer_values").fetchall())
    assert clv == pytest.approx(by_hand, rel=1e-12)
    assert [name for _, name in equity.states] == ["private-banking", "diamond", "platinum", "gold", "ordinary", "left"]
    expected = np.array([
        [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0],  # nobody there in May: they stay
        [0, 0, 0, 0.5, 0.5, 0], [0, 0, 0, 0, 0.5, 0.5], [0, 0, 0, 0, 0, 1],
    ])
    assert np.array_equal(equity.matrix, expected)
    assert equity.pairs == [Month.parse("2025-05")]  # fewer than 12 pairs: the one there is
    assert equity.value_equity == pytest.approx((10 + 2 + 4) * (1 + delta + delta**2), rel=1e-12)
    assert equity.customer_equity == pytest.approx(sum(by_hand.values()), rel=1e-12)
    assert equity.retention_equity == pytest.approx(equity.customer_equity - equity.value_equity, rel=1e-12)
    assert equity.retention_equity < 0  # B fell and D left: moves take value away here


def test_nobody_moving_means_no_retention_equity(tmp_path, settings_file):
    """With every customer keeping their tier, P is the identity and CLV is m's annuity: customer equity
    equals value equity, retention equity is 0."""
    same = [("A", 1, "1000.00"), ("B", 0, "200.00")]
    equity = hand_equity(tmp_path, settings_file, {"2025-04": same, "2025-05": same, "2025-06": same})
    assert np.array_equal(equity.matrix, np.eye(6))
    assert equity.retention_equity == pytest.approx(0, abs=1e-9)
    assert equity.customer_equity == pytest.approx(12 * (1 + 1 / 1.01 + 1 / 1.01**2), rel=1e-12)


def test_no_month_pair_is_an_error(tmp_path, settings_file):
    with pytest.raises(TiersError, match=r"bohai_wealth: no month pair to count tier moves from: 2025-05 is not "
                                         r"published"):
        hand_equity(tmp_path, settings_file, {"2025-06": HAND["2025-06"]})
    # A gap: April and June are published, May is not; no consecutive pair within the window.
    with pytest.raises(TiersError, match="no month pair"):
        hand_equity(tmp_path / "gap", settings_file, {"2025-04": HAND["2025-05"], "2025-06": HAND["2025-06"]})


def test_a_month_not_published_is_an_error(tmp_path, settings_file):
    write_snapshots(tmp_path / "wh", "bohai_wealth", HAND)
    settings, path = load_equity_settings(settings_file)
    [bohai] = load_programs(["bohai_wealth"])
    with pytest.raises(TiersError, match=r"bohai_wealth: no snapshot for 2025-07 in .* \(published: 2025-05..2025-06\)"):
        model.compute(Warehouse(tmp_path / "wh"), bohai, Month.parse("2025-07"), settings, path)


def test_a_figure_without_rate_counts_zero_and_is_listed(tmp_path):
    path = tmp_path / "equity.yaml"
    path.write_text("horizon_months: 3\n", encoding="utf-8")  # no program, so no rate at all
    equity = hand_equity(tmp_path, path, HAND)
    assert equity.figures_without_rate == ["financial_assets"]
    assert equity.customer_equity == 0 and equity.value_equity == 0
    assert equity.discount_rate == 0.08  # the documented default


# -- the settings file ----------------------------------------------------------------------------------

def test_the_shipped_settings_are_never_a_program_and_fit_the_programs():
    assert (SHIPPED_RULES_DIR / "equity.yaml").is_file()
    assert "equity" not in {path.stem for path in program_files(SHIPPED_RULES_DIR)}
    settings, path = load_equity_settings(SHIPPED_RULES_DIR / "equity.yaml")
    assert (settings.discount_rate, settings.horizon_months) == (Decimal("0.08"), 60)
    from rules.equity import figure_rates

    for program in load_programs(rules_dir=SHIPPED_RULES_DIR):
        assert all(rate is not None for _, rate in figure_rates(settings, path, program).values()), program.name


@pytest.mark.parametrize("text, message", [
    ("discount_rat: 0.08\n", r"discount_rat: Extra inputs are not permitted"),
    ("discount_rate: '0.08'\n", r"discount_rate: must be a number, not text"),
    ("horizon_months: 0\n", r"horizon_months: Input should be greater than or equal to 1"),
    ("programs: {icbc_star: {margin_rate: {}}}\n", r"programs.icbc_star.margin_rate: Extra inputs"),
    ("programs: {icbc_star: {fee_rates: {card_spend: 2}}}\n", r"programs.icbc_star.fee_rates.card_spend: "
                                                              r"Input should be less than or equal to 1"),
    ("discount_rate: 0.08\ndiscount_rate: 0.1\n", r"discount_rate: the key is given twice"),
])
def test_a_bad_settings_file_names_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "equity.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError, match=rf"^{path}: {message}"):
        load_equity_settings(path)


@pytest.mark.parametrize("rates, message", [
    ("margin_rates: {card_spend: 0.01}", "programs.icbc_star.margin_rates.card_spend: card_spend is a counted "
                                         "figure; give its rate under fee_rates"),
    ("fee_rates: {mortgage: 0.01}", "programs.icbc_star.fee_rates.mortgage: mortgage is a balance figure"),
    ("fee_rates: {spending: 0.01}", "programs.icbc_star.fee_rates.spending: icbc_star has no figure 'spending'"),
])
def test_rates_must_name_figures_of_their_kind(tmp_path, rates, message):
    from rules.equity import figure_rates

    path = tmp_path / "equity.yaml"
    path.write_text(f"programs:\n  icbc_star: {{{rates}}}\n", encoding="utf-8")
    settings, _ = load_equity_settings(path)
    [icbc] = load_programs(["icbc_star"], RULES_DIR)
    with pytest.raises(RuleError, match=f"^{path}: {message}"):
        figure_rates(settings, path, icbc)


def test_a_rules_folder_with_settings_lists_only_programs(tmp_path):
    for name in ("icbc_star.yaml", "equity.yaml"):
        (tmp_path / name).write_bytes((SHIPPED_RULES_DIR / name).read_bytes())
    assert [p.name for p in program_files(tmp_path)] == ["icbc_star.yaml"]
    assert [p.name for p in load_programs(rules_dir=tmp_path)] == ["icbc_star"]


# -- a warehouse published by the pipeline ---------------------------------------------------------------

@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory) -> Path:
    from flows.runs import backfill

    warehouse = tmp_path_factory.mktemp("equity") / "warehouse"
    backfill.fn(str(LANDING), "2024-12", "2025-06", str(warehouse), ["icbc_star"])
    return warehouse


def icbc_equity(warehouse: Path, month: str = "2025-06", months_back: int = 12) -> model.Equity:
    settings, path = load_equity_settings(SHIPPED_RULES_DIR / "equity.yaml")
    [icbc] = load_programs(["icbc_star"], RULES_DIR)
    return model.compute(Warehouse(warehouse), icbc, Month.parse(month), settings, path, months_back)


def sql_counts(warehouse: Path, firsts: list[Month]) -> dict[tuple[int, int | None], int]:
    """Moves counted pair by pair, straight from the snapshot files: who is in which tier at t, and in
    which at t + 1 (None: no row at t + 1)."""
    total: dict[tuple[int, int | None], int] = {}
    for first in firsts:
        files = [str(snapshots.snapshot_path(Warehouse(warehouse), "icbc_star", m)) for m in (first, first.plus(1))]
        for from_tier, to_tier, n in duckdb.sql(
                "SELECT a.tier, (SELECT b.tier FROM read_parquet($after) AS b WHERE b.customer_id = a.customer_id), "
                "count(*) FROM read_parquet($before) AS a GROUP BY ALL",
                params={"before": files[0], "after": files[1]}).fetchall():
            total[from_tier, to_tier] = total.get((from_tier, to_tier), 0) + n
    return total


@pytest.mark.parametrize("months_back, pairs", [(12, 6), (2, 2)])
def test_matrix_equals_counts_made_with_sql(published, months_back, pairs):
    equity = icbc_equity(published, months_back=months_back)
    firsts = [Month.parse("2025-06").plus(-k) for k in range(pairs, 0, -1)]
    assert equity.pairs == firsts  # fewer than 12 pairs published: those there are
    expected = sql_counts(published, firsts)
    index = {tier: i for i, (tier, _) in enumerate(equity.states)}
    counted = {(equity.states[i][0], equity.states[j][0]): int(n)
               for i, row in enumerate(equity.counts) for j, n in enumerate(row) if n}
    assert counted == expected and sum(expected.values()) == 6 * pairs
    for tier, (i, row) in ((tier, (index[tier], equity.matrix[index[tier]])) for tier, _ in equity.states):
        out = sum(n for (f, _), n in expected.items() if f == tier)
        if out:
            assert row == pytest.approx([expected.get((tier, t), 0) / out for t, _ in equity.states], rel=1e-12)
        else:  # nobody in this tier in any pair (and left): it stays where it is
            assert row[i] == 1 and row.sum() == 1
    assert np.allclose(equity.matrix.sum(axis=1), 1, rtol=0, atol=1e-12)
    assert any(equity.matrix[i, i] == 1 and not equity.counts[i].any() for i in range(len(equity.states) - 1))


def test_equity_identities(published):
    equity = icbc_equity(published)
    delta = model.monthly_discount(0.08)
    annuity = sum(delta**k for k in range(60))
    [(margins, clvs, n)] = equity.con.execute("SELECT sum(m), sum(clv), count(*) FROM customer_values").fetchall()
    assert n == equity.customers == 6 and margins > 0
    assert equity.value_equity == pytest.approx(margins * annuity, rel=1e-12)
    assert equity.customer_equity == pytest.approx(clvs, rel=1e-12)
    assert equity.retention_equity == pytest.approx(equity.customer_equity - equity.value_equity, rel=1e-12)
    assert sum(r["equity"] for r in equity.by_tier) == pytest.approx(equity.customer_equity, rel=1e-12)
    assert sum(r["share"] for r in equity.by_tier) == pytest.approx(1, rel=1e-12)
    for row in equity.by_tier:
        assert row["equity"] == pytest.approx(row["customers"] * row["clv"], rel=1e-12)
        assert row["equity"] - row["value_equity"] == pytest.approx(row["retention_equity"], abs=1e-6)
    # m from the snapshot's figures and the shipped rates, computed again here in exact decimals.
    snapshot = snapshots.snapshot_path(Warehouse(published), "icbc_star", Month.parse("2025-06"))
    rates = {"short_term_assets": ("0.015", 12), "long_term_assets": ("0.008", 12), "mortgage": ("0.010", 12),
             "other_loans": ("0.025", 12), "card_overdraft": ("0.100", 12), "investment": ("0.003", 6),
             "card_spend": ("0.0045", 6), "settlement": ("0.010", 6)}
    figures = duckdb.sql("SELECT customer_id, " + ", ".join(f"fig_{f}" for f in rates) + " FROM read_parquet($f)",
                         params={"f": str(snapshot)}).fetchall()
    m = dict(equity.con.execute("SELECT customer_id, m FROM customer_values").fetchall())
    for customer, *values in figures:
        exact = sum((v or Decimal(0)) * Decimal(rate) / months for v, (rate, months) in zip(values, rates.values()))
        assert m[customer] == pytest.approx(float(exact), rel=1e-12), customer


def test_published_output_reads_in_tiers_sql(published):
    from interfaces.sql_shell import execute, locked_connection

    with locked_connection(published) as con:  # before the first equity run: the views exist, empty
        assert execute(con, "SELECT count(*) FROM equity_customers").fetchall() == [(0,)]
        assert execute(con, "SELECT count(*) FROM equity_migration").fetchall() == [(0,)]
    equity = icbc_equity(published)
    written = model.publish(Warehouse(published), equity)
    assert written["customers"] == published / "equity/customers/program=icbc_star/as_of=2025-06-30/data.parquet"
    assert not list((published / "equity" / ".staging").iterdir())  # staged files were renamed into place
    with locked_connection(published) as con:
        clv = dict(equity.con.execute("SELECT customer_id, clv FROM customer_values").fetchall())
        assert dict(execute(con, "SELECT customer_id, clv FROM equity_customers WHERE program = 'icbc_star' "
                                 "AND as_of = DATE '2025-06-30'").fetchall()) == clv
        rows = execute(con, "SELECT from_state, sum(probability) FROM equity_migration GROUP BY ALL").fetchall()
        assert len(rows) == len(equity.states) and all(total == pytest.approx(1, abs=1e-12) for _, total in rows)
        [(customer_equity, value_equity, note)] = execute(
            con, "SELECT customer_equity, value_equity, brand_equity_note FROM equity_summary").fetchall()
        assert (customer_equity, value_equity) == (equity.customer_equity, equity.value_equity)
        assert "brand equity is not measurable from ledgers" in note
        assert execute(con, "SELECT sum(equity) FROM equity_tiers").fetchall() == [(pytest.approx(customer_equity),)]


def test_report_has_equity_by_tier_and_the_matrix(published, tmp_path):
    import json
    import re

    from interfaces.html_report import build_report

    model.publish(Warehouse(published), icbc_equity(published))
    [path] = build_report(published, Month.parse("2025-06"), "icbc_star")
    html = path.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    equity = icbc_equity(published)
    assert [(r["tier"], r["customers"]) for r in data["equity"]["tiers"]] == [
        (r["tier"], r["customers"]) for r in equity.by_tier]
    section = re.search(r'<section id="equity">(.*?)</section>', html, re.S).group(1)
    # The chart's own data: the bars are each tier's equity, the heatmap's rows are P's tier rows.
    call = re.search(r'Plotly\.newPlot\(\s*"chart-equity",\s*', section)
    traces, _ = json.JSONDecoder().raw_decode(section, call.end())
    bars, heatmap = traces
    assert bars["y"] == pytest.approx([r["equity"] for r in equity.by_tier], rel=1e-12)
    assert np.allclose(heatmap["z"], equity.matrix[:-1], rtol=0, atol=1e-12)
    assert heatmap["x"][-1] == "left" and len(heatmap["y"]) == len(equity.states) - 1
    assert "brand equity is not measurable from ledgers" in section
    # A month without equity: a sentence, no chart.
    [earlier] = build_report(published, Month.parse("2025-05"), "icbc_star")
    section = re.search(r'<section id="equity">(.*?)</section>', earlier.read_text(encoding="utf-8"), re.S).group(1)
    assert "No customer equity is published for icbc_star at 2025-05" in section and "newPlot" not in section


def test_whatif_moves_equity_by_tier(published, tmp_path):
    """The trial file of tests/test_whatif.py (five-star from 1,000 points, out after one failed review)
    drops two five-star customers at the June 2025 review: equity moves from five-star to lower tiers."""
    settings, path = load_equity_settings(SHIPPED_RULES_DIR / "equity.yaml")
    [icbc] = load_programs(["icbc_star"], RULES_DIR)
    text = (RULES_DIR / "icbc_star.yaml").read_text(encoding="utf-8")
    for old, new in (("at_least: 2000}", "at_least: 1000}"), ("{7: 5, 6: 3, 5: 2}", "{7: 5, 6: 3, 5: 1}")):
        text = text.replace(old, new)
    trial_file = tmp_path / "icbc_star_trial.yaml"
    trial_file.write_text(text, encoding="utf-8")
    from rules.loader import load_program

    trial = load_program(trial_file)
    result = model.whatif_equity(Warehouse(published), trial, icbc, Month.parse("2025-06"), settings, path, 3, LANDING)

    before, after = result["published"], result["whatif"]
    assert before.customer_equity == pytest.approx(icbc_equity(published, months_back=3).customer_equity, rel=1e-12)
    scratch = Path(result["scratch"])
    assert scratch.parent == published / "scratch"
    assert after.customer_equity == pytest.approx(
        model.compute(Warehouse(scratch), trial, Month.parse("2025-06"), settings, path, 3).customer_equity, rel=1e-12)
    rows = {r["tier"]: r for r in result["rows"]}
    assert rows[5]["customers_whatif"] == rows[5]["customers_published"] - 2
    assert sum(r["change"] for r in rows.values()) == pytest.approx(after.customer_equity - before.customer_equity)
    for row in rows.values():
        assert row["change"] == pytest.approx(row["equity_whatif"] - row["equity_published"])
    assert rows[5]["change"] < 0
    compared = duckdb.sql("SELECT tier, change FROM read_parquet($f) ORDER BY tier DESC",
                          params={"f": result["comparison"]}).fetchall()
    assert compared == [(r["tier"], pytest.approx(r["change"])) for r in result["rows"]]
    assert (scratch / "equity/tiers/program=icbc_star/as_of=2025-06-30/data.parquet").is_file()


# -- the command line -----------------------------------------------------------------------------------

def test_cli_prints_equity_and_publishes(tiers_cli, tmp_path, settings_file):
    write_snapshots(tmp_path / "wh", "bohai_wealth", HAND)
    done = tiers_cli("equity", "--month", "2025-06", "--warehouse", str(tmp_path / "wh"), "--settings",
                     str(settings_file), check=True)
    assert "bohai_wealth: customer equity at 2025-06-30" in done.stdout
    assert "brand equity is not measurable from ledgers" in done.stdout and "1 gold" in done.stdout
    assert (tmp_path / "wh/equity/migration/program=bohai_wealth/as_of=2025-06-30/data.parquet").is_file()
    done = tiers_cli("sql", "SELECT customer_id FROM equity_customers ORDER BY 1", "--warehouse",
                     str(tmp_path / "wh"), check=True)
    assert [line for line in done.stdout.split() if line in "ABC"] == ["A", "B", "C"]


def test_cli_errors_are_one_plain_line(tiers_cli, tmp_path, settings_file):
    write_snapshots(tmp_path / "wh", "bohai_wealth", HAND)
    wh = str(tmp_path / "wh")
    bad = tmp_path / "bad.yaml"
    bad.write_text("programs: {bohai_wealth: {fee_rates: {financial_assets: 0.01}}}\n", encoding="utf-8")
    cases = [
        (["--month", "2025-06", "--warehouse", str(tmp_path / "empty")], "no snapshots there"),
        (["--month", "2025-13", "--warehouse", wh], "--month: month '2025-13' is not a month"),
        (["--month", "2025-06", "--warehouse", wh, "--program", "nope"], "--program nope: no such program"),
        (["--month", "2025-06", "--warehouse", wh, "--settings", str(tmp_path / "none.yaml")],
         "none.yaml: no such equity settings file"),
        (["--month", "2025-06", "--warehouse", wh, "--settings", str(bad)],
         f"{bad}: programs.bohai_wealth.fee_rates.financial_assets: financial_assets is a balance figure"),
        (["--month", "2025-05", "--warehouse", wh, "--settings", str(settings_file)],
         "bohai_wealth: no month pair to count tier moves from"),
        (["--month", "2025-07", "--warehouse", wh], "no program has a snapshot for 2025-07"),
        (["--month", "2025-06", "--warehouse", wh, "--whatif", str(RULES_DIR / "bohai_wealth.yaml")],
         "--whatif RULES_FILE and --input DIR go together"),
        (["--month", "2025-06", "--warehouse", wh, "--whatif", str(RULES_DIR / "bohai_wealth.yaml"), "--input",
          str(tmp_path / "no-landing")], "--input"),
    ]
    for args, message in cases:
        done = tiers_cli("equity", *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_rules_check_checks_the_settings_beside_the_programs(tiers_cli, tmp_path):
    folder = tmp_path / "bank-rules"
    folder.mkdir()
    (folder / "icbc_star.yaml").write_bytes((SHIPPED_RULES_DIR / "icbc_star.yaml").read_bytes())
    (folder / "equity.yaml").write_bytes((SHIPPED_RULES_DIR / "equity.yaml").read_bytes())
    done = tiers_cli("--rules-dir", str(folder), "rules", "check", check=True)
    assert done.stdout.count(" ok ") == 2 and "equity.yaml: equity settings ok (not a program)" in done.stdout
    (folder / "equity.yaml").write_text("programs: {icbc_star: {margin_rates: {investment: 0.01}}}\n",
                                        encoding="utf-8")
    done = tiers_cli("--rules-dir", str(folder), "rules", "check")
    assert done.returncode == 1
    assert done.stderr == (f"error: {folder / 'equity.yaml'}: programs.icbc_star.margin_rates.investment: "
                           "investment is a counted figure; give its rate under fee_rates (a counted figure)\n")


def test_equity_does_not_import_prefect():
    """Without --whatif, `tiers equity` is DuckDB and numpy only: no Prefect start-up to pay."""
    import subprocess
    import sys

    code = "import sys, interfaces.equity, interfaces.html_report; assert 'prefect' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
