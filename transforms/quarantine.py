"""Reading the quarantine back: what the bad rows were, for the message of a run that stops on them."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ground.paths import duckdb_path

from transforms.ingest import IngestResult

TOP_REASONS = 3


def bad_rows_message(results: list[IngestResult], max_bad_rows: int, quarantine_dir: Path) -> str:
    """One message: how many bad rows, the worst files with their top reasons, and where to look."""
    total = sum(r.rows_quarantined for r in results)
    files = sorted(
        (f for r in results for f in r.files if f.rows_quarantined), key=lambda f: (-f.rows_quarantined, f.path)
    )
    # Escaped: a warehouse under a folder named like a pattern (``wh[1]``) is still read literally.
    quarantine_files = sorted(duckdb_path(p) for p in Path(quarantine_dir).rglob("*.parquet"))
    reasons: dict[str, list[tuple[str, str, int]]] = {}
    if quarantine_files:
        rows = duckdb.sql(
            "SELECT source_file, problem_column, reason, count(*) AS n FROM read_parquet($files, union_by_name = true) "
            "GROUP BY ALL ORDER BY n DESC, problem_column",
            params={"files": quarantine_files},
        ).fetchall()
        for source_file, column, reason, count in rows:
            reasons.setdefault(source_file, []).append((column, reason, count))
    parts = []
    for f in files[:3]:
        top = ", ".join(f"{reason} in {column} x{count}" for column, reason, count in reasons.get(f.path, [])[:TOP_REASONS])
        parts.append(f"{f.path}: {f.rows_quarantined} bad of {f.rows_read} rows ({top})")
    more = f"; and {len(files) - 3} more files" if len(files) > 3 else ""
    return (
        f"{total} bad rows, more than --max-bad-rows {max_bad_rows}; nothing was published. "
        + "; ".join(parts) + more + f". Quarantine: {quarantine_dir}"
    )
