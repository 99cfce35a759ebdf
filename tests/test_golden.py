"""The golden scenarios (tests/golden: the specification's, and the project's own written from the spec)
through the CLI, row for row.

Each scenario's README names the exact command; its expected/<program>.csv holds every published
row. We run the command into an empty warehouse and compare every row and every listed column. A
scenario whose run must fail has expected/error.txt instead: the pieces its error must say.
"""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import duckdb
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIOS = sorted(p.name for p in GOLDEN.iterdir() if (p / "README.md").is_file())


def scenario_command(scenario: Path) -> list[str]:
    match = re.search(r"^\s+tiers (backfill .+)$", (scenario / "README.md").read_text(), re.MULTILINE)
    assert match, f"{scenario}/README.md names no tiers command"
    return shlex.split(match.group(1))


def published_rows(warehouse: Path, program: str, columns: list[str]) -> list[dict]:
    """The snapshots as the CSV would spell them: NULL as '', booleans lower-case, decimals as stored."""
    cells = ", ".join(f"COALESCE(CAST({c} AS VARCHAR), '') AS {c}" for c in columns)
    rows = duckdb.sql(
        f"SELECT {cells} FROM read_parquet($glob, hive_partitioning = true) WHERE program = $program "
        "ORDER BY as_of, customer_id",
        params={"glob": str(warehouse / "snapshots" / "**" / "*.parquet"), "program": program},
    ).fetchall()
    return [dict(zip(columns, row)) for row in rows]


def test_every_scenario_is_collected():
    assert {
        "icbc_thresholds", "icbc_money", "icbc_buffers", "icbc_floors_caps", "boc_tracks",
        "cgb_bands", "cgb_reviews", "private_banking_bounds", "private_banking_reviews", "private_banking_no_usd",
    } <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden_scenario(name, tiers_cli, tmp_path):
    scenario = GOLDEN / name
    warehouse = tmp_path / "warehouse"
    error_file = scenario / "expected" / "error.txt"
    if error_file.is_file():
        done = tiers_cli(*scenario_command(scenario), "--warehouse", str(warehouse), cwd=scenario)
        assert done.returncode != 0, f"{name}: the run should fail\n{done.stdout}"
        assert "Traceback" not in done.stderr, done.stderr
        for piece in error_file.read_text().splitlines():
            assert piece.strip().lower() in done.stderr.lower(), f"{name}: the error does not say {piece!r}:\n{done.stderr}"
        assert not list((warehouse / "snapshots").rglob("*.parquet")), f"{name}: a failed run published snapshots"
        return
    tiers_cli(*scenario_command(scenario), "--warehouse", str(warehouse), cwd=scenario, check=True)
    for expected_file in sorted((scenario / "expected").glob("*.csv")):
        with expected_file.open(newline="") as handle:
            expected = list(csv.DictReader(handle))
        columns = list(expected[0].keys())
        actual = published_rows(warehouse, expected_file.stem, columns)
        assert len(actual) == len(expected), f"{name}: {len(actual)} rows published, {len(expected)} expected"
        for want, got in zip(expected, actual):
            assert got == want, f"{name} {want['as_of']} {want['customer_id']}"


SHARED_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"


@pytest.mark.skipif(not SHARED_GOLDEN.is_dir(), reason="../shared/golden is not beside this clone; the copy in tests/golden stands alone")
def test_the_copy_matches_the_shared_scenarios():
    """The specification's scenarios in tests/golden are copies: they must not drift from them. The
    project's own scenarios (those not in ../shared/golden) are left out of the comparison."""
    shared_names = {p.name for p in SHARED_GOLDEN.iterdir() if p.is_dir()}
    assert shared_names <= set(SCENARIOS), "a shared scenario is missing from tests/golden"
    shared = {p.relative_to(SHARED_GOLDEN): p.read_bytes() for p in SHARED_GOLDEN.rglob("*") if p.is_file()}
    copied = {
        p.relative_to(GOLDEN): p.read_bytes()
        for name in shared_names
        for p in (GOLDEN / name).rglob("*")
        if p.is_file()
    }
    assert copied == shared
