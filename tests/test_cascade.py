"""State across months (programs.md section 4): each month's snapshot rests on the month before, so
re-running a published month re-evaluates it and every later published month, in order; a gap in the
chain is an error; and a program whose window lacks history is skipped only when nobody named it.

The flows run in-process (``flows.runs.*.fn``) under the session's temporary Prefect API.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from flows.plan import plan_run
from rules import load_programs
from stores import snapshots
from ground.errors import InputError, StateError
from ground.months import Month, month_range
from stores.warehouse import Warehouse
from transforms.evaluate import check_chain, predecessor

GOLDEN = Path(__file__).resolve().parent / "golden"
PROGRAM = "icbc_star"
FIRST, LAST = "2024-12", "2025-03"


# -- helpers ----------------------------------------------------------------------------------------

def copy_landing(target: Path, scenario: str) -> Path:
    shutil.copytree(GOLDEN / scenario / "landing", target)
    return target


def snapshot_rows(warehouse: Path, program: str = PROGRAM) -> dict[tuple[str, str], dict]:
    """(as_of, customer_id) -> every column of the published row."""
    files = sorted(str(p) for p in (warehouse / "snapshots" / f"program={program}").rglob("*.parquet"))
    if not files:
        return {}
    rel = duckdb.sql(
        "SELECT * FROM read_parquet($files, hive_partitioning = true) ORDER BY as_of, customer_id",
        params={"files": files},
    )
    rows = [dict(zip(rel.columns, row)) for row in rel.fetchall()]
    keyed = {(str(r["as_of"]), r["customer_id"]): r for r in rows}
    assert len(keyed) == len(rows), "a customer appears twice in one month"
    return keyed


def published_files(warehouse: Path) -> set[str]:
    return {str(p.relative_to(warehouse)) for p in (warehouse / "snapshots").rglob("*") if p.is_file()}


def assert_chain(rows: dict[tuple[str, str], dict], months: list[str]) -> None:
    """previous_tier of every month is the tier of the month before it, customer by customer."""
    ends = [str(Month.parse(m).last_day) for m in months]
    for before, after in zip(ends, ends[1:]):
        customers = {c for (as_of, c) in rows if as_of == after}
        assert customers == {c for (as_of, c) in rows if as_of == before}
        for customer in customers:
            assert rows[(after, customer)]["previous_tier"] == rows[(before, customer)]["tier"], (after, customer)


@pytest.fixture(scope="module")
def backfilled(prefect_harness, tmp_path_factory):
    """icbc_buffers backfilled from 2024-12 to 2025-03 (icbc_star); tests work on copies of it."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("cascade")
    landing = copy_landing(base / "landing", "icbc_buffers")
    warehouse = base / "warehouse"
    result = backfill.fn(str(landing), FIRST, LAST, str(warehouse), [PROGRAM])
    assert [(e.month, e.initial) for e in result["evaluated"]] == [
        ("2024-12", True), ("2025-01", False), ("2025-02", False), ("2025-03", False)
    ]
    return base


@pytest.fixture
def workspace(backfilled, tmp_path):
    """A private copy of the backfilled landing folder and warehouse."""
    landing = copy_landing(tmp_path / "landing", "icbc_buffers")
    warehouse = tmp_path / "warehouse"
    shutil.copytree(backfilled / "warehouse", warehouse, ignore=shutil.ignore_patterns("tiers.lock"))
    # The copied warehouse remembers the original landing paths; re-ingesting from the copy is fine.
    return landing, warehouse


# -- the cascade ------------------------------------------------------------------------------------

def test_rerun_with_same_inputs_gives_identical_rows(workspace):
    from flows.runs import month_end

    landing, warehouse = workspace
    before = snapshot_rows(warehouse)
    assert len(before) == 4 * 6

    result = month_end.fn(str(landing), "2025-01", str(warehouse), [PROGRAM])

    assert [e.month for e in result["evaluated"]] == ["2025-01", "2025-02", "2025-03"]
    assert not [i for i in result["ingested"] if i.read_now]  # nothing changed, nothing read again
    assert snapshot_rows(warehouse) == before
    assert_chain(before, [FIRST, "2025-01", "2025-02", LAST])


def test_rerun_of_an_earlier_month_recomputes_every_later_published_month(workspace):
    from flows.runs import month_end

    landing, warehouse = workspace
    before = snapshot_rows(warehouse)
    december = snapshots.snapshot_path(Warehouse(warehouse), PROGRAM, Month.parse(FIRST))
    december_bytes, december_mtime = december.read_bytes(), december.stat().st_mtime_ns
    assert [before[(m, "climber")]["tier"] for m in ("2025-01-31", "2025-02-28", "2025-03-31")] == [3, 3, 4]

    # January is resent: the climber held 2,000,000.00 in a time deposit, not 10,000.00.
    january = landing / "balances" / "2025-01.csv"
    lines = january.read_text().splitlines()
    changed = [line.replace(",10000.00,", ",2000000.00,") if line.startswith("climber-") else line for line in lines]
    assert changed != lines
    january.write_text("\n".join(changed) + "\n")

    result = month_end.fn(str(landing), "2025-01", str(warehouse), [PROGRAM])

    assert [e.month for e in result["evaluated"]] == ["2025-01", "2025-02", "2025-03"]
    assert [(i.dataset, i.month) for i in result["ingested"] if i.read_now] == [("balances", "2025-01")]
    after = snapshot_rows(warehouse)
    climber = {m: after[(m, "climber")] for m in ("2025-01-31", "2025-02-28", "2025-03-31")}
    assert climber["2025-01-31"]["points"] > 2000
    assert (climber["2025-01-31"]["previous_tier"], climber["2025-01-31"]["tier"],
            climber["2025-01-31"]["reason"]) == (3, 5, "upgrade")
    # The later months were recomputed on the new January: they now start from five-star.
    assert (climber["2025-02-28"]["previous_tier"], climber["2025-02-28"]["tier"]) == (5, 5)
    assert (climber["2025-03-31"]["previous_tier"], climber["2025-03-31"]["tier"]) == (5, 5)
    assert climber["2025-03-31"]["reason"] != before[("2025-03-31", "climber")]["reason"]
    assert_chain(after, [FIRST, "2025-01", "2025-02", LAST])
    # Everybody else, and December, are untouched.
    assert {k: v for k, v in after.items() if k[1] != "climber"} == {
        k: v for k, v in before.items() if k[1] != "climber"
    }
    assert after[("2024-12-31", "climber")] == before[("2024-12-31", "climber")]
    assert december.read_bytes() == december_bytes and december.stat().st_mtime_ns == december_mtime


def test_missing_predecessor_publishes_nothing_for_any_program(prefect_harness, tmp_path):
    from flows.runs import backfill, month_end

    warehouse = tmp_path / "warehouse"
    backfill.fn(str(copy_landing(tmp_path / "money", "icbc_money")), "2025-06", "2025-06", str(warehouse))
    assert snapshots.published_months(Warehouse(warehouse), PROGRAM) == [Month.parse("2025-06")]
    published = published_files(warehouse)

    with pytest.raises(StateError, match="run 2025-07 first"):
        month_end.fn(str(copy_landing(tmp_path / "buffers", "icbc_buffers")), "2025-08", str(warehouse))

    assert published_files(warehouse) == published


# -- predecessor: the chain of months ---------------------------------------------------------------

def _fake_published(warehouse: Warehouse, program: str, months: list[str]) -> None:
    for month in months:
        path = snapshots.snapshot_path(warehouse, program, Month.parse(month))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_predecessor_follows_the_chain_of_published_months(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    assert predecessor(warehouse, "p", Month.parse("2025-06")) is None  # nothing published: initial

    _fake_published(warehouse, "p", ["2025-03", "2025-04", "2025-05", "2025-06"])
    # A staged or half-written month folder without its file is not a published month.
    (snapshots.program_dir(warehouse, "p") / "as_of=2025-07-31").mkdir()

    assert predecessor(warehouse, "p", Month.parse("2025-03")) is None  # re-running the first month: initial
    assert predecessor(warehouse, "p", Month.parse("2025-05")) == snapshots.snapshot_path(
        warehouse, "p", Month.parse("2025-04"))
    assert predecessor(warehouse, "p", Month.parse("2025-07")) == snapshots.snapshot_path(
        warehouse, "p", Month.parse("2025-06"))
    assert predecessor(warehouse, "other", Month.parse("2025-09")) is None  # programs have their own chains

    with pytest.raises(StateError) as gap:
        predecessor(warehouse, "p", Month.parse("2025-09"))
    message = str(gap.value)
    assert "2025-08" in message and "run 2025-07 first" in message and "\n" not in message

    # A month before the chain extends it backwards: an initial evaluation, as long as the run's
    # months then reach the chain without a gap (check_chain).
    assert predecessor(warehouse, "p", Month.parse("2025-01")) is None
    check_chain(warehouse, "p", [Month.parse(m) for m in ("2025-02", "2025-03", "2025-04", "2025-05", "2025-06")])
    with pytest.raises(StateError) as gap_before_chain:
        check_chain(warehouse, "p", [Month.parse(m) for m in ("2025-01", "2025-03", "2025-04", "2025-05", "2025-06")])
    message = str(gap_before_chain.value)
    assert "2025-02..2025-02 are not published" in message and "--from 2025-01 --to 2025-02" in message


# -- the plan: cascade months and programs lacking history --------------------------------------------

def test_plan_cascades_over_later_published_months(tmp_path):
    landing = copy_landing(tmp_path / "landing", "icbc_buffers")
    warehouse = Warehouse(tmp_path / "warehouse")
    _fake_published(warehouse, PROGRAM, ["2025-01", "2025-02", "2025-03", "2025-04"])

    plan = plan_run(landing, warehouse, load_programs([PROGRAM]), Month.parse("2025-02"), Month.parse("2025-02"),
                    programs_named=True)

    assert plan.evaluations == [(Month.parse(m), PROGRAM) for m in ("2025-02", "2025-03", "2025-04")]
    # Every month's window is ingested: six months before 2025-02 up to 2025-04, each once.
    wanted = {(d, str(m)) for d, m, _ in plan.ingest}
    months = [str(m) for m in month_range(Month.parse("2024-09"), Month.parse("2025-04"))]
    assert wanted == {(d, m) for d in ("balances", "transactions") for m in months}
    assert len(plan.ingest) == len(wanted)


def test_plan_skips_an_unnamed_program_whose_window_lacks_history(tmp_path):
    landing = copy_landing(tmp_path / "landing", "icbc_money")  # 2025-01..2025-06: six months
    warehouse = Warehouse(tmp_path / "warehouse")
    june = Month.parse("2025-06")

    plan = plan_run(landing, warehouse, load_programs(), june, june, programs_named=False)

    # bohai_wealth and the private-banking standards read one month of balances and no transactions, so
    # they have all they need (icbc_money has USD rates); CGB does not apply to a bank without card data.
    assert plan.evaluations == [(june, "bohai_wealth"), (june, PROGRAM), (june, "private_banking_8m"),
                                (june, "private_banking_cbrc"), (june, "private_banking_ubs")]
    note, not_applying = plan.skipped
    assert not_applying.startswith("cgb_card_star: does not apply")
    assert note.startswith("boc_vip: skipped")
    assert str(landing / "transactions" / "2024-07") in note and "boc_vip" in note
    assert {str(m) for _, m, _ in plan.ingest} == {str(m) for m in month_range(Month.parse("2025-01"), june)}

    only_boc = plan_run(landing, warehouse, load_programs(["boc_vip"]), june, june, programs_named=False)
    assert only_boc.evaluations == [] and len(only_boc.skipped) == 1


def test_named_program_lacking_history_fails_naming_the_missing_file(prefect_harness, tmp_path):
    from flows.runs import backfill

    landing = copy_landing(tmp_path / "landing", "icbc_money")
    warehouse = tmp_path / "warehouse"
    june = Month.parse("2025-06")

    missing = str(landing / "transactions" / "2024-07.csv")
    # Named, the program is never skipped: the plan either fails up front or keeps it (and the run fails).
    try:
        plan = plan_run(landing, Warehouse(warehouse), load_programs(["boc_vip"]), june, june, programs_named=True)
    except InputError as early:
        assert missing in str(early)
    else:
        assert plan.evaluations == [(june, "boc_vip")] and plan.skipped == []
        assert ("transactions", Month.parse("2024-07")) in {(d, m) for d, m, _ in plan.ingest}

    with pytest.raises(InputError) as raised:
        backfill.fn(str(landing), "2025-06", "2025-06", str(warehouse), ["boc_vip"])

    message = str(raised.value)
    assert missing in message
    assert "boc_vip" in message and "2025-06" in message
    assert not list((warehouse / "snapshots").rglob("*.parquet"))
