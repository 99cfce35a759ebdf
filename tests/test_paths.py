"""DuckDB readers take our paths literally, whatever characters a folder's name holds."""

from __future__ import annotations

import duckdb
import pytest

from ground.paths import duckdb_path

NAMES = ["landing[2025]", "a*b", "a?b", "a{x}", "a]b", "a b 客户", "[*?]{}", "wh[!1]"]


@pytest.mark.parametrize("name", NAMES)
def test_a_path_with_pattern_characters_reads_that_file_not_its_decoy(name, tmp_path):
    real, decoy = tmp_path / name, tmp_path / "landing2"
    for folder, value in ((real, "real"), (decoy, "decoy")):
        folder.mkdir(exist_ok=True)
        (folder / "x.csv").write_text(f"v\n{value}\n", encoding="utf-8")
        # A sibling that the unescaped pattern of each name would also match.
        for extra in ("a1b", "aXb", "ab", "wh2"):
            (tmp_path / extra).mkdir(exist_ok=True)
            (tmp_path / extra / "x.csv").write_text("v\ndecoy\n", encoding="utf-8")
    rows = duckdb.connect().execute("SELECT v FROM read_csv($p)", {"p": duckdb_path(real / "x.csv")}).fetchall()
    assert rows == [("real",)]



@pytest.fixture(scope="module")
def decoy_beside(prefect_harness, tmp_path_factory):
    """A folder holding a decoy warehouse `wh1` (other data for one customer), a landing folder and a
    reference warehouse of its 2025-05..2025-06 (both outside the folder)."""
    from flows.runs import backfill
    from test_reliability import copy_landing, scale_balances

    base = tmp_path_factory.mktemp("decoys").resolve()
    landing, decoy_landing = copy_landing(base / "landing"), copy_landing(base / "decoy-landing")
    scale_balances(decoy_landing, "climber", 3, ["2024-12", "2025-01", "2025-02", "2025-03", "2025-04", "2025-05"])
    backfill.fn(str(landing), "2025-05", "2025-06", str(base / "reference"), ["icbc_star"])
    folder = base / "warehouses"
    backfill.fn(str(decoy_landing), "2025-05", "2025-05", str(folder / "wh1"), ["icbc_star"])
    return folder, landing, base / "reference"


@pytest.mark.parametrize("name", ["wh[1]", "wh*", "wh{1}", "仓库 wh"])
def test_a_warehouse_named_like_a_pattern_continues_its_own_chain(decoy_beside, name):
    """June's run into `wh[1]` (or `wh?`, `wh*` ...) beside a decoy `wh1` holding other tiers takes May's
    state from its own snapshot, not the decoy's."""
    from flows.runs import backfill, month_end
    from test_reliability import published_rows

    folder, landing, reference = decoy_beside
    real, decoy = folder / name, folder / "wh1"
    backfill.fn(str(landing), "2025-05", "2025-05", str(real), ["icbc_star"])
    assert published_rows(real, ["2025-05"]) != published_rows(decoy, ["2025-05"])

    month_end.fn(str(landing), "2025-06", str(real), ["icbc_star"])

    assert published_rows(real, ["2025-06"]) == published_rows(reference, ["2025-06"])
    assert not (decoy / "snapshots" / "program=icbc_star" / "as_of=2025-06-30").exists()


def test_a_warehouse_path_with_a_question_mark_is_refused_before_anything_is_written(tiers_cli, tmp_path):
    """DuckDB reads '?' in a database path as options and would write its log elsewhere (wh.wal?x/)."""
    from test_reliability import copy_landing

    landing = copy_landing(tmp_path / "landing")
    (tmp_path / "wh.wal?x").mkdir()  # where DuckDB would put the log
    done = tiers_cli("run", "--input", str(landing), "--month", "2025-06", "--program", "icbc_star",
                     "--warehouse", str(tmp_path / "wh?x"))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'wh?x'}: a warehouse path with '?'"), line
    assert not (tmp_path / "wh?x").exists() and not any((tmp_path / "wh.wal?x").iterdir())
