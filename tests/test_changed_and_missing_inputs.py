"""Two ways a run used to exit 0 with stale or partial tiers (issue 11): a corrected month file of the
same size and mtime was taken as unchanged, and without --program a missing month inside a program's
window skipped the program."""

from __future__ import annotations

import os

import pytest

from test_reliability import PROGRAM, copy_landing, published_rows
from ground.errors import InputError


def test_a_corrected_file_of_the_same_size_and_mtime_is_read_again(prefect_harness, tmp_path):
    from flows.runs import backfill, month_end

    landing, corrected = copy_landing(tmp_path / "landing"), copy_landing(tmp_path / "corrected")
    june = landing / "balances" / "2025-06.csv"
    text = june.read_bytes().decode()
    # The climber's June balances, first digit changed in place (line endings kept): the same size.
    header, *rows = text.splitlines(keepends=True)
    column = header.rstrip("\r\n").split(",").index("balance")
    changed = 0
    for i, row in enumerate(rows):
        cells = row.split(",")
        if len(cells) > column and cells[1] == "climber":
            cells[column] = ("8" if cells[column][0] == "9" else "9") + cells[column][1:]
            rows[i] = ",".join(cells)
            changed += 1
    assert changed
    fixed = header + "".join(rows)
    assert len(fixed) == len(text) and fixed != text
    (corrected / "balances" / "2025-06.csv").write_bytes(fixed.encode())
    backfill.fn(str(corrected), "2025-06", "2025-06", str(tmp_path / "reference"), [PROGRAM])

    warehouse = tmp_path / "warehouse"
    backfill.fn(str(landing), "2025-06", "2025-06", str(warehouse), [PROGRAM])
    reference = published_rows(tmp_path / "reference", ["2025-06"])
    assert published_rows(warehouse, ["2025-06"]) != reference  # the correction changes the tiers
    stat = june.stat()
    june.write_bytes(fixed.encode())
    os.utime(june, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (june.stat().st_size, june.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    result = month_end.fn(str(landing), "2025-06", str(warehouse), [PROGRAM])

    assert any(i.read_now for i in result["ingested"] if (i.dataset, i.month) == ("balances", "2025-06"))
    assert published_rows(warehouse, ["2025-06"]) == reference


@pytest.mark.parametrize("named", [False, True])
def test_a_month_missing_inside_a_window_fails_with_or_without_program(prefect_harness, tmp_path, named):
    """A gap among the landing folder's months is never an empty month and never skips a program."""
    from flows.runs import month_end

    landing = copy_landing(tmp_path / "landing")
    missing = landing / "transactions" / "2025-03.csv"
    missing.unlink()
    warehouse = tmp_path / "warehouse"

    with pytest.raises(InputError) as raised:
        month_end.fn(str(landing), "2025-06", str(warehouse), [PROGRAM] if named else None)

    assert str(landing / "transactions" / "2025-03") in str(raised.value)
    assert not list((warehouse / "snapshots").rglob("*.parquet"))


def test_a_dataset_that_starts_later_than_the_landing_folder_has_a_gap_not_a_beginning(prefect_harness, tmp_path):
    """Balances from 2024-07 but transactions only from 2025-03: the missing transaction months lie
    after the landing folder's first month, so no program is skipped; the run fails naming one."""
    from flows.runs import month_end

    landing = copy_landing(tmp_path / "landing")
    for month in ("2024-07", "2024-08", "2024-09", "2024-10", "2024-11", "2024-12", "2025-01", "2025-02"):
        (landing / "transactions" / f"{month}.csv").unlink()

    with pytest.raises(InputError) as raised:
        month_end.fn(str(landing), "2025-06", str(tmp_path / "warehouse"))

    assert str(landing / "transactions") in str(raised.value)
    assert not list((tmp_path / "warehouse" / "snapshots").rglob("*.parquet"))


def test_a_snapshot_changed_after_it_was_published_is_refused_not_built_on(prefect_harness, tmp_path):
    """A snapshot overwritten outside a run (every tier set to 7) is not the file its manifest describes:
    the next month's run refuses to take its state from it."""
    import duckdb

    from flows.runs import backfill, month_end
    from test_reliability import snapshot_file
    from ground.errors import StateError

    landing, warehouse = copy_landing(tmp_path / "landing"), tmp_path / "warehouse"
    backfill.fn(str(landing), "2025-05", "2025-05", str(warehouse), [PROGRAM])
    may = snapshot_file(warehouse, "2025-05")
    forged = tmp_path / "forged.parquet"
    duckdb.sql(f"COPY (SELECT * REPLACE (7 AS tier) FROM read_parquet('{may}')) TO '{forged}' (FORMAT parquet)")
    forged.replace(may)

    with pytest.raises(StateError) as raised:
        month_end.fn(str(landing), "2025-06", str(warehouse), [PROGRAM])

    assert str(may) in str(raised.value) and "manifest" in str(raised.value)
    assert not snapshot_file(warehouse, "2025-06").exists()
