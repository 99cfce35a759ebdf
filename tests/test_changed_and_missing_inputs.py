"""Two ways a run used to exit 0 with stale or partial tiers (issue 11): a corrected month file of the
same size and mtime was taken as unchanged, and without --program a missing month inside a program's
window skipped the program."""

from __future__ import annotations

import os

import pytest

from test_reliability import PROGRAM, copy_landing, published_rows
from tiers.errors import InputError


def test_a_corrected_file_of_the_same_size_and_mtime_is_read_again(prefect_harness, tmp_path):
    from flows.runs import backfill, month_end

    landing, corrected = copy_landing(tmp_path / "landing"), copy_landing(tmp_path / "corrected")
    june = landing / "balances" / "2025-06.csv"
    text = june.read_text()
    # The climber's June balances, one digit changed in place: the same size, then the same mtime.
    header, *rows = text.splitlines()
    climber = [i for i, row in enumerate(rows) if row.split(",")[1] == "climber"]
    assert climber
    for i in climber:
        cells = rows[i].split(",")
        column = header.split(",").index("balance")
        cells[column] = cells[column].replace(cells[column][0], "9" if cells[column][0] != "9" else "8", 1)
        rows[i] = ",".join(cells)
    fixed = "\n".join([header, *rows]) + ("\n" if text.endswith("\n") else "")
    assert len(fixed) == len(text) and fixed != text
    (corrected / "balances" / "2025-06.csv").write_text(fixed)
    backfill.fn(str(corrected), "2025-06", "2025-06", str(tmp_path / "reference"), [PROGRAM])

    warehouse = tmp_path / "warehouse"
    backfill.fn(str(landing), "2025-06", "2025-06", str(warehouse), [PROGRAM])
    reference = published_rows(tmp_path / "reference", ["2025-06"])
    assert published_rows(warehouse, ["2025-06"]) != reference  # the correction changes the tiers
    stat = june.stat()
    june.write_text(fixed)
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
