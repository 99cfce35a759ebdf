"""The code version stamped on manifests: the release and a fingerprint of the code that computes tiers."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from tiers import __version__

_PROJECT = Path(__file__).resolve().parent.parent
_CODE = ("tiers", "transforms", "rules", "flows")


@cache
def code_version() -> str:
    """``<release>+<sha256 of the .py, .sql and .yaml files of the pipeline>``: equal code, equal version."""
    digest = hashlib.sha256()
    for package in _CODE:
        for path in sorted((_PROJECT / package).rglob("*")):
            if path.suffix in (".py", ".sql", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(_PROJECT)).encode())
                digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
