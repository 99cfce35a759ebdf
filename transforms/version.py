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
    """``<release>+<sha256 of the pipeline's .py and .sql files and the code vocabularies>``: equal code,
    equal version. Program rule files have their own fingerprint (``rules_version``); the equity
    settings decide no tier.

    The files are those of the modules this process imported (not folders beside the source tree, nor
    a folder of the current directory that happens to share a package's name)."""
    digest = hashlib.sha256()
    for package in _TIER_CODE:
        folder = Path(package.__file__).resolve().parent
        for path in sorted(folder.rglob("*")):
            if _decides_tiers(path):
                digest.update(f"{package.__name__}/{path.relative_to(folder)}".encode())
                digest.update(path.read_bytes())
    return f"{metadata.version('tiers')}+{digest.hexdigest()[:12]}"


def _decides_tiers(path: Path) -> bool:
    if "__pycache__" in path.parts:
        return False
    return path.suffix in (".py", ".sql") or path.name == "vocabularies.yaml"
