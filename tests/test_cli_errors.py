"""Failures as a user of ``tiers`` sees them (data-contract.md sections 2 and 4, programs.md section 4):
a non-zero exit, the reason in one plain line on stderr naming the file / month / key, no traceback,
and nothing published.

Each ``tiers_cli`` call starts a subprocess with its own temporary Prefect server (~8 s), so only the
commands that run flows go through it; ``tiers rules check`` needs no Prefect and runs in-process too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from rules import RULES_DIR
from rules.loader import load_program
from interfaces.cli import app
from ground.errors import RuleError

GOLDEN = Path(__file__).resolve().parent / "golden"


# -- helpers ----------------------------------------------------------------------------------------

def copy_landing(target: Path, scenario: str = "icbc_money") -> Path:
    shutil.copytree(GOLDEN / scenario / "landing", target)
    return target


def one_plain_line(done) -> str:
    """The failure's stderr: exactly one non-empty line, no traceback anywhere."""
    assert done.returncode != 0, f"expected a failure:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr is not one line: {done.stderr!r}"
    return lines[0]


def published(warehouse: Path) -> dict[str, bytes]:
    """Every snapshot file under snapshots/ with its bytes (an absent folder is nothing published)."""
    return {str(p.relative_to(warehouse)): p.read_bytes() for p in (warehouse / "snapshots").rglob("*.parquet")}


def edit_lines(path: Path, edit) -> None:
    header, *data = path.read_text().splitlines()
    path.write_text("\n".join([header, *edit(data)]) + "\n")


# -- through the installed command --------------------------------------------------------------------

@pytest.fixture(autouse=True)
def user_environment(monkeypatch):
    """The command as a user runs it: conftest's PREFECT_LOGGING_LEVEL=WARNING (inherited by the
    subprocess) would turn Prefect's flow-failure logs, tracebacks included, back on."""
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)


def test_missing_month_file_names_the_file_and_the_month(tiers_cli, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    missing = landing / "balances" / "2025-03.csv"
    missing.unlink()
    warehouse = tmp_path / "warehouse"

    done = tiers_cli("run", "--input", str(landing), "--month", "2025-06", "--program", "icbc_star",
                     "--warehouse", str(warehouse))

    assert done.returncode == 1
    line = one_plain_line(done)
    assert line.startswith("error: ")
    assert str(missing) in line and "2025-03" in line and "balances" in line
    assert published(warehouse) == {}


def test_month_without_its_predecessor_says_which_month_to_run_first(tiers_cli, prefect_harness, tmp_path):
    from flows.runs import backfill

    warehouse = tmp_path / "warehouse"
    # The earlier month-end, in-process (the same flow as `tiers backfill`, one subprocess cheaper).
    backfill.fn(str(copy_landing(tmp_path / "money")), "2025-06", "2025-06", str(warehouse), ["icbc_star"])
    before = published(warehouse)
    assert list(before) == ["snapshots/program=icbc_star/as_of=2025-06-30/data.parquet"]

    done = tiers_cli("run", "--input", str(copy_landing(tmp_path / "buffers", "icbc_buffers")), "--month", "2025-08",
                     "--program", "icbc_star", "--warehouse", str(warehouse))

    assert done.returncode == 1
    line = one_plain_line(done)
    assert "icbc_star" in line and "2025-08" in line
    assert "run 2025-07 first" in line
    assert published(warehouse) == before


def test_bad_rows_over_the_limit_publish_nothing_until_tolerated(tiers_cli, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    june = landing / "balances" / "2025-06.csv"

    def break_two(data):
        data[4] = data[4].replace(",10000.00,", ",-10000.00,")
        data[50] = data[50].replace(",mortgage,", ",yacht,")
        return data

    edit_lines(june, break_two)
    warehouse = tmp_path / "warehouse"
    run = ("run", "--input", str(landing), "--month", "2025-06", "--program", "icbc_star", "--warehouse", str(warehouse))

    refused = tiers_cli(*run)

    assert refused.returncode == 1
    line = one_plain_line(refused)
    assert "2 bad rows" in line and "--max-bad-rows 0" in line and "nothing was published" in line
    assert str(june) in line
    assert "out_of_range in balance x1" in line and "unknown_code in product_code x1" in line
    assert str(warehouse / "quarantine") in line
    assert published(warehouse) == {}
    [quarantine] = (warehouse / "quarantine").rglob("*.parquet")
    assert duckdb.sql(f"SELECT list_sort(list(source_row)) FROM '{quarantine}'").fetchall()[0][0] == [6, 52]

    tolerated = tiers_cli(*run, "--max-bad-rows", "2")

    assert tolerated.returncode == 0, tolerated.stderr
    [snapshot] = published(warehouse)
    assert snapshot == "snapshots/program=icbc_star/as_of=2025-06-30/data.parquet"
    customers = duckdb.sql(f"SELECT count(*) FROM '{warehouse / snapshot}'").fetchall()[0][0]
    assert customers == 4


def test_landing_file_missing_a_column_names_the_file_and_the_column(tiers_cli, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    june = landing / "balances" / "2025-06.csv"
    duckdb.sql(
        f"COPY (SELECT * EXCLUDE (balance) FROM read_csv('{june}', all_varchar = true)) TO '{june}.new' (HEADER true)"
    )
    Path(f"{june}.new").replace(june)
    warehouse = tmp_path / "warehouse"

    done = tiers_cli("run", "--input", str(landing), "--month", "2025-06", "--program", "icbc_star",
                     "--warehouse", str(warehouse))

    assert done.returncode == 1
    line = one_plain_line(done)
    assert str(june) in line and "missing column balance" in line
    assert published(warehouse) == {}


def test_rules_check_of_a_malformed_file_names_the_file_and_the_key(tiers_cli, tmp_path):
    rule_file = tmp_path / "icbc_star.yaml"
    rule_file.write_text((RULES_DIR / "icbc_star.yaml").read_text().replace("per_amount: 10000", "per_amount: -5"))

    done = tiers_cli("rules", "check", str(rule_file))

    assert done.returncode == 1
    line = one_plain_line(done)
    assert str(rule_file) in line and "points.per_amount" in line and "-5" in line


# -- rule files, in-process ---------------------------------------------------------------------------

def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (RULES_DIR / "icbc_star.yaml").read_text()
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("per_amount: 10000", "per_amount: lots", "points.per_amount"),
        ("{tier: 6, name: six-star,", "{tier: six, name: six-star,", "tiers.1.tier"),
        ("product_codes: [mortgage]", "product_codes: [mortgages]", "figures.mortgage.product_codes"),
        ("  credit_card_gold: 5", "  credit_card_golden: 5", "floors"),
        ("points:\n", "points: [\n", "line "),
    ],
    ids=["not_a_number", "tier_not_int", "unknown_code", "unknown_floor", "broken_yaml"],
)
def test_rules_check_names_file_and_key(tmp_path, old, new, key):
    path = _variant(tmp_path, old, new)

    result = CliRunner().invoke(app, ["rules", "check", str(path)])

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}")
    assert key in lines[0]


def test_rules_check_passes_the_shipped_rules():
    result = CliRunner().invoke(app, ["rules", "check"])

    assert result.exit_code == 0, result.stderr
    assert "icbc_star ok" in result.stdout and "boc_vip ok" in result.stdout


def test_rule_error_key_reads_as_written_in_the_file(tmp_path):
    path = _variant(tmp_path, "    window_months: 6\n    product_codes: [time_deposit",
                    "    window_month: 6\n    product_codes: [time_deposit")

    with pytest.raises(RuleError) as raised:
        load_program(path)

    assert "figures.long_term_assets.window_month" in str(raised.value)
