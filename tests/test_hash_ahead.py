"""Landing files hashed ahead on a background thread give the same SHA-256 as hashing them on demand."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from transforms import landing, runner


@pytest.fixture
def con():
    connection = duckdb.connect()
    runner.run(connection, "warehouse_schema")
    yield connection
    connection.close()


def test_hashed_ahead_equals_hashed_on_demand_and_is_cached(con, tmp_path):
    files = []
    for index in range(3):
        path = tmp_path / f"month-{index}.csv"
        path.write_bytes(bytes(range(256)) * (4096 * (index + 1)))
        files.append(path)
    landing.hash_ahead(con, files)
    for path in files:
        assert landing.file_sha256(path, con) == hashlib.sha256(path.read_bytes()).hexdigest()
    # Now cached in the warehouse: nothing is hashed ahead again.
    landing.hash_ahead(con, files)
    assert not any(str(path.resolve()) == key[0] for path in files for key in landing._AHEAD)


def test_a_changed_file_is_hashed_again(con, tmp_path):
    path = tmp_path / "month.csv"
    path.write_text("a\n")
    landing.hash_ahead(con, [path])
    first = landing.file_sha256(path, con)
    path.write_text("a,b\n")  # another size: another cache key
    assert landing.file_sha256(path, con) != first == hashlib.sha256(b"a\n").hexdigest()


def test_a_read_that_fails_in_the_background_fails_where_the_checksum_is_asked(con, tmp_path, monkeypatch):
    path = tmp_path / "month.csv"
    path.write_text("a\n")

    def unreadable(file):
        raise OSError(f"{file}: input/output error")

    monkeypatch.setattr(landing, "sha256_file", unreadable)
    landing.hash_ahead(con, [path])
    with pytest.raises(OSError, match="input/output error"):
        landing.file_sha256(path, con)
    # The failure is not cached: asked again, the file is read again.
    monkeypatch.undo()
    assert landing.file_sha256(path, con) == hashlib.sha256(b"a\n").hexdigest()
