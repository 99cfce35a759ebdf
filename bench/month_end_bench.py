"""Benchmark of the month-end run (not part of `make test`): `make bench`, or

    .venv/bin/python bench/month_end_bench.py [--customers 250000 1000000] [--workdir build/bench]

Generates N customers with data/generator.py: seven months (2025-01..2025-07) as Parquet, two or
three accounts each with daily balances, about fifteen transactions a month. Then measures
  (a) a cold first month: `tiers backfill` of 2025-06 into an empty warehouse (six months ingested);
  (b) a warm month-end: `tiers run` of 2025-07 on that warehouse (one new month ingested).
Both run against a Prefect server that is already up, as a scheduled deployment's runs do; (b) is
measured once more the way an ad-hoc `tiers run` goes, starting Prefect's temporary server itself
(about 6 s more on 2 cores).
With --all-programs, every shipped program instead (the seven of rules/): thirteen months
(2025-01..2026-01) with card points, scores and foreign-currency assets, since China Guangfa Bank's
stars read twelve months; (a) is then `tiers backfill` of 2025-12 (twelve months ingested) and (b)
`tiers run` of 2026-01.
Prints and appends to bench/results-month-end.md: wall time, rows read per second, the child's peak
memory, seconds and peak memory per stage (bench/timing.py), the evaluation's seconds per step from
the snapshot's manifest, and how the times scale from the smaller customer count to the larger.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.timing import Measured, run_tiers  # noqa: E402
from data.generator import generate_landing  # noqa: E402
from ground.months import Month  # noqa: E402

RESULTS = PROJECT / "bench" / "results-month-end.md"


def _manifest(warehouse: Path, as_of: str) -> dict:
    return json.loads((warehouse / "manifests" / "program=icbc_star" / f"as_of={as_of}" / "manifest.json").read_text())


def _line(run: str, customers: int, measured: Measured, manifest: dict, rows_read: int) -> str:
    stages = ", ".join(f"{name} {use.seconds:.1f} s / {use.peak_mb:,.0f} MB" for name, use in measured.stages.items()
                       if use.seconds >= 0.05)
    evaluation = ", ".join(f"{k} {v:.1f}" for k, v in manifest["stage_seconds"].items() if k != "ingest")
    return (f"| {date.today()} | {run} | {customers:,} | {measured.seconds:.1f} s | {rows_read / measured.seconds:,.0f} rows/s "
            f"| {measured.peak_mb:,.0f} MB | {stages} | {evaluation} | {os.cpu_count()} cores {platform.machine()} |")


@contextmanager
def prefect_server(workdir: Path) -> Iterator[str]:
    """A Prefect server for the benchmark's runs, as a scheduled deployment has one (`prefect server
    start`); yields its API URL. Its database lives in the bench's work folder, and it stops after."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("the Prefect server for the benchmark did not start within 2 minutes")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(customers: int, workdir: Path, api_url: str, all_programs: bool = False) -> tuple[list[str], float, float]:
    """The cold first month and the warm month-end for ``customers``: result lines, cold and warm
    seconds (both against the running server ``api_url``); the warm month-end once more with the
    temporary server a plain `tiers run` starts, from a copy of the same warehouse."""
    months, cold_month, warm_month = (13, "2025-12", "2026-01") if all_programs else (7, "2025-06", "2025-07")
    landing = workdir / (f"landing-{customers}-parquet-13m-all" if all_programs else f"landing-{customers}-parquet-7m")
    warehouse = workdir / f"warehouse-{customers}{'-all' if all_programs else ''}"
    if not landing.exists():
        started = time.perf_counter()
        generate_landing(landing, customers=customers, first_month="2025-01", months=months, file_format="parquet",
                         txns_per_customer_month=15.0)
        print(f"generated {landing} in {time.perf_counter() - started:.0f} s")
    shutil.rmtree(warehouse, ignore_errors=True)
    common = ["--input", str(landing)] + ([] if all_programs else ["--program", "icbc_star"])
    served = {"PREFECT_API_URL": api_url}
    what = "all programs, " if all_programs else ""
    ingested = 12 if all_programs else 6

    cold = run_tiers("backfill", "--from", cold_month, "--to", cold_month, *common, "--warehouse", str(warehouse),
                     env=served)
    cold_manifest = _manifest(warehouse, Month.parse(cold_month).last_day.isoformat())
    ephemeral_warehouse = warehouse.with_name(warehouse.name + "-ephemeral")
    shutil.rmtree(ephemeral_warehouse, ignore_errors=True)
    shutil.copytree(warehouse, ephemeral_warehouse)
    warm = run_tiers("run", "--month", warm_month, *common, "--warehouse", str(warehouse), env=served)
    warm_manifest = _manifest(warehouse, Month.parse(warm_month).last_day.isoformat())
    ephemeral = run_tiers("run", "--month", warm_month, *common, "--warehouse", str(ephemeral_warehouse))
    shutil.rmtree(ephemeral_warehouse)
    # Rows read in this run: the cold run read the whole window, the warm run one new month.
    warm_new = sum(i["rows_read"] for i in warm_manifest["inputs"] if i["month"] == warm_month)
    lines = [
        _line(f"{what}cold first month (backfill {cold_month}, {ingested} months ingested; Prefect server running)",
              customers, cold, cold_manifest, cold_manifest["rows_in"]),
        _line(f"{what}warm month-end (run {warm_month}, 1 month ingested; Prefect server running)", customers, warm,
              warm_manifest, warm_new),
        _line(f"{what}warm month-end, ad hoc (as above; tiers starts Prefect's temporary server)", customers, ephemeral,
              warm_manifest, warm_new),
    ]
    return lines, cold.seconds, warm.seconds


HEADER = ("| date | run | customers | wall time | rows read per second | peak RSS | seconds / peak RSS per stage "
          "| evaluation seconds | machine |\n|---|---|---|---|---|---|---|---|---|\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[250_000, 1_000_000],
                        help="customer counts to measure, smallest first (the last two give the scaling ratio)")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "build" / "bench")
    parser.add_argument("--all-programs", action="store_true",
                        help="every shipped program over 13 months, instead of icbc_star over 7")
    args = parser.parse_args()

    lines, seconds = [], {}
    with prefect_server(args.workdir) as api_url:
        for customers in args.customers:
            measured, cold, warm = measure(customers, args.workdir, api_url, args.all_programs)
            lines += measured
            seconds[customers] = (cold, warm)
            print("\n".join(measured), flush=True)
    if len(seconds) >= 2:
        small, large = sorted(seconds)[-2:]
        factor = large / small
        ratios = [seconds[large][i] / seconds[small][i] for i in (0, 1)]
        lines.append(f"| {date.today()} | scaling {small:,} -> {large:,} customers ({factor:g}x) | | cold "
                     f"{ratios[0]:.2f}x, warm {ratios[1]:.2f}x | | | | | |")
        print(lines[-1])
    if not RESULTS.exists() or not RESULTS.read_text().startswith(HEADER):
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
