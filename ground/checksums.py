"""Hashes of files.

SHA-256 is what the manifests promise (each input file's and each published snapshot's). Whether a
landing file changed is decided by its content alone, with BLAKE3: cryptographic, so an equal digest
means equal content (and the SHA-256 stored when the file was read still describes it), and about
three times as fast as SHA-256 here (docs/decisions.md, "A change is always noticed").
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

_BLOCK = 1 << 23  # 8 MiB: large enough that both hashers release the GIL and run side by side


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: Path) -> str:
    """BLAKE3 of the file's bytes: what decides whether a landing file changed."""
    digest = blake3.blake3()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def content_and_sha256(path: Path) -> tuple[str, str]:
    """BLAKE3 and SHA-256 of the file in one read: SHA-256 on a helper thread while BLAKE3 hashes the
    same block, so the pair costs about what SHA-256 alone does."""
    content, sha = blake3.blake3(), hashlib.sha256()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as helper, Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            pending = helper.submit(sha.update, block)
            content.update(block)
            pending.result()
    return content.hexdigest(), sha.hexdigest()
