"""The code version stamped on manifests: the release and a fingerprint of the code that computes tiers."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

import ground
import rules
import stores
import transforms

# The packages whose code decides a tier: this layer and the ones below it (pyproject's layers).
_TIER_CODE = (ground, rules, stores, transforms)


@cache
def code_version() -> str:
    """``<release>+<sha256 of the .py, .sql and .yaml files of the pipeline>``: equal code, equal version.

    The files are those of the modules this process imported (not folders beside the source tree, nor
    a folder of the current directory that happens to share a package's name)."""
    digest = hashlib.sha256()
    for package in _TIER_CODE:
        folder = Path(package.__file__).resolve().parent
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".py", ".sql", ".yaml") and "__pycache__" not in path.parts:
                digest.update(f"{package.__name__}/{path.relative_to(folder)}".encode())
                digest.update(path.read_bytes())
    return f"{metadata.version('tiers')}+{digest.hexdigest()[:12]}"
