"""Serve the month-end and backfill deployments from this process (needs a Prefect server).

    prefect server start                                   # in one terminal
    PREFECT_API_URL=http://127.0.0.1:4200/api \\
        .venv/bin/python -m flows.serve --input /srv/landing --warehouse /srv/warehouse

The month-end deployment runs at 02:00 on the 1st, Asia/Shanghai, and evaluates the month just ended
(it passes no month; the flow derives it from the scheduled time) and requires control files
(data-contract.md section 1): a landing file without its `.ctl` is not ready. It waits for the month's
files and their control files, checking every 15 minutes until 12:00, then fails naming what is missing.
The backfill deployment has no schedule: trigger it with
`prefect deployment run tiers-backfill/backfill-served -p first=2025-01 -p last=2025-06`.

The same two deployments are declared in prefect.yaml for `prefect deploy --all` with a work pool, as
``month-end`` and ``backfill``. Served ones are named ``month-end-served`` and ``backfill-served``, so that
neither way of running overwrites the other's deployments; and this command refuses to start while the
prefect.yaml ones exist on the server, which would schedule the month-end twice.
"""

from __future__ import annotations

import sys

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.runs import backfill, month_end
from flows.schedule import MONTH_END_CRON, TIMEZONE
from ground.errors import TiersError

# Served deployments carry this suffix; prefect.yaml's have none (tests/test_schedule.py holds them equal otherwise).
SERVED_SUFFIX = "-served"
# The month-end's wait for the bank's extract: check every POLL_SECONDS until DEADLINE (local time in TIMEZONE).
POLL_SECONDS = 900
DEADLINE = "12:00"


def deployments(input_dir: str, warehouse_dir: str) -> list[RunnerDeployment]:
    where = {"input_dir": input_dir, "warehouse_dir": warehouse_dir}
    # By module path (flows.runs.month_end), not by file: a flow loaded from flows/runs.py would live in a
    # module named `runs`, which a Dask scheduler and its workers cannot import (docs/dask.md).
    by_module = {"entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        month_end.to_deployment(
            name="month-end" + SERVED_SUFFIX,
            schedules=[Cron(MONTH_END_CRON, timezone=TIMEZONE)],
            # The bank's extract may still be writing at 02:00: a file without its control file is not ready.
            parameters={**where, "require_control": True, "poll_seconds": POLL_SECONDS, "deadline": DEADLINE},
            description="Evaluates the month just ended at 02:00 on the 1st (Asia/Shanghai), once its files have landed.",
            **by_module,
        ),
        backfill.to_deployment(
            name="backfill" + SERVED_SUFFIX,
            parameters=where,
            description="Evaluates --first..--last in order; give first and last as parameters.",
            **by_module,
        ),
    ]


def deployed_twins(served: list[RunnerDeployment], client) -> list[str]:
    """The prefect.yaml deployments (the served names without the suffix) that exist on the server."""
    from prefect.exceptions import ObjectNotFound

    found = []
    for deployment in served:
        name = f"{deployment.flow_name}/{deployment.name.removesuffix(SERVED_SUFFIX)}"
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
        found.append(name)
    return found


def check_no_twins(served: list[RunnerDeployment]) -> None:
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            twins = deployed_twins(served, client)
    except Exception as error:  # no server, a wrong PREFECT_API_URL
        text = " ".join(str(error).split()) or type(error).__name__
        raise TiersError(f"cannot reach the Prefect API ({type(error).__name__}: {text}); start a Prefect "
                         "server and set PREFECT_API_URL") from None
    if twins:
        raise TiersError(
            f"{', '.join(twins)} {'is' if len(twins) == 1 else 'are'} already deployed on this Prefect server (prefect deploy --all, prefect.yaml); "
            "serving would schedule the month-end a second time: run that work pool's worker instead, or "
            f"delete them first (prefect deployment delete {twins[0]})"
        )


def main() -> None:
    import argparse

    from prefect import serve

    parser = argparse.ArgumentParser(description="Serve the tiers deployments.")
    parser.add_argument("--input", required=True, help="the landing folder the scheduled runs read")
    parser.add_argument("--warehouse", default="data/warehouse")
    args = parser.parse_args()
    served = deployments(args.input, args.warehouse)
    try:
        check_no_twins(served)
    except TiersError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    serve(*served)


if __name__ == "__main__":
    main()
