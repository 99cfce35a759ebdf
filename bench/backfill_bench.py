"""Benchmark: `tiers backfill` of N synthetic customers over 12 month-ends (not part of `make test`).

    .venv/bin/python bench/backfill_bench.py --customers 100000 [--workdir build/bench]

Generates the landing folder with data/generator.py (6 months of history before the first month-end),
times a cold backfill into an empty warehouse as a subprocess (wall time and the child's peak resident
memory), and appends a line to bench/results-backfill.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.timing import run_tiers  # noqa: E402
from data.generator import generate_landing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "build" / "bench")
    args = parser.parse_args()

    landing = args.workdir / f"landing-{args.customers}-{args.format}"
    warehouse = args.workdir / "warehouse"
    if not landing.exists():
        started = time.perf_counter()
        generate_landing(landing, customers=args.customers, first_month="2024-08", months=17, file_format=args.format)
        print(f"generated {landing} in {time.perf_counter() - started:.0f} s")
    shutil.rmtree(warehouse, ignore_errors=True)

    measured = run_tiers("backfill", "--input", str(landing), "--from", "2025-01", "--to", "2025-12",
                         "--program", "icbc_star", "--warehouse", str(warehouse))
    seconds, peak_mb = measured.seconds, measured.peak_mb

    line = (
        f"| {date.today()} | backfill 2025-01..2025-12, icbc_star | {args.customers:,} | {args.format} "
        f"| {seconds:.0f} s | {peak_mb:,.0f} MB | {platform.machine()}, {len(os.sched_getaffinity(0))} cores |"
    )
    print(line)
    results = PROJECT / "bench" / "results-backfill.md"
    if not results.exists():
        results.write_text(
            "| date | run | customers | input | wall time | peak RSS | machine |\n|---|---|---|---|---|---|---|\n"
        )
    with results.open("a") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
