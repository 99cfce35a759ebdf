"""Landing files hashed ahead on a background thread: the same result as hashing them on demand, and
whether a file changed is decided by its content alone (never by size or mtime)."""

from __future__ import annotations

import os

import blake3
import pytest

from ground.errors import InputError
from transforms import landing


def test_hashed_ahead_equals_hashed_on_demand(tmp_path):
    files = []
    for index in range(3):
        path = tmp_path / f"month-{index}.csv"
        path.write_bytes(bytes(range(256)) * (4096 * (index + 1)))
        files.append(path)
    ahead = landing.HashAhead()
    ahead.start(files)
    for path in files:
        assert landing.seen(path, ahead).digest == blake3.blake3(path.read_bytes()).hexdigest()
    assert not any(ahead.pending(path) for path in files)  # picked up, not kept


def test_runs_do_not_share_what_they_hashed_ahead(tmp_path, monkeypatch):
    path = tmp_path / "month.csv"
    path.write_bytes(b"a\n")
    one_run = landing.HashAhead()
    one_run.start([path])
    one_run.pending(path).result()
    hashed = []
    monkeypatch.setattr(landing, "_see", lambda file: hashed.append(file) or "hashed now")
    assert landing.seen(path, landing.HashAhead()) == "hashed now"  # another run hashes for itself
    assert hashed == [path] and one_run.pending(path) is not None


def test_a_corrected_file_of_the_same_size_and_mtime_is_a_changed_file(tmp_path):
    path = tmp_path / "month.csv"
    path.write_bytes(b"id,balance\na,100.00\n")
    first = landing.seen(path)
    stat = path.stat()
    path.write_bytes(b"id,balance\na,900.00\n")  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert landing.seen(path).digest != first.digest


def test_a_file_hashed_ahead_then_replaced_is_hashed_again(tmp_path):
    path = tmp_path / "month.csv"
    path.write_bytes(b"a\n")
    ahead = landing.HashAhead()
    ahead.start([path])
    ahead.pending(path).result()  # the background hash is done
    path.write_bytes(b"bb\n")  # replaced before the run got to it: this is the file the run reads
    assert landing.seen(path, ahead).digest == blake3.blake3(b"bb\n").hexdigest()


def test_a_read_that_fails_in_the_background_is_tried_again_where_the_digest_is_asked(tmp_path, monkeypatch):
    path = tmp_path / "month.csv"
    path.write_text("a\n")
    real = landing.content_digest

    def unreadable(file):
        raise OSError(f"{file}: input/output error")

    monkeypatch.setattr(landing, "content_digest", unreadable)
    ahead = landing.HashAhead()
    ahead.start([path])
    ahead.pending(path).exception()
    with pytest.raises(OSError, match="input/output error"):
        landing.seen(path, ahead)  # still failing: the error surfaces here
    monkeypatch.setattr(landing, "content_digest", real)
    assert landing.seen(path).digest == blake3.blake3(b"a\n").hexdigest()


def test_verify_unchanged_fails_on_new_content_and_on_a_rewrite_with_the_same_bytes(tmp_path):
    path = tmp_path / "month.csv"
    path.write_bytes(b"h\n1\n")
    before = landing.seen(path)
    assert landing.verify_unchanged(before) == __import__("hashlib").sha256(b"h\n1\n").hexdigest()
    path.write_bytes(b"h\n2\n")
    with pytest.raises(InputError, match="changed while this run read it"):
        landing.verify_unchanged(before)
    # Truncated and written again with the same bytes while the run read it: the read may have seen
    # nothing, so the identity (times) fails it even though the content is back.
    path.write_bytes(b"h\n1\n")
    os.utime(path, ns=(before.identity[3], before.identity[3]))
    with pytest.raises(InputError, match=str(path)):
        landing.verify_unchanged(before)
    path.unlink()
    with pytest.raises(InputError, match="removed while this run read it"):
        landing.verify_unchanged(before)
