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
import io
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ground.checksums import content_and_sha256, content_digest
from ground.errors import InputError, TiersError
from ground.paths import duckdb_path
from ground.months import Month
from rules import sources
from transforms import runner

FORMATS = (".csv", ".parquet")


def _declared(dataset: str) -> sources.DataSource:
    return sources.source(dataset)


def _physical_type_problem(dataset: str, column: str, column_type: str) -> str | None:
    """What a Parquet column of this type may be instead, or None when the type is accepted
    (data-contract.md section 1, "Physical types"; the kinds are declared in sources.py)."""
    declared = _declared(dataset).column(column)
    return None if declared.accepts(column_type) else declared.accepted


@dataclass(frozen=True)
class Source:
    """The files of one dataset (and month, for monthly datasets)."""

    dataset: str
    month: Month | None
    files: tuple[Path, ...]
    folder: Path | None = None  # a month given as a folder of files

    @property
    def control_target(self) -> Path:
        """The landing file, or the month's folder, that a control file beside it describes."""
        return self.folder if self.folder is not None else self.files[0]

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
        # Names starting with . or _ are not data (Hive/Spark: _SUCCESS, .part-0.parquet.crc, a writer's
        # .part-0.parquet in progress, _temporary/); nor are other suffixes (notes.txt, control files).
        files = tuple(sorted(p for p in base.iterdir()
                             if p.suffix in FORMATS and not p.name.startswith((".", "_")) and p.is_file()))
        if not files:
            raise InputError(f"{base} has no .csv or .parquet files: {needed_by} needs {dataset} for {month}")
        return Source(dataset, month, files, folder=base)
    if path is None:
        raise InputError(
            f"{base}.csv (or .parquet, or a folder {month}/) is missing: {needed_by} needs {dataset} for {month}"
        )
    return Source(dataset, month, (path,))


@dataclass(frozen=True)
class Seen:
    """A landing file as the run found it before reading it: its identity on disk (inode, size, mtime
    and ctime, taken before hashing) and the BLAKE3 of its content. ``verify_unchanged`` holds the file
    to both after the run has read it."""

    path: Path
    identity: tuple[int, ...]
    digest: str


def _identity(path: Path) -> tuple[int, ...]:
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _see(path: Path) -> Seen:
    identity = _identity(path)
    return Seen(path, identity, content_digest(path))


class HashAhead:
    """The landing files one run hashes ahead, on a background thread, by resolved path. Owned by the
    run (created per run and handed to its ingestion), so nothing outlives it or leaks between runs."""

    def __init__(self) -> None:
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def start(self, paths: list[Path]) -> None:
        """Start hashing, in order and on one background thread, the content of ``paths`` (files the run will
        ingest next): a month of files takes seconds to hash (BLAKE3 releases the GIL), which then overlaps
        validating the month before instead of adding to it. ``seen`` picks the results up. Sound because
        nothing is trusted from it: ``seen`` hashes again when the file's identity moved since, and
        ``verify_unchanged`` holds the file to the result after the read."""
        pending = []
        with self._lock:
            for path in paths:
                key = str(path.resolve())
                if key not in self._futures:
                    future: Future = Future()
                    self._futures[key] = future
                    pending.append((path, future))

        def work() -> None:
            for path, future in pending:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(_see(path))
                    except BaseException as error:  # handed to whoever asks for this file
                        future.set_exception(error)

        if pending:
            threading.Thread(target=work, name="hash-ahead", daemon=True).start()

    def take(self, path: Path) -> Future | None:
        """The hash started for ``path``, no longer kept here; None when none was started."""
        with self._lock:
            return self._futures.pop(str(path.resolve()), None)

    def pending(self, path: Path) -> Future | None:
        with self._lock:
            return self._futures.get(str(path.resolve()))


def seen(path: Path, ahead: HashAhead | None = None) -> Seen:
    """The file's identity and content digest now (or as hashed ahead, if the file has not moved since).
    Content only decides: no cache by size or mtime, so a corrected file of the same size and mtime is
    a changed file."""
    started = ahead.take(path) if ahead is not None else None
    if started is not None:
        try:
            found = started.result()
        except OSError:
            found = None  # read again below: the error, if it lasts, is raised from here
        if found is not None and found.identity == _identity(path):
            return found
    return _see(path)


def verify_unchanged(before: Seen) -> str:
    """After the run has read ``before.path``: fail unless it is still the file that was hashed before the
    read (same content, and same identity, which catches a rewrite with the same bytes in between), and
    return its SHA-256 (for the manifest), computed in the same pass."""
    try:
        identity = _identity(before.path)
        digest, sha = content_and_sha256(before.path)
        identity_after = _identity(before.path)
    except FileNotFoundError:
        raise InputError(f"{before.path}: removed while this run read it; nothing was published from it, "
                         "run again once the file is complete") from None
    if digest != before.digest or not before.identity == identity == identity_after:
        raise InputError(f"{before.path}: changed while this run read it (its content or size and times differ "
                         "from before the read); nothing was published from it, run again once the file is complete")
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
    declared = _declared(dataset)
    required, optional = declared.required_columns, declared.optional_columns
    missing = [c for c in required if c not in present]
    if missing:
        raise InputError(
            f"{path}: missing column {', '.join(missing)} (expected columns: {', '.join(required)}"
            + (f"; optional: {', '.join(optional)})" if optional else ")")
        )


def _checked_parquet_columns(con: duckdb.DuckDBPyConnection, path: Path, dataset: str) -> dict[str, str]:
    """A Parquet file's column types, once it is known to be readable, complete and free of float money."""
    types = _parquet_columns(con, path)
    for name in _declared(dataset).column_names:
        accepted = _physical_type_problem(dataset, name, types[name]) if name in types else None
        if accepted:
            raise InputError(f"{path}: column {name} is {types[name]}; expected {accepted} (a type is never guessed)")
    _check_required(path, dataset, set(types))
    return types


_CHUNK = 1 << 23  # 8 MiB: small enough that the per-chunk index arrays stay small


@dataclass(frozen=True)
class CsvRecords:
    """What the bytes of a CSV hold: its data records (the header and blank lines are not records)."""

    count: int
    lines: np.ndarray | None  # the line each record starts on; None when record k starts on line k + 1
    unclosed_line: int | None  # the line of a record whose quoted cell the file never closes (cut short)

    def line_of(self, record: int) -> int:
        """The line on which data record ``record`` (from 1) starts."""
        return record + 1 if self.lines is None else int(self.lines[record - 1])


def csv_record_lines(path: Path) -> np.ndarray | None:
    """The file line on which each data record of a CSV starts, or None when that is simply the record
    number + 1 (no blank line, no quoted cell spanning lines), which is what nearly every file is."""
    return csv_records(path).lines


def csv_records(path: Path) -> CsvRecords:
    """Every physical line of a CSV is a record, a blank line, or part of a quoted cell spanning lines;
    the count of records is held against the rows the reader returns (stage), so a line it dropped (a
    40 MB last line was, without a word) fails the file.

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
    final_blank = offset == last_newline + 1  # nothing after a final newline
    unclosed = quotes_before % 2 == 1  # the file ends inside a quoted cell
    if ends.all() and not empty.any() and not unclosed:
        # Every line but an empty last one is a record, the first the header.
        return CsvRecords(len(ends) + 1 - int(final_blank) - 1, None, None)
    # Lines are numbered from 1; line k+1 starts a record when line k ended one (or k = 0).
    line_numbers = np.arange(1, len(ends) + 2)
    starts_record = np.concatenate(([True], ends))
    is_blank = np.concatenate((empty, [final_blank]))
    # A record starting on a blank line is skipped; the header is the first record.
    record_lines = line_numbers[starts_record & ~is_blank]
    return CsvRecords(len(record_lines) - 1, record_lines[1:], int(record_lines[-1]) if unclosed else None)


CONTROL_SUFFIX = ".ctl"


@dataclass(frozen=True)
class Control:
    """A control file (data-contract.md section 1): the rows and money total the bank's extract wrote."""

    path: Path
    rows: int
    total: Decimal | None
    covers: tuple[Path, ...]  # the landing files it counts (a month folder's control file counts them all)


def control_path(target: Path) -> Path:
    return target.with_name(target.name + CONTROL_SUFFIX)


def _read_control(path: Path, dataset: str, covers: tuple[Path, ...]) -> Control:
    expected = "expected a CSV with the header rows,total and one line: a row count and a money total"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: malformed control file, not UTF-8 text; {expected}") from None
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if len(records) != 2 or records[0] != ["rows", "total"] or len(records[1]) != 2:
        raise InputError(f"{path}: malformed control file; {expected}")
    rows, total = (cell.strip() for cell in records[1])
    if not re.fullmatch(r"[0-9]+", rows):
        raise InputError(f"{path}: malformed control file, rows {rows!r} is not a count; {expected}")
    total_of = _declared(dataset).control_total
    if total_of is not None:
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", total):
            raise InputError(f"{path}: malformed control file, total {total!r} is not a decimal sum of "
                             f"{total_of}; {expected}")
        return Control(path, int(rows), Decimal(total), covers)
    if total:
        raise InputError(f"{path}: malformed control file, total must be empty ({dataset} has no money column)")
    return Control(path, int(rows), None, covers)


def controls(source: Source) -> list[Control]:
    """The control files present for the source: the one beside its file or month folder, and one beside
    any file of a month folder."""
    found = []
    targets = [(source.control_target, source.files)]
    if source.folder is not None:
        targets += [(path, (path,)) for path in source.files]
    for target, covers in targets:
        path = control_path(target)
        if path.is_file():
            found.append(_read_control(path, source.dataset, covers))
    return found


def missing_control(source: Source) -> Path | None:
    """The control file a source needs to be ready (--require-control), when it is absent."""
    path = control_path(source.control_target)
    return None if path.is_file() else path


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


def _typed_cells(dataset: str, types: dict[str, str], text_of) -> str:
    """The typed values of a landed row: by the column's own type when it fits, else by the text
    pattern applied to ``text_of(column)``."""
    cells = []
    for column in _declared(dataset).typed_columns:
        if column.name in types and column.fits(types[column.name]):
            value = f"src.{column.name}" if column.kind == "date" else f"typed_{column.kind}(src.{column.name})"
        else:
            value = f"text_{column.kind}({text_of(column.name)})"
        cells.append(f"{value} AS {column.typed}")
    return ", ".join(cells)


def land(con: duckdb.DuckDBPyConnection, source: Source) -> str:
    """Define the view ``landed_<dataset>`` over a month's files and return its name: source_file,
    file_ordinal (its place in the source, a cheaper key than its name), source_row, the contract
    columns as text (NULL when not given), and the typed cells.

    A view takes no bound parameters: the files' names are bound into the connection's variables
    (``_bind_files``) and the view reads them with getvariable(), which DuckDB folds into constants."""
    dataset = source.dataset
    runner.run(con, "cell_types")
    files, patterns = _bind_files(con, dataset, source.files)
    parts = []
    csv_files = tuple(p for p in source.files if p.suffix == ".csv")
    if csv_files:
        stage(con, Source(dataset, source.month, csv_files), f"staged_{dataset}")
        parts.append(landed_from_staged(con, dataset, source.files))
    for index, path in enumerate(source.files, start=1):
        if path.suffix != ".parquet":
            continue
        types = _checked_parquet_columns(con, path, dataset)

        def text_of(column: str) -> str:
            return f"NULLIF(CAST(src.{column} AS VARCHAR), '')" if column in types else "CAST(NULL AS VARCHAR)"

        raw = ", ".join(f"{text_of(c)} AS {c}" for c in _declared(dataset).column_names)
        # The name as a value; as the reader's argument, escaped: DuckDB would expand [, * and ? in it.
        file, pattern = f"getvariable('{files}')[{index}]", f"getvariable('{patterns}')[{index}]"
        parts.append(f"SELECT {file} AS source_file, {index - 1} AS file_ordinal, src.file_row_number + 1 AS source_row, "
                     f"{raw}, {_typed_cells(dataset, types, text_of)} "
                     f"FROM read_parquet({pattern}, file_row_number = true) AS src")
    view = f"landed_{dataset}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS " + " UNION ALL ".join(parts))
    return view


def _bind_files(con: duckdb.DuckDBPyConnection, dataset: str, paths: tuple[Path, ...]) -> tuple[str, str]:
    """The names of the variables holding the source's file names and their reader patterns, set now."""
    files, patterns = f"landed_{dataset}_files", f"landed_{dataset}_patterns"
    con.execute(f"SET VARIABLE {files} = CAST($files AS VARCHAR[])", {"files": [str(p) for p in paths]})
    con.execute(f"SET VARIABLE {patterns} = CAST($patterns AS VARCHAR[])",
                {"patterns": [duckdb_path(p) for p in paths]})
    return files, patterns


def landed_from_staged(con: duckdb.DuckDBPyConnection, dataset: str, files: tuple[Path, ...]) -> str:
    """The landed rows of the text table ``staged_<dataset>`` (CSV files, or rows a test stages)."""
    variable, _ = _bind_files(con, dataset, files)
    ordinal = f"list_position(getvariable('{variable}'), source_file) - 1"
    return (f"SELECT source_file, {ordinal} AS file_ordinal, source_row, {', '.join(_declared(dataset).column_names)}, "
            f"{_typed_cells(dataset, {}, lambda column: column)} FROM staged_{dataset} AS src")


def stage(con: duckdb.DuckDBPyConnection, source: Source, table: str) -> None:
    """(Re)create ``table`` with source_file, source_row and the dataset's contract columns as VARCHAR."""
    wanted = _declared(source.dataset).column_names
    column_list = ", ".join(f"{c} VARCHAR" for c in wanted)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (source_file VARCHAR, source_row BIGINT, {column_list})")
    for path in source.files:
        if path.suffix == ".csv":
            header = _csv_header(path)
            present = set(header)
            if len(present) != len(header):
                raise InputError(f"{path}: the header repeats a column name ({', '.join(header)})")
            columns = {name: "VARCHAR" for name in header}
            records = csv_records(path)
            if records.unclosed_line is not None:
                raise InputError(f"{path}: cannot be read as CSV (line {records.unclosed_line}: a quoted cell is never "
                                 "closed, the file ends inside it: cut short, or still being written?)")
            record_lines = records.lines
            _check_required(path, source.dataset, present)
        else:
            present = set(_checked_parquet_columns(con, path, source.dataset))
            columns = None
            records = record_lines = None
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
            [(inserted,)] = con.execute(
                f"INSERT INTO {table} SELECT $file, source_row, {picked} FROM ({rows})",
                {**params, "file": str(path)},
            ).fetchall()
        except duckdb.Error as error:
            raise InputError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({_reader_problem(error)})") from None
        if records is not None and inserted != records.count:
            # Read = used + quarantined holds only if every record was read: name the first one that was not.
            line = records.line_of(min(inserted, records.count) + 1) if inserted < records.count else records.line_of(records.count)
            raise InputError(f"{path}: cannot be read as CSV (line {line}: the reader returned {inserted} rows but "
                             f"the file holds {records.count} records; every line must be a record, a blank line or "
                             "part of a quoted cell: a line too long for the reader?)")



_MONTH_NAME = re.compile(r"^(\d{4}-\d{2})(\.csv|\.parquet)?$")


def landed_months(input_dir: Path, dataset: str) -> list[Month]:
    """The months of ``dataset`` in the landing folder (files or folders named YYYY-MM), oldest first.
    Names starting with ``.`` or ``_`` are not data."""
    folder = input_dir / dataset
    if not folder.is_dir():
        return []
    months = set()
    for child in folder.iterdir():
        match = _MONTH_NAME.match(child.name)
        if match and (child.is_dir() or match.group(2)):
            try:
                months.add(Month.parse(match.group(1)))
            except TiersError:  # a name like 2025-13 is no month of ours
                continue
    return sorted(months)


def present(input_dir: Path, dataset: str) -> bool:
    """Whether the landing folder has ``dataset`` at all: a reference file, or the folder of a monthly one
    (which programs apply, data-contract.md section 4). A monthly folder without the months a window
    needs is present but incomplete: the run fails on the missing month instead of skipping the program."""
    if sources.source(dataset).monthly:
        return (input_dir / dataset).is_dir()
    return _one_of(input_dir / dataset) is not None


def has_rates(input_dir: Path, currency: str) -> bool:
    """Whether the landing folder's fx_rates file has any rate of ``currency`` (a file that cannot be read
    counts as having one: ingestion then fails on it with its own message)."""
    source = reference_source(input_dir, "fx_rates", required=False)
    if source is None:
        return False
    path = source.files[0]
    reader = "read_csv($path, header = true, all_varchar = true)" if path.suffix == ".csv" else "read_parquet($path)"
    try:
        with duckdb.connect() as con:
            [(found,)] = con.execute(f"SELECT count(*) > 0 FROM {reader} WHERE CAST(currency AS VARCHAR) = $currency",
                                     {"path": duckdb_path(path), "currency": currency}).fetchall()
    except duckdb.Error:
        return True
    return found
