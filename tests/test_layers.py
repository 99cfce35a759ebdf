"""The layers of pyproject.toml's import-linter contract hold: no import runs from a lower layer up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_layers_import_one_way():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_contract_catches_an_import_that_runs_up(tmp_path):
    """The contract is not vacuous: in a copy of the code, a ground module importing the CLI breaks it."""
    for package in ("ground", "rules", "stores", "data", "transforms", "flows", "interfaces"):
        shutil.copytree(PROJECT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    (tmp_path / "ground" / "layer_probe.py").write_text("import interfaces.cli  # noqa: F401\n")
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ground.layer_probe -> interfaces.cli" in result.stdout
