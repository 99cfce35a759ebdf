"""Paths are literal (data-contract.md section 3, "Who may write"): a landing folder whose name holds
characters a glob would expand is that folder, never a pattern, even beside a sibling the pattern
matches. Bug reproduced: ``landing[2025]`` beside ``landing2`` was read from ``landing2`` while the
manifest hashed the real file.

Each case runs the month-end through ``flows.runs.month_end.fn`` (as the malformed corpus does) on a
copy of the ``icbc_money`` landing folder under the odd name, beside a decoy sibling whose files
differ (an extra customer, an empty June), and must publish exactly the rows of the same run from a
plainly named folder.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from ground.paths import duckdb_path

GOLDEN = Path(__file__).resolve().parent / "golden"
MONTH = "2025-06"
PROGRAM = "bohai_wealth"  # one month of balances and the reference files

# (odd folder name, a sibling the unescaped name would match as a pattern)
NAMES = [
    ("landing[2025]", "landing2"),
    ("landing]x[", "landing]x["),  # no pattern to match: the name itself must still work
    ("landing*", "landing-decoy"),
    ("land?ng", "landing"),
    ("landing{a,b}", "landinga"),
    ("landing with spaces", "landing_with_spaces"),
    ("落地 [数据]", "落地 数"),
]


def _snapshot_rows(warehouse: Path) -> list[tuple]:
    files = sorted((warehouse / "snapshots" / f"program={PROGRAM}").rglob("*.parquet"))
    assert len(files) == 1
    return duckdb.sql(f"SELECT customer_id, points, tier, reason FROM read_parquet('{files[0]}') ORDER BY customer_id").fetchall()


def _make_decoy(folder: Path) -> None:
    shutil.copytree(GOLDEN / "icbc_money" / "landing", folder)
    with (folder / "customers.csv").open("a") as handle:
        handle.write("decoy-customer,retail\n")
    june = folder / "balances" / f"{MONTH}.csv"
    june.write_text(june.read_text().splitlines()[0] + "\n")


def _as_parquet(landing: Path) -> None:
    june = landing / "balances" / f"{MONTH}.csv"
    target = str(june.with_suffix(".parquet")).replace("'", "''")
    # The test's own read of the odd folder escapes its name as the code does.
    duckdb.execute(f"COPY (SELECT * FROM read_csv($p, all_varchar = true, header = true)) TO '{target}' (FORMAT parquet)",
                   {"p": duckdb_path(june)})
    june.unlink()


@pytest.fixture(scope="module")
def expected(prefect_harness, tmp_path_factory) -> list[tuple]:
    from flows.runs import month_end

    base = tmp_path_factory.mktemp("plain")
    landing = base / "landing"
    shutil.copytree(GOLDEN / "icbc_money" / "landing", landing)
    month_end.fn(str(landing), MONTH, str(base / "warehouse"), [PROGRAM])
    return _snapshot_rows(base / "warehouse")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("name", "decoy"), NAMES, ids=[n for n, _ in NAMES])
def test_a_landing_folder_named_like_a_pattern_is_read_literally(expected, tmp_path, name, decoy, fmt):
    from flows.runs import month_end

    base = tmp_path.resolve()
    landing = base / name
    shutil.copytree(GOLDEN / "icbc_money" / "landing", landing)
    if decoy != name:
        _make_decoy(base / decoy)
    if fmt == "parquet":
        _as_parquet(landing)
        if decoy != name:
            _as_parquet(base / decoy)
    warehouse = base / "warehouse"

    result = month_end.fn(str(landing), MONTH, str(warehouse), [PROGRAM])

    assert [(e.program, e.month) for e in result["evaluated"]] == [(PROGRAM, MONTH)]
    assert _snapshot_rows(warehouse) == expected
    # Every file ingested is the real folder's, with that file's own hash (the manifest's) and row count.
    con = duckdb.connect(str(warehouse / "tiers.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT path, sha256, rows_read FROM ingested_files").fetchall()
    finally:
        con.close()
    assert rows
    for path, sha, rows_read in rows:
        assert Path(path).parent in (landing, landing / "balances"), path
        assert sha == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    june = [r for r in rows if Path(r[0]).parent.name == "balances"]
    assert [r[2] for r in june] == [90]
