"""DuckDB readers take our paths literally, whatever characters a folder's name holds."""

from __future__ import annotations

import duckdb
import pytest

from tiers.paths import duckdb_path

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
