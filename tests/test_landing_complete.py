"""Complete files only (data-contract.md section 1, "Control files"): control files are checked when
present and required with --require-control, a file that changes while it is read fails the run, every
line of a CSV is accounted for, and names starting with . or _ are not data."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from tests.test_ingest import JUNE, balance_month, copy_landing, ingest_once, open_ingestor
from ground.errors import InputError
from ground.months import Month
from stores.warehouse import Warehouse
from transforms import runner
from transforms import ingest, landing

B = Path("balances") / "2025-06.csv"


def figures(path: Path, money: str | None = "balance") -> tuple[int, Decimal | None]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle)]
    return len(rows), (sum(Decimal(r[money]) for r in rows) if money else None)


def write_control(target: Path, rows: int, total: Decimal | str | None) -> Path:
    control = target.with_name(target.name + ".ctl")
    control.write_text(f"rows,total\n{rows},{'' if total is None else total}\n")
    return control


def stored(warehouse: Warehouse) -> list[tuple]:
    with runner.connect(warehouse) as con:
        return con.execute("SELECT dataset, month FROM ingested WHERE month IS NOT NULL").fetchall()


# -- control files ------------------------------------------------------------------------------------

def test_a_matching_control_file_passes_and_a_total_compares_as_a_number(tmp_path):
    landing_dir = copy_landing(tmp_path)
    rows, total = figures(landing_dir / B)
    write_control(landing_dir / B, rows, f"{total}0")  # 123.450 is 123.45
    write_control(landing_dir / "customers.csv", figures(landing_dir / "customers.csv", None)[0], None)
    result = ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)
    assert result.read_now and result.files[0].rows_read == rows


@pytest.mark.parametrize(("delta_rows", "delta_total"), [(1, Decimal(0)), (0, Decimal("0.01")), (-1, Decimal(-5))])
def test_a_control_file_that_does_not_match_fails_naming_the_file_and_both_figures(tmp_path, delta_rows, delta_total):
    landing_dir = copy_landing(tmp_path)
    rows, total = figures(landing_dir / B)
    control = write_control(landing_dir / B, rows + delta_rows, total + delta_total)
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError) as raised:
        ingest_once(warehouse, landing_dir)

    message = str(raised.value)
    assert message.startswith(f"{landing_dir / B}: does not match its control file {control}")
    assert f"says {rows + delta_rows} rows, total {total + delta_total}" in message
    assert f"the data has {rows} rows, total {total}" in message
    assert balance_month(warehouse) == {} and stored(warehouse) == []
    assert not (warehouse.quarantine / "balances").exists() or not any((warehouse.quarantine / "balances").iterdir())


def test_bad_rows_count_as_rows_and_their_money_as_written(tmp_path):
    landing_dir = copy_landing(tmp_path)
    path = landing_dir / B
    newline = "\r\n"
    path.write_bytes(path.read_bytes() + f"x-acct,borrower,demand_deposit,CNY,2025-06-15,100.005,{newline}".encode())
    rows, total = figures(path)
    write_control(path, rows, total)
    result = ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)
    assert (result.files[0].rows_read, result.rows_quarantined) == (rows, 1)


@pytest.mark.parametrize("text", ["rows,total\n", "rows;total\n90;1\n", "rows,total\nninety,1\n", "rows,total\n90,1e3\n",
                                  "rows,total\n90,1\n91,2\n", "count,sum\n90,1\n", b"rows,total\n\xff,1\n"])
def test_a_malformed_control_file_is_an_error_naming_it(tmp_path, text):
    landing_dir = copy_landing(tmp_path)
    control = landing_dir / "balances" / "2025-06.csv.ctl"
    control.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=f"^{control}: malformed control file"):
        ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)


def test_a_file_without_money_has_an_empty_total(tmp_path):
    landing_dir = copy_landing(tmp_path)
    control = write_control(landing_dir / "customers.csv", figures(landing_dir / "customers.csv", None)[0], "10")
    with pytest.raises(InputError, match=f"^{control}: malformed control file, total must be empty"):
        ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)


def test_a_month_folder_has_one_control_file_for_all_its_files(tmp_path):
    landing_dir = copy_landing(tmp_path)
    rows, total = figures(landing_dir / B)
    folder = landing_dir / "balances" / "2025-06"
    folder.mkdir()
    lines = (landing_dir / B).read_text().splitlines()
    (folder / "part-1.csv").write_text("\n".join(lines[:40]) + "\n")
    (folder / "part-2.csv").write_text("\n".join([lines[0], *lines[40:]]) + "\n")
    (landing_dir / B).unlink()
    write_control(folder, rows, total)
    assert ingest_once(Warehouse(tmp_path / "w1"), landing_dir).read_now
    control = write_control(folder, rows - 1, total)
    with pytest.raises(InputError, match=f"^{folder}: does not match its control file {control}"):
        ingest_once(Warehouse(tmp_path / "w2"), landing_dir)


def test_with_require_control_a_file_without_one_is_not_ready(tmp_path):
    landing_dir = copy_landing(tmp_path)
    warehouse = Warehouse(tmp_path / "warehouse")
    con = runner.connect(warehouse)
    try:
        from rules import load_programs, load_vocabularies
        ingestor = ingest.Ingestor(con, landing_dir, warehouse.quarantine, load_vocabularies(), load_programs(),
                                   require_control=True)
        with pytest.raises(InputError, match=rf"^{landing_dir / 'customers.csv'}: not ready, its control file "
                                             rf"{landing_dir / 'customers.csv.ctl'} is missing"):
            ingestor.check_ready([("balances", JUNE)])
        for name in ("customers.csv", "fx_rates.csv", "products.csv", "credit_events.csv"):
            write_control(landing_dir / name, figures(landing_dir / name, None)[0], None)
        with pytest.raises(InputError, match=rf"^{landing_dir / B}: not ready"):
            ingestor.check_ready([("balances", JUNE)])
        ingestor.ingest_all_reference()
        with pytest.raises(InputError, match="not ready"):
            ingestor.ingest_month("balances", JUNE, "the test")
        write_control(landing_dir / B, *figures(landing_dir / B))
        ingestor.check_ready([("balances", JUNE)])
        assert ingestor.ingest_month("balances", JUNE, "the test").read_now
    finally:
        con.close()


def test_a_control_file_that_arrives_later_is_checked(tmp_path):
    landing_dir = copy_landing(tmp_path)
    warehouse = Warehouse(tmp_path / "warehouse")
    assert ingest_once(warehouse, landing_dir).read_now
    assert not ingest_once(warehouse, landing_dir).read_now
    write_control(landing_dir / B, 1, Decimal(1))
    with pytest.raises(InputError, match="does not match its control file"):
        ingest_once(warehouse, landing_dir)


# -- a file that changes while it is read ----------------------------------------------------------------

@pytest.mark.parametrize("change", ["rewritten", "truncated_and_restored", "removed"])
def test_a_file_that_changes_while_the_run_reads_it_fails_the_run(tmp_path, monkeypatch, change):
    landing_dir = copy_landing(tmp_path)
    path = landing_dir / B
    original = path.read_bytes()
    real = ingest.Ingestor._validate_month

    def read_then_change(self, source):
        validated = real(self, source)
        if change == "rewritten":
            path.write_bytes(original.replace(b",500000.00,", b",400000.00,"))
        elif change == "truncated_and_restored":  # the extract rewrote it with the same bytes meanwhile
            path.write_bytes(original.split(b"\r\n", 1)[0] + b"\r\n")
            path.write_bytes(original)
        else:
            path.unlink()
        return validated

    monkeypatch.setattr(ingest.Ingestor, "_validate_month", read_then_change)
    warehouse = Warehouse(tmp_path / "warehouse")
    with pytest.raises(InputError, match=f"^{path}: (changed|removed) while this run read it"):
        ingest_once(warehouse, landing_dir)
    assert balance_month(warehouse) == {} and stored(warehouse) == []
    assert not (warehouse.quarantine / "balances" / "2025-06.parquet").exists()
    assert not any(warehouse.quarantine.rglob(".*.tmp"))  # the staged quarantine is not left behind


# -- every line of a CSV is accounted for -----------------------------------------------------------------

def test_a_last_line_too_long_for_the_reader_is_not_dropped(tmp_path):
    """DuckDB 2.0.1 returns the rows before a last line of 40 MB or more and drops that line silently."""
    landing_dir = copy_landing(tmp_path)
    path = landing_dir / B
    lines = path.read_bytes().count(b"\n")
    with path.open("ab") as handle:
        handle.write(b"huge-acct,borrower,demand_deposit,CNY,2025-06-15,1" + b"0" * (41 << 20) + b",\r\n")
    with pytest.raises(InputError, match=rf"^{path}: cannot be read as CSV \(line {lines + 1}: the reader returned {lines - 1} rows "
                                         rf"but the file holds {lines} records"):
        ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)


def test_a_file_cut_inside_a_quoted_cell_names_the_line(tmp_path):
    landing_dir = copy_landing(tmp_path)
    path = landing_dir / B
    lines = path.read_bytes().count(b"\n")
    path.write_bytes(path.read_bytes() + b'cut-acct,borrower,"demand_dep')
    with pytest.raises(InputError, match=rf"^{path}: cannot be read as CSV \(line {lines + 1}: a quoted cell is never closed"):
        ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir)


def test_records_are_counted_from_the_bytes(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b'h,x\r\na,1\r\n\r\n"b\nc",2\r\nd,3')
    records = landing.csv_records(path)
    assert (records.count, list(records.lines), records.unclosed_line) == (3, [2, 4, 6], None)
    path.write_bytes(b"h\na\nb\n")
    assert (landing.csv_records(path).count, landing.csv_records(path).lines) == (2, None)
    path.write_bytes(b'h\na\n"b\n')
    assert landing.csv_records(path).unclosed_line == 3


# -- names starting with . or _ are not data ----------------------------------------------------------------

def test_hidden_and_underscore_files_in_a_month_folder_are_not_data(tmp_path):
    landing_dir = copy_landing(tmp_path)
    folder = landing_dir / "balances" / "2025-06"
    folder.mkdir()
    (landing_dir / B).rename(folder / "part-0.csv")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-1.csv").write_text("not,a,complete,file\n")  # a writer's file in progress
    (folder / "_part-2.csv").write_text("garbage\n")
    (folder / "_temporary").mkdir()
    (folder / "_temporary" / "part-3.csv").write_text("garbage\n")
    source = landing.month_source(landing_dir, "balances", JUNE, "the test")
    assert source.files == (folder / "part-0.csv",)
    assert ingest_once(Warehouse(tmp_path / "warehouse"), landing_dir).files[0].rows_read == 90


def test_a_month_only_hidden_files_make_is_missing(tmp_path):
    landing_dir = copy_landing(tmp_path)
    folder = landing_dir / "balances" / "2025-06"
    folder.mkdir()
    (landing_dir / B).rename(folder / ".part-0.csv")
    with pytest.raises(InputError, match="has no .csv or .parquet files"):
        landing.month_source(landing_dir, "balances", Month.parse("2025-06"), "the test")



# -- through the installed command -------------------------------------------------------------------------

def test_tiers_run_require_control_fails_plainly_naming_the_file_not_ready(tiers_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    landing_dir = copy_landing(tmp_path)
    for name in ("customers.csv", "fx_rates.csv", "products.csv", "credit_events.csv"):
        write_control(landing_dir / name, figures(landing_dir / name, None)[0], None)
    warehouse = tmp_path / "warehouse"

    done = tiers_cli("run", "--input", str(landing_dir), "--month", "2025-06", "--program", "bohai_wealth",
                     "--warehouse", str(warehouse), "--require-control")

    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {landing_dir / B}: not ready"), done.stderr
    assert not list((warehouse / "snapshots").rglob("*.parquet"))
