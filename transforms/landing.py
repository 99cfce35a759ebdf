"""Find the landing folder's files and make them readable in DuckDB.

Every CSV column is read as VARCHAR so that nothing is sniffed as DOUBLE and a cell like ``abc`` or
``2025-06-31`` becomes a bad row in validation rather than a crash in the reader. Each row keeps its
source file and its line (CSV, counting the header as line 1) or row number (Parquet, from 1).

Reference files are small and are staged into a table (``stage``). A month's balances or
transactions (tens of millions of rows at a large bank) are not copied: ``land`` defines a view
over the files, which validation scans a few times. Parquet is read where it lies, and a column
that is already a DATE or DECIMAL skips the text patterns; CSV is staged once as text, because
parsing it again for every scan would cost more than keeping it.
"""

from __future__ import annotations

import csv
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tiers.checksums import sha256_file
from tiers.errors import InputError
from tiers.paths import duckdb_path
from tiers.months import Month
from transforms import runner

FORMATS = (".csv", ".parquet")

# The contract's columns per dataset: (required, optional). Extra columns are ignored.
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "customers": (("customer_id",), ("segment",)),
    "balances": (
        ("account_id", "customer_id", "product_code", "balance_date", "balance"),
        ("currency", "risk_class"),
    ),
    "transactions": (
        ("txn_id", "account_id", "customer_id", "txn_date", "txn_type", "amount"),
        ("currency", "merchant_category", "fee_factor"),
    ),
    "products": (("customer_id", "product_code", "opened_on"), ("closed_on",)),
    "credit_events": (("customer_id", "event_code", "started_on"), ("cured_on",)),
    "fx_rates": (("rate_date", "currency", "cny_per_unit"), ()),
}
MONTHLY = ("balances", "transactions")
# The cells of a month's rows that validation needs typed: (column, kind, name of the typed value).
# Each kind has a text_<kind> macro and, for Parquet columns of a fitting type, a typed_<kind> one
# (sql/cell_types.sql).
TYPED_CELLS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "balances": (("balance_date", "date", "day"), ("balance", "money", "amount")),
    "transactions": (("txn_date", "date", "day"), ("amount", "money", "txn_amount"), ("fee_factor", "fee", "fee_value")),
}
# The Parquet types a contract column may have (data-contract.md section 1, "Physical types"): text,
# or a type that holds exactly what the text would. Anything else (integer or floating-point money,
# a TIMESTAMP date, an integer id) rejects the whole file: integer cents are not yuan, and a type is
# never guessed. ("NULL" is DuckDB's type of a column that is entirely empty.) The future datasets'
# `points` and `score` will also accept integer types (the contract allows them); they are not read yet.
_TEXT_TYPES = {"VARCHAR", '"NULL"'}
_DECIMAL_SCALE = {"balance": 2, "amount": 2, "cny_per_unit": 8, "fee_factor": 6}
_DATE_COLUMNS = {"balance_date", "txn_date", "opened_on", "closed_on", "started_on", "cured_on", "rate_date"}
_MAX_DECIMALS = {"money": 2, "fee": 6}


def _physical_type_problem(column: str, column_type: str) -> str | None:
    """What a Parquet column of this type may be instead, or None when the type is accepted."""
    if column_type in _TEXT_TYPES:
        return None
    if column in _DECIMAL_SCALE:
        decimal = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", column_type)
        if decimal and int(decimal.group(2)) <= _DECIMAL_SCALE[column]:
            return None
        return f"text or DECIMAL with at most {_DECIMAL_SCALE[column]} decimals"
    if column in _DATE_COLUMNS:
        return None if column_type == "DATE" else "text or DATE"
    return "text"  # ids and codes: an integer id loses leading zeros, a float one its digits


@dataclass(frozen=True)
class Source:
    """The files of one dataset (and month, for monthly datasets)."""

    dataset: str
    month: Month | None
    files: tuple[Path, ...]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.month}" if self.month else self.dataset


def _one_of(base: Path) -> Path | None:
    found = [base.with_suffix(ext) for ext in FORMATS if base.with_suffix(ext).is_file()]
    if len(found) > 1:
        raise InputError(f"{found[0]} and {found[1]} both exist: keep one format per file")
    return found[0] if found else None


def reference_source(input_dir: Path, dataset: str, required: bool) -> Source | None:
    path = _one_of(input_dir / dataset)
    if path is None:
        if required:
            raise InputError(f"{input_dir / dataset}.csv (or .parquet) is missing: the landing folder needs it")
        return None
    return Source(dataset, None, (path,))


def month_source(input_dir: Path, dataset: str, month: Month, needed_by: str) -> Source:
    """The month's file, or the files of its folder; a missing month is an error, never an empty month."""
    base = input_dir / dataset / str(month)
    path = _one_of(base)
    if base.is_dir():
        if path is not None:
            raise InputError(f"{path} and the folder {base} both exist: keep one")
        files = tuple(sorted(p for p in base.iterdir() if p.suffix in FORMATS and p.is_file()))
        if not files:
            raise InputError(f"{base} has no .csv or .parquet files: {needed_by} needs {dataset} for {month}")
        return Source(dataset, month, files)
    if path is None:
        raise InputError(
            f"{base}.csv (or .parquet, or a folder {month}/) is missing: {needed_by} needs {dataset} for {month}"
        )
    return Source(dataset, month, (path,))


# Files being hashed ahead on a background thread, by (path, size, mtime_ns): see hash_ahead.
_AHEAD: dict[tuple[str, int, int], Future] = {}


def _checksum_key(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached_sha256(con: duckdb.DuckDBPyConnection, key: dict) -> str | None:
    cached = con.execute(
        "SELECT sha256 FROM file_checksums WHERE path = $path AND size = $size AND mtime_ns = $mtime_ns", key
    ).fetchone()
    return cached[0] if cached else None


def hash_ahead(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    """Start hashing, in order and on one background thread, the files among ``paths`` whose SHA-256 the
    warehouse has not cached. A bank's month of files takes seconds to hash (hashlib releases the GIL),
    which then overlaps validating the month before instead of adding to it; file_sha256 picks the
    results up."""
    pending = []
    for path in paths:
        key = _checksum_key(path)
        if _cached_sha256(con, key) is None and (key["path"], key["size"], key["mtime_ns"]) not in _AHEAD:
            future: Future = Future()
            _AHEAD[(key["path"], key["size"], key["mtime_ns"])] = future
            pending.append((path, future))

    def work() -> None:
        for path, future in pending:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(sha256_file(path))
                except BaseException as error:  # handed to whoever asks for this file's checksum
                    future.set_exception(error)

    if pending:
        threading.Thread(target=work, name="hash-ahead", daemon=True).start()


def file_sha256(path: Path, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """SHA-256 of a file, cached in the warehouse by (path, size, mtime) when a connection is given."""
    key = _checksum_key(path)
    if con is not None:
        cached = _cached_sha256(con, key)
        if cached:
            return cached
    ahead = _AHEAD.pop((key["path"], key["size"], key["mtime_ns"]), None)
    sha = ahead.result() if ahead is not None else sha256_file(path)
    if con is not None:
        con.execute("DELETE FROM file_checksums WHERE path = $path", {"path": key["path"]})
        con.execute("INSERT INTO file_checksums VALUES ($path, $size, $mtime_ns, $sha)", {**key, "sha": sha})
    return sha


def _reader(path: Path) -> str:
    if path.suffix == ".csv":
        # Strict RFC 4180: comma, double quotes; a broken quote or a ragged row fails the file.
        return (
            "read_csv($path, header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
            "strict_mode = true, null_padding = false, auto_detect = false, columns = $columns)"
        )
    return "read_parquet($path, file_row_number = true)"


def _csv_header(path: Path) -> list[str]:
    # Only the header's bytes are decoded here (a text-mode readline would decode a whole buffer and
    # blame the header for a bad byte further down); utf-8-sig drops a spreadsheet's byte-order mark.
    with path.open("rb") as handle:
        raw = handle.readline()
    try:
        first = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: the header line is not UTF-8 text (byte {error.start + 1} of line 1)") from None
    if not first.strip():
        raise InputError(f"{path}: empty file without a header row (an empty month is a file with a header only)")
    return next(csv.reader([first]))


def _parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    try:
        described = con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": duckdb_path(path)}).fetchall()
    except duckdb.Error as error:
        raise InputError(f"{path}: not a readable Parquet file ({first_line(error)})") from None
    return {name: column_type for name, column_type, *_ in described}


def _check_required(path: Path, dataset: str, present: set[str]) -> None:
    required, optional = COLUMNS[dataset]
    missing = [c for c in required if c not in present]
    if missing:
        raise InputError(
            f"{path}: missing column {', '.join(missing)} (expected columns: {', '.join(required)}"
            + (f"; optional: {', '.join(optional)})" if optional else ")")
        )


def _checked_parquet_columns(con: duckdb.DuckDBPyConnection, path: Path, dataset: str) -> dict[str, str]:
    """A Parquet file's column types, once it is known to be readable, complete and free of float money."""
    types = _parquet_columns(con, path)
    required, optional = COLUMNS[dataset]
    for name in required + optional:
        accepted = _physical_type_problem(name, types[name]) if name in types else None
        if accepted:
            raise InputError(f"{path}: column {name} is {types[name]}; expected {accepted} (a type is never guessed)")
    _check_required(path, dataset, set(types))
    return types


_CHUNK = 1 << 23  # 8 MiB: small enough that the per-chunk index arrays stay small


def csv_record_lines(path: Path) -> np.ndarray | None:
    """The file line on which each data record of a CSV starts, or None when that is simply the record
    number + 1 (no blank line, no quoted cell spanning lines), which is what nearly every file is.

    One vectorised pass over the bytes: a newline ends a record when the quotes before it are even
    (RFC 4180 doubles a quote inside a quoted cell, which keeps the parity); DuckDB skips blank lines.
    """
    ends_record, blank, quotes_before, last_newline, lines = [], [], 0, -1, 0
    with path.open("rb") as handle:
        offset = 0
        while chunk := handle.read(_CHUNK):
            data = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(data == 10)
            quotes = data == 34
            if quotes.any():
                parity = (np.cumsum(quotes)[newlines] + quotes_before) % 2
                quotes_before += int(quotes.sum())
            else:
                parity = np.full(len(newlines), quotes_before % 2)
            positions = newlines + offset
            starts = np.concatenate(([last_newline], positions[:-1])) + 1
            length = positions - starts
            # A line is blank when it is empty or holds only the \r of a \r\n ending.
            carriage = np.zeros(len(newlines), dtype=bool)
            inside = newlines > 0
            carriage[inside] = data[newlines[inside] - 1] == 13
            if len(newlines) and newlines[0] == 0 and offset > 0:
                carriage[0] = previous_byte == 13
            ends_record.append(parity == 0)
            blank.append((length == 0) | ((length == 1) & carriage))
            if len(newlines):
                last_newline = int(positions[-1])
            lines += len(newlines)
            previous_byte = int(data[-1])
            offset += len(chunk)
    ends = np.concatenate(ends_record) if ends_record else np.zeros(0, dtype=bool)
    empty = np.concatenate(blank) if blank else np.zeros(0, dtype=bool)
    if ends.all() and not empty.any():
        return None
    # Lines are numbered from 1; line k+1 starts a record when line k ended one (or k = 0).
    line_numbers = np.arange(1, len(ends) + 2)
    starts_record = np.concatenate(([True], ends))
    is_blank = np.concatenate((empty, [offset == last_newline + 1]))  # nothing after a final newline
    # A record starting on a blank line is skipped; the header is the first record.
    record_lines = line_numbers[starts_record & ~is_blank]
    return record_lines[1:]


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _reader_problem(error: Exception) -> str:
    """DuckDB's CSV errors say where on their first line and why a few lines below (after the
    offending line's text); keep those two, not the reader settings that follow."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    rest = lines[1:]
    if rest and rest[0].startswith("Original Line"):
        # The offending text follows the label, on the same line or (when it is not printable) the next.
        rest = rest[2:] if rest[0].rstrip(":") == "Original Line" else rest[1:]
    why = rest[0] if rest and not rest[0].startswith(("Possible", "*")) and "=" not in rest[0] else ""
    return f"{lines[0]}: {why}" if why else lines[0]


def _fits(kind: str, column_type: str) -> bool:
    """Whether a Parquet column's type holds ``kind`` as it is (no text pattern needed)."""
    if kind == "date":
        return column_type == "DATE"
    # Only DECIMAL reaches here typed: integer money was rejected with the file (_physical_type_problem).
    decimal = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", column_type)
    return bool(decimal) and int(decimal.group(2)) <= _MAX_DECIMALS[kind]


def _typed_cells(dataset: str, types: dict[str, str], text_of) -> str:
    """The typed values of a landed row: by the column's own type when it fits, else by the text
    pattern applied to ``text_of(column)``."""
    cells = []
    for column, kind, name in TYPED_CELLS[dataset]:
        if column in types and _fits(kind, types[column]):
            value = f"src.{column}" if kind == "date" else f"typed_{kind}(src.{column})"
        else:
            value = f"text_{kind}({text_of(column)})"
        cells.append(f"{value} AS {name}")
    return ", ".join(cells)


def land(con: duckdb.DuckDBPyConnection, source: Source) -> str:
    """Define the view ``landed_<dataset>`` over a month's files and return its name: source_file,
    file_ordinal (its place in the source, a cheaper key than its name), source_row, the contract
    columns as text (NULL when not given), and the typed cells."""
    dataset = source.dataset
    required, optional = COLUMNS[dataset]
    runner.run(con, "cell_types")
    parts = []
    csv_files = tuple(p for p in source.files if p.suffix == ".csv")
    if csv_files:
        stage(con, Source(dataset, source.month, csv_files), f"staged_{dataset}")
        parts.append(landed_from_staged(dataset, source.files))
    for ordinal, path in enumerate(source.files):
        if path.suffix != ".parquet":
            continue
        types = _checked_parquet_columns(con, path, dataset)

        def text_of(column: str) -> str:
            return f"NULLIF(CAST(src.{column} AS VARCHAR), '')" if column in types else "CAST(NULL AS VARCHAR)"

        raw = ", ".join(f"{text_of(c)} AS {c}" for c in required + optional)
        # The name as a value; as the reader's argument, escaped: DuckDB would expand [, * and ? in it.
        file, pattern = runner.literal(path), runner.literal(duckdb_path(path))
        parts.append(f"SELECT {file} AS source_file, {ordinal} AS file_ordinal, src.file_row_number + 1 AS source_row, {raw}, "
                     f"{_typed_cells(dataset, types, text_of)} FROM read_parquet({pattern}, file_row_number = true) AS src")
    view = f"landed_{dataset}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS " + " UNION ALL ".join(parts))
    return view


def landed_from_staged(dataset: str, files: tuple[Path, ...]) -> str:
    """The landed rows of the text table ``staged_<dataset>`` (CSV files, or rows a test stages)."""
    required, optional = COLUMNS[dataset]
    ordinal = f"list_position({runner.constant([str(f) for f in files])}, source_file) - 1"
    return (f"SELECT source_file, {ordinal} AS file_ordinal, source_row, {', '.join(required + optional)}, "
            f"{_typed_cells(dataset, {}, lambda column: column)} FROM staged_{dataset} AS src")


def stage(con: duckdb.DuckDBPyConnection, source: Source, table: str) -> None:
    """(Re)create ``table`` with source_file, source_row and the dataset's contract columns as VARCHAR."""
    required, optional = COLUMNS[source.dataset]
    wanted = required + optional
    column_list = ", ".join(f"{c} VARCHAR" for c in wanted)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (source_file VARCHAR, source_row BIGINT, {column_list})")
    for path in source.files:
        if path.suffix == ".csv":
            header = _csv_header(path)
            present = set(header)
            if len(present) != len(header):
                raise InputError(f"{path}: the header repeats a column name ({', '.join(header)})")
            columns = {name: "VARCHAR" for name in header}
            record_lines = csv_record_lines(path)
            _check_required(path, source.dataset, present)
        else:
            present = set(_checked_parquet_columns(con, path, source.dataset))
            columns = None
            record_lines = None
        # An empty cell means "not given" in Parquet as in CSV (where the reader already makes it NULL).
        picked = ", ".join(f"NULLIF(CAST({c} AS VARCHAR), '')" if c in present else "NULL" for c in wanted)
        params = {"path": duckdb_path(path)}  # literally this file, never a pattern
        if columns is not None:
            params["columns"] = columns
        if path.suffix == ".parquet":
            rows = f"SELECT file_row_number + 1 AS source_row, * FROM {_reader(path)}"
        elif record_lines is None:
            # row_number() over the scan keeps file order (insertion order is preserved); +1 for the header.
            rows = f"SELECT row_number() OVER () + 1 AS source_row, * FROM {_reader(path)}"
        else:
            # Blank lines or multi-line cells: map record numbers to the lines they start on. A LEFT
            # JOIN, so a record the map does not know keeps its record number + 1 rather than vanishing.
            con.register("csv_record_lines", pa.table({"record": np.arange(1, len(record_lines) + 1),
                                                        "line": record_lines}))
            rows = (
                f"SELECT COALESCE(m.line, r.record + 1) AS source_row, r.* EXCLUDE (record) FROM "
                f"(SELECT row_number() OVER () AS record, * FROM {_reader(path)}) AS r "
                f"LEFT JOIN csv_record_lines AS m ON m.record = r.record"
            )
        try:
            con.execute(
                f"INSERT INTO {table} SELECT $file, source_row, {picked} FROM ({rows})",
                {**params, "file": str(path)},
            )
        except duckdb.Error as error:
            raise InputError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({_reader_problem(error)})") from None

