"""The month-end waits for the bank's extract instead of failing at once.

The schedule fires at 02:00 on the 1st, often before the month's files have landed. ``wait_for_files``
lists the files of the month that the run needs (each program's datasets for that month, the
reference files; with ``require_control``, their control files too), checks again every
``poll_seconds`` until the deadline, logs what it is still waiting for, and then fails naming the files
still missing. It only looks: nothing is read or locked, so it runs before the run takes the warehouse's
writer lock. Files of earlier months are not waited for: one missing then is a gap, which fails the run
at once as before (flows/plan.py).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from flows.plan import absent_data
from flows.schedule import deadline_at
from rules import load_programs
from ground.errors import InputError
from ground.months import Month, window
from transforms import landing
from transforms.ingest import REFERENCE_DATASETS


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:  # the flow's body called outside a flow run (tests)
        return logging.getLogger("tiers.waiting")


def now() -> datetime:
    return datetime.now(timezone.utc)


def _not_ready(source: landing.Source, require_control: bool) -> list[str]:
    control = landing.missing_control(source) if require_control else None
    return [str(control)] if control else []


def missing_files(input_dir: Path, month: Month, programs: list[str] | None, require_control: bool) -> list[str]:
    """The files of ``month`` (and the reference files) that a run of ``programs`` needs and that have not
    landed yet, as the run would look for them."""
    missing = []
    for dataset, required in REFERENCE_DATASETS:
        try:
            source = landing.reference_source(input_dir, dataset, required)
        except InputError:
            missing.append(f"{input_dir / dataset}.csv (or .parquet)")
            continue
        if source is not None:
            missing += _not_ready(source, require_control)
    # Without --program, a program whose datasets the bank does not have at all will not run: not waited for.
    datasets = sorted({dataset for loaded in load_programs(programs) if programs or not absent_data(input_dir, loaded)
                       for dataset, length in loaded.rules.history_months.items() if month in window(month, length)})
    for dataset in datasets:
        try:
            source = landing.month_source(input_dir, dataset, month, "the month-end")
        except InputError:
            missing.append(f"{input_dir / dataset / str(month)}.csv (or .parquet, or a folder {month}/)")
            continue
        missing += _not_ready(source, require_control)
    return missing


def wait_for_files(input_dir: str, month: str, programs: list[str] | None, require_control: bool,
                   poll_seconds: float, deadline: str | float) -> None:
    """Return once every file of ``month`` the run needs has landed; check every ``poll_seconds`` until
    ``deadline`` (a time of day in the schedule's time zone, or seconds from now), then fail naming them."""
    if poll_seconds <= 0:
        raise InputError(f"poll_seconds {poll_seconds}: expected a number of seconds above 0, such as 900")
    folder, when = Path(input_dir), Month.parse(month)
    if not folder.is_dir():  # a wrong path, not an extract still on its way
        raise InputError(f"{input_dir}: the landing folder does not exist")
    started = now()
    until = deadline_at(deadline, started)
    log = _logger()
    waited = None
    while missing := missing_files(folder, when, programs, require_control):
        if missing != waited:  # once, and again whenever some have arrived
            log.info(f"{month}: waiting for {len(missing)} file{'s' if len(missing) > 1 else ''} to land (checking "
                     f"every {poll_seconds:g} s until {until.isoformat(timespec='seconds')}): "
                     + ", ".join(missing))
            waited = missing
        left = (until - now()).total_seconds()
        if left <= 0:
            raise InputError(
                f"{month}: still missing at the deadline ({until.isoformat(timespec='seconds')}, after waiting "
                f"{(now() - started).total_seconds():.0f} s): {', '.join(missing)}; nothing was read or published, "
                "run the month again once they have landed"
            )
        time.sleep(min(poll_seconds, left))
    if waited:
        log.info(f"{month}: every file has landed, after waiting {(now() - started).total_seconds():.0f} s")

