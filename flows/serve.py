"""Serve the month-end and backfill deployments from this process (needs a Prefect server).

    prefect server start                                   # in one terminal
    PREFECT_API_URL=http://127.0.0.1:4200/api \\
        .venv/bin/python -m flows.serve --input /srv/landing --warehouse /srv/warehouse

The month-end deployment runs at 02:00 on the 1st, Asia/Shanghai, and evaluates the month just ended
(it passes no month; the flow derives it from the scheduled time) and requires control files
(data-contract.md section 1): a landing file without its `.ctl` fails the run as not ready. The backfill deployment has no
schedule: trigger it with `prefect deployment run tiers-backfill/backfill -p first=2025-01 -p last=2025-06`.
The same two deployments are declared in prefect.yaml for `prefect deploy --all` with a work pool.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.runs import backfill, month_end
from flows.schedule import MONTH_END_CRON, TIMEZONE


def deployments(input_dir: str, warehouse_dir: str) -> list[RunnerDeployment]:
    where = {"input_dir": input_dir, "warehouse_dir": warehouse_dir}
    return [
        month_end.to_deployment(
            name="month-end",
            schedules=[Cron(MONTH_END_CRON, timezone=TIMEZONE)],
            # The bank's extract may still be writing at 02:00: a file without its control file is not ready.
            parameters={**where, "require_control": True},
            description="Evaluates the month just ended at 02:00 on the 1st (Asia/Shanghai).",
        ),
        backfill.to_deployment(
            name="backfill",
            parameters=where,
            description="Evaluates --first..--last in order; give first and last as parameters.",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the tiers deployments.")
    parser.add_argument("--input", required=True, help="the landing folder the scheduled runs read")
    parser.add_argument("--warehouse", default="data/warehouse")
    args = parser.parse_args()
    serve(*deployments(args.input, args.warehouse))


if __name__ == "__main__":
    main()
