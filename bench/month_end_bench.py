"""Benchmark of the month-end run (not part of `make test`): `make bench`, or

    .venv/bin/python bench/month_end_bench.py [--customers 1000000] [--workdir build/bench]

Generates N customers with data/generator.py: seven months (2025-01..2025-07) as Parquet, two or
three accounts each with daily balances, about fifteen transactions a month. Then measures
  (a) a cold first month: `tiers backfill` of 2025-06 into an empty warehouse (six months ingested);
  (b) a warm month-end: `tiers run` of 2025-07 on that warehouse (one new month ingested).
Prints and appends to bench/results-month-end.md: wall time, rows read per second, the child's peak memory,
and the seconds per stage from the snapshot's manifest.
"""

from __future__ import annotations

import argparse
import json
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

RESULTS = PROJECT / "bench" / "results-month-end.md"


def _manifest(warehouse: Path, as_of: str) -> dict:
    return json.loads((warehouse / "snapshots" / "program=icbc_star" / f"as_of={as_of}" / "manifest.json").read_text())


def _line(run: str, customers: int, seconds: float, peak_mb: float, manifest: dict, read_now: int) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in manifest["stage_seconds"].items())
    return (f"| {date.today()} | {run} | {customers:,} | {seconds:.1f} s | {read_now / seconds:,.0f} rows/s "
            f"| {peak_mb:,.0f} MB | {stages} | {platform.machine()} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=PROJECT / "build" / "bench")
    args = parser.parse_args()

    landing = args.workdir / f"landing-{args.customers}-parquet-7m"
    warehouse = args.workdir / f"warehouse-{args.customers}"
    if not landing.exists():
        started = time.perf_counter()
        generate_landing(landing, customers=args.customers, first_month="2025-01", months=7, file_format="parquet",
                         txns_per_customer_month=15.0)
        print(f"generated {landing} in {time.perf_counter() - started:.0f} s")
    shutil.rmtree(warehouse, ignore_errors=True)
    common = ["--input", str(landing), "--program", "icbc_star", "--warehouse", str(warehouse)]

    cold_seconds, cold_peak = run_tiers("backfill", "--from", "2025-06", "--to", "2025-06", *common)
    cold = _manifest(warehouse, "2025-06-30")
    warm_seconds, warm_peak = run_tiers("run", "--month", "2025-07", *common)
    warm = _manifest(warehouse, "2025-07-31")
    # Rows read in this run: the cold run read the whole window, the warm run one new month.
    warm_new = sum(i["rows_read"] for i in warm["inputs"] if i["month"] == "2025-07")

    lines = [
        _line("cold first month (backfill 2025-06, 6 months ingested)", args.customers, cold_seconds, cold_peak,
              cold, cold["rows_in"]),
        _line("warm month-end (run 2025-07, 1 month ingested)", args.customers, warm_seconds, warm_peak,
              warm, warm_new),
    ]
    print("\n".join(lines))
    if not RESULTS.exists():
        RESULTS.write_text("| date | run | customers | wall time | throughput | peak RSS | seconds per stage | machine |\n"
                           "|---|---|---|---|---|---|---|---|\n")
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
