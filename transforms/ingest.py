"""Ingestion: landing files -> validated rows -> warehouse tables, once per source and version.

A source (a reference file, or a dataset's month) is read again only when its fingerprint changes:
the SHA-256 of its files, the code vocabularies, and what its validation depends on (the FX rates
that apply to the month, the programs' transaction rules). Re-ingesting a month replaces it in one
transaction (delete the month, insert the month). Bad rows go to the quarantine, never nowhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb

from rules.compile import rule_tables
from rules.loader import VOCABULARIES_FILE, LoadedProgram, Vocabularies
from ground.checksums import sha256_file
from ground.errors import InputError
from ground.months import Month
from ground.paths import path_literal
from rules import sources
from transforms import landing, runner, txn_figures

# Reference datasets in load order, with whether the landing folder must have them (sources.py).
REFERENCE_DATASETS = tuple((source.name, source.required) for source in sources.reference())


@dataclass
class FileCount:
    path: str
    rows_read: int
    rows_used: int
    rows_quarantined: int


@dataclass
class IngestResult:
    """What one source contributed: counts per file, and whether it was (re)read in this run."""

    dataset: str
    month: str | None
    read_now: bool
    files: list[FileCount] = field(default_factory=list)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def validate_month(con: duckdb.DuckDBPyConnection, dataset: str, month: Month, vocab: Vocabularies) -> frozenset[str]:
    """Build ``validated_<dataset>`` over the view ``landed_<dataset>`` (sql/validated_<dataset>.sql and
    what it reads, in the order the SQL graph gives) and return what was built.

    The month's FX rates by day, then the checks a row makes by itself (the view ``checked_<dataset>``),
    then small tables computed once: the rows whose key another row shares, and the customers the rows
    name (whether each is known, and counts of their rows).
    """
    params = {**vocabulary_params(vocab), "month_start": month.first_day, "month_end": month.last_day}
    return runner.build(con, [sources.source(dataset).validated], **params)


def month_may_have_bad_rows(con: duckdb.DuckDBPyConnection, dataset: str) -> bool:
    """Whether any row of the month validated by ``validate_month`` can have a problem, from its small
    tables: a row failed a check of its own, names an unknown customer, shares its key, or cannot be
    converted. Each problem in validated_<dataset> comes from exactly one of these."""
    declared = sources.source(dataset)
    # Balances: a padded account_id is found per account, not per row (validated_balances).
    padded = " + (SELECT count(*) FROM balance_accounts WHERE padded(account_id))" if dataset == "balances" else ""
    [(problems,)] = con.execute(
        f"SELECT (SELECT count(*) FROM {declared.customers_summary} "
        f"        WHERE rows_failed > 0 OR rows_not_converted > 0 OR (rows_passed > 0 AND NOT known))"
        f" + (SELECT count(*) FROM {declared.duplicates_summary})" + padded
    ).fetchall()
    return problems > 0


def vocabulary_params(vocab: Vocabularies) -> dict:
    return {
        "product_codes": vocab.balance_product_codes,
        "risk_classes": vocab.risk_classes,
        "txn_types": vocab.txn_types,
        "held_product_codes": vocab.held_product_codes,
        "credit_event_codes": vocab.credit_event_codes,
    }


class Ingestor:
    """Ingests sources of one landing folder into one warehouse connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, input_dir: Path, quarantine_dir: Path,
                 vocab: Vocabularies, programs: list[LoadedProgram], require_control: bool = False,
                 ahead: landing.HashAhead | None = None):
        self.con = con
        # The files this run hashes ahead (hash_months_ahead), shared by its ingestors.
        self.ahead = ahead if ahead is not None else landing.HashAhead()
        # With it, a landing file without its control file is not ready (the scheduled deployment).
        self.require_control = require_control
        # Absolute, so quarantine rows and manifests name files unambiguously.
        self.input_dir = Path(input_dir).resolve()
        self.quarantine_dir = Path(quarantine_dir)
        self.vocab = vocab
        self.vocab_sha = sha256_file(VOCABULARIES_FILE)
        self._register_txn_rules(programs)

    # -- rules shared by every month ------------------------------------------------------------
    def _register_txn_rules(self, programs: list[LoadedProgram]) -> None:
        """Every program's transaction figures as the aggregate macro txn_figure_sums (txn_figures.py), so
        one read of a month serves all programs; the rules' digest is part of each month's fingerprint."""
        figure_rows, mcc_rows = [], []
        for loaded in programs:
            tables = rule_tables(loaded, self.vocab)
            figures = {row["figure"]: row for row in tables["rule_figures"].to_pylist()}
            for code in tables["rule_figure_codes"].to_pylist():
                figure = figures[code["figure"]]
                if figure["source"] == "transactions":
                    figure_rows.append(
                        {"program": loaded.name, "figure": code["figure"], "txn_type": code["code"],
                         "cap_per_transaction": figure["cap_per_transaction"],
                         "apply_fee_factor": figure["apply_fee_factor"],
                         "exclude_single_above": figure["exclude_single_above"]}
                    )
            mcc_rows += [{"program": loaded.name, **row} for row in tables["rule_excluded_mcc"].to_pylist()]
        # rule_tables typed the money columns already (DECIMAL(18, 2)), so the rows are used as they are.
        txn_figures.define_txn_figure_sums(self.con, figure_rows, mcc_rows)
        self.txn_rules_sha = _digest(
            json.dumps(figure_rows, default=str, sort_keys=True), json.dumps(mcc_rows, sort_keys=True)
        )

    # -- bookkeeping -----------------------------------------------------------------------------
    def _stored(self, dataset: str, month: Month | None) -> tuple[str, str] | None:
        row = self.con.execute(
            "SELECT fingerprint, customers_sha256 FROM ingested WHERE dataset = $dataset "
            "AND month IS NOT DISTINCT FROM $month",
            {"dataset": dataset, "month": month.first_day if month else None},
        ).fetchone()
        return (row[0], row[1]) if row else None

    def _stored_files(self, dataset: str, month: Month | None) -> list[FileCount]:
        rows = self.con.execute(
            "SELECT path, rows_read, rows_used, rows_quarantined FROM ingested_files "
            "WHERE dataset = $dataset AND month IS NOT DISTINCT FROM $month ORDER BY path",
            {"dataset": dataset, "month": month.first_day if month else None},
        ).fetchall()
        return [FileCount(*row) for row in rows]

    def customers_sha(self) -> str:
        stored = self._stored("customers", None)
        return stored[0] if stored else ""

    def _fx_slice_digest(self, month: Month) -> str:
        """The rates a month's conversion can use: per currency, the last before the month and those in it."""
        row = self.con.execute(
            """
            WITH slice AS (
                SELECT r.* FROM fx_rates AS r
                WHERE r.rate_date <= $month_end
                  AND r.rate_date >= COALESCE(
                      (SELECT max(p.rate_date) FROM fx_rates AS p
                       WHERE p.currency = r.currency AND p.rate_date < $month_start), DATE '0001-01-01')
            )
            SELECT COALESCE(string_agg(currency || rate_date || CAST(cny_per_unit AS VARCHAR), ','
                                       ORDER BY currency, rate_date), '')
            FROM slice
            """,
            {"month_start": month.first_day, "month_end": month.last_day},
        ).fetchone()
        return _digest(row[0])

    def _fingerprint(self, source: landing.Source) -> tuple[str, list[landing.Seen]]:
        """The source's fingerprint, and its files as seen before reading them (see _verified)."""
        self._check_ready(source)
        seen = [landing.seen(p, self.ahead) for p in source.files]
        parts = [self.vocab_sha] + [f"{s.path.name}:{s.digest}" for s in seen]
        # A control file that arrives or changes re-reads the source, so that it is checked (a few bytes).
        parts += [f"{c.path.name}:{c.rows}:{c.total}" for c in landing.controls(source)]
        declared = sources.source(source.dataset)
        if not declared.monthly and source.dataset != "customers" and "customer_id" in declared.column_names:
            parts.append(self.customers_sha())  # validated against customers
        if source.month is not None and "currency" in declared.column_names:
            parts.append(self._fx_slice_digest(source.month))
        if source.dataset == "transactions":
            parts.append(self.txn_rules_sha)
        return _digest(*parts), seen

    def _check_ready(self, source: landing.Source) -> None:
        missing = landing.missing_control(source) if self.require_control else None
        if missing is not None:
            raise InputError(f"{source.control_target}: not ready, its control file {missing} is missing "
                             "(--require-control: a landing file without one may still be being written)")

    def check_ready(self, months: list[tuple[str, Month]]) -> None:
        """Before anything is read: with --require-control, every file the run will read has its control file."""
        if not self.require_control:
            return
        for dataset, required in REFERENCE_DATASETS:
            source = landing.reference_source(self.input_dir, dataset, required)
            if source is not None:
                self._check_ready(source)
        for dataset, month in months:
            self._check_ready(landing.month_source(self.input_dir, dataset, month, "this run"))

    def _check_controls(self, source: landing.Source, figures: dict[str, tuple[int, Decimal | None]]) -> None:
        """Each control file present against the rows read (bad ones included) and the money as written;
        a mismatch fails the run before anything of the source is stored or published."""
        for control in landing.controls(source):
            rows = sum(figures.get(str(p), (0, None))[0] for p in control.covers)
            totals = [figures.get(str(p), (0, None))[1] for p in control.covers]
            total = sum((t for t in totals if t is not None), Decimal(0)) if control.total is not None else None
            if rows != control.rows or (total is not None and total != control.total):
                said = f"{control.rows} rows" + (f", total {control.total}" if control.total is not None else "")
                found = f"{rows} rows" + (f", total {total}" if total is not None else "")
                raise InputError(f"{control.covers[0] if len(control.covers) == 1 else source.control_target}: "
                                 f"does not match its control file {control.path}: the control file says {said}, "
                                 f"the data has {found}; nothing was published")

    @staticmethod
    def _verified(seen: list[landing.Seen]) -> dict[str, str]:
        """After the last read of a source's files: each is still what was hashed before the read (else
        InputError: a file being rewritten while read was once published as a 0-row month); their SHA-256
        for the manifest, by path."""
        return {str(s.path): landing.verify_unchanged(s) for s in seen}

    # -- quarantine ------------------------------------------------------------------------------
    def quarantine_path(self, dataset: str, month: Month | None) -> Path:
        return self.quarantine_dir / dataset / f"{month or 'reference'}.parquet"

    def _stage_quarantine(self, dataset: str, month: Month | None, validated: str) -> Path | None:
        """The bad rows in a staged file beside the quarantine's (None when there are none); published
        by _publish_quarantine once the source's files are verified unchanged."""
        target = self.quarantine_path(dataset, month)
        bad = self.con.execute(f"SELECT count(*) FROM {validated} WHERE reason IS NOT NULL").fetchone()[0]
        if not bad:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        raw_columns = ", ".join(sources.source(dataset).column_names)
        self.con.execute(
            f"COPY (SELECT $dataset AS dataset, $month AS month, source_file, source_row, problem_column, reason, "
            f"{raw_columns} FROM {validated} WHERE reason IS NOT NULL ORDER BY source_file, source_row) "
            f"TO {path_literal(staged)} (FORMAT parquet)",
            {"dataset": dataset, "month": str(month) if month else None},
        )
        return staged

    def _publish_quarantine(self, dataset: str, month: Month | None, staged: Path | None) -> None:
        target = self.quarantine_path(dataset, month)
        if staged is None:
            target.unlink(missing_ok=True)
        else:
            os.replace(staged, target)

    # -- ingestion -------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A source's rows and its bookkeeping change together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _keep_rejected(self, validated: str, scan: bool = True) -> None:
        """The bad rows of ``validated`` in the table ``rejected`` (empty, without a scan, when not ``scan``)."""
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE rejected AS SELECT * FROM {validated} "
                         + ("WHERE reason IS NOT NULL" if scan else "LIMIT 0"))

    def _validate(self, source: landing.Source) -> str:
        """A reference file: staged as text, validated into a table (small files); its bad rows in ``rejected``."""
        declared = sources.source(source.dataset)
        landing.stage(self.con, source, declared.landed)
        params = vocabulary_params(self.vocab)
        if declared.interval_codes:
            params |= {"codes": params[declared.interval_codes], **declared.interval_params}
        runner.build(self.con, [declared.validated], **params)
        self._keep_rejected(declared.validated)
        return declared.validated

    def _validate_month(self, source: landing.Source) -> str:
        """A month: validated as a view over its files; only its bad rows are stored (``rejected``).
        Looking for them costs a scan of every row, which the small tables let a clean month skip."""
        landing.land(self.con, source)
        built = validate_month(self.con, source.dataset, source.month, self.vocab)
        validated = sources.source(source.dataset).validated
        self._keep_rejected(validated, scan=month_may_have_bad_rows(self.con, source.dataset))
        return built

    def _file_counts(self, source: landing.Source, rows: str, bad: str) -> list[FileCount]:
        """Rows read per file (from ``rows``) and rows quarantined (``bad``); the rest were used. Control
        files are checked here, from the same scan (their money total is summed only when one is present)."""
        declared = sources.source(source.dataset)
        if declared.control_total and any(c.total is not None for c in landing.controls(source)):
            text, typed = declared.control_total, declared.column(declared.control_total).typed
            # As written, before conversion: the typed cell, or the text of one the contract's pattern refuses.
            total = f"sum(COALESCE({typed}, TRY_CAST({text} AS DECIMAL(38, 6))))"
        else:
            total = "NULL"
        figures = {path: (count, money_total) for path, count, money_total in self.con.execute(
            f"SELECT source_file, count(*), {total} FROM {rows} GROUP BY source_file").fetchall()}
        self._check_controls(source, figures)
        read = {path: count for path, (count, _) in figures.items()}
        quarantined = dict(self.con.execute(f"SELECT source_file, count(*) FROM {bad} GROUP BY source_file").fetchall())
        counts = []
        for path in map(str, source.files):
            rows_read, rows_bad = read.get(path, 0), quarantined.get(path, 0)
            counts.append(FileCount(path, rows_read, rows_read - rows_bad, rows_bad))
        return counts

    def _record(self, source: landing.Source, fingerprint: str, files: list[FileCount], seconds: float,
                shas: dict[str, str]) -> None:
        month = source.month.first_day if source.month else None
        key = {"dataset": source.dataset, "month": month}
        where = "WHERE dataset = $dataset AND month IS NOT DISTINCT FROM $month"
        self.con.execute(f"DELETE FROM ingested {where}", key)
        self.con.execute(f"DELETE FROM ingested_files {where}", key)
        self.con.execute(
            "INSERT INTO ingested VALUES ($dataset, $month, $fingerprint, $customers, $read, $used, $bad, $at, $seconds)",
            {**key, "fingerprint": fingerprint, "customers": self.customers_sha(),
             "read": sum(f.rows_read for f in files), "used": sum(f.rows_used for f in files),
             "bad": sum(f.rows_quarantined for f in files), "at": datetime.now(timezone.utc).replace(tzinfo=None),
             "seconds": seconds},
        )
        for f, path in zip(files, source.files):
            self.con.execute(
                "INSERT INTO ingested_files VALUES ($dataset, $month, $path, $sha, $read, $used, $bad)",
                {**key, "path": f.path, "sha": shas[str(path)],
                 "read": f.rows_read, "used": f.rows_used, "bad": f.rows_quarantined},
            )

    def ingest_reference(self, dataset: str, required: bool) -> IngestResult:
        source = landing.reference_source(self.input_dir, dataset, required)
        declared = sources.source(dataset)
        table = declared.table
        if source is None:  # an optional file that is absent: nobody holds a product, say
            if self._stored(dataset, None) != ("absent", ""):
                with self._transaction():
                    self.con.execute(f"DELETE FROM {table}")
                    for bookkeeping in ("ingested", "ingested_files"):
                        self.con.execute(f"DELETE FROM {bookkeeping} WHERE dataset = $dataset AND month IS NULL",
                                         {"dataset": dataset})
                    self.con.execute(
                        "INSERT INTO ingested VALUES ($dataset, NULL, 'absent', '', 0, 0, 0, now()::TIMESTAMP, 0)",
                        {"dataset": dataset},
                    )
                self.quarantine_path(dataset, None).unlink(missing_ok=True)
            return IngestResult(dataset, None, read_now=False)
        fingerprint, seen = self._fingerprint(source)
        stored = self._stored(dataset, None)
        if stored and stored[0] == fingerprint:
            return IngestResult(dataset, None, read_now=False, files=self._stored_files(dataset, None))
        started = time.perf_counter()
        validated = self._validate(source)
        shas = self._verified(seen)  # the file was read once, into the staged table
        files = self._file_counts(source, validated, "rejected")
        self._publish_quarantine(dataset, None, self._stage_quarantine(dataset, None, "rejected"))
        with self._transaction():
            self.con.execute(f"DELETE FROM {table}")
            self.con.execute(f"INSERT INTO {table} SELECT {', '.join(declared.keep)} FROM {declared.validated} "
                             "WHERE reason IS NULL")
            self._record(source, fingerprint, files, time.perf_counter() - started, shas)
        return IngestResult(dataset, None, read_now=True, files=files)

    def ingest_all_reference(self) -> list[IngestResult]:
        return [self.ingest_reference(dataset, required) for dataset, required in REFERENCE_DATASETS]

    def hash_months_ahead(self, months: list[tuple[str, Month]]) -> None:
        """Hash the files of the months this run will ingest, in that order, while it ingests them."""
        files = []
        for dataset, month in months:
            files += landing.month_source(self.input_dir, dataset, month, "this run").files
        self.ahead.start(files)

    def _month_is_current(self, source: landing.Source, fingerprint: str) -> bool:
        stored = self._stored(source.dataset, source.month)
        if not stored or stored[0] != fingerprint:
            return False
        if stored[1] == self.customers_sha():
            return True
        # The customers file changed since this month was validated. Re-read the month only if a
        # customer it used is gone or a customer it quarantined as unknown has arrived.
        changed = self.con.execute(
            "SELECT count(*) FROM month_customers AS m "
            "WHERE m.dataset = $dataset AND m.month = $month "
            "AND m.known <> EXISTS (SELECT 1 FROM customers AS c WHERE c.customer_id = m.customer_id)",
            {"dataset": source.dataset, "month": source.month.first_day},
        ).fetchone()[0]
        if changed:
            return False
        self.con.execute(
            "UPDATE ingested SET customers_sha256 = $sha WHERE dataset = $dataset AND month = $month",
            {"sha": self.customers_sha(), "dataset": source.dataset, "month": source.month.first_day},
        )
        return True

    def ingest_month(self, dataset: str, month: Month, needed_by: str) -> IngestResult:
        source = landing.month_source(self.input_dir, dataset, month, needed_by)
        fingerprint, seen = self._fingerprint(source)
        if self._month_is_current(source, fingerprint):
            return IngestResult(dataset, str(month), read_now=False, files=self._stored_files(dataset, month))
        started = time.perf_counter()
        staged_quarantine = None
        try:
            built = self._validate_month(source)
            files = self._file_counts(source, f"landed_{dataset}", "rejected")
            staged_quarantine = self._stage_quarantine(dataset, month, "rejected")
            declared = sources.source(dataset)
            with self._transaction():
                self.con.execute(f"DELETE FROM {declared.table} WHERE month = $month", {"month": month.first_day})
                runner.build(self.con, [declared.table], have=built, month_start=month.first_day,
                             month_end=month.last_day)
                key = {"dataset": dataset, "month": month.first_day}
                self.con.execute("DELETE FROM month_customers WHERE dataset = $dataset AND month = $month", key)
                # Whether each customer the month names is known decides their rows' fate, so a change
                # in that re-reads the month.
                self.con.execute(
                    f"INSERT INTO month_customers SELECT $dataset, $month, customer_id, known "
                    f"FROM {declared.customers_summary} WHERE rows_passed > 0",
                    key,
                )
                # The month's files were read for the last time above (a Parquet month is a view over them).
                shas = self._verified(seen)
                self._record(source, fingerprint, files, time.perf_counter() - started, shas)
                self._publish_quarantine(dataset, month, staged_quarantine)
                staged_quarantine = None
        except (duckdb.IOException, duckdb.InvalidInputException) as error:
            # A month's Parquet files are read while validating, not while staging: a page that cannot
            # be read or decoded shows here (DuckDB's message names the file). Other errors are bugs.
            raise InputError(f"{source.label}: cannot be read ({landing.first_line(error)})") from None
        finally:
            if staged_quarantine is not None:
                staged_quarantine.unlink(missing_ok=True)
        return IngestResult(dataset, str(month), read_now=True, files=files)
