"""The month-end schedule, offline: the deployment definitions and the month a scheduled run evaluates."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows import runs
from flows.schedule import MONTH_END_CRON, TIMEZONE, month_just_ended, scheduled_month
from ground.months import Month

PROJECT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_prefect_yaml_declares_the_month_end_and_backfill_deployments():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    assert set(by_name) == {"month-end", "backfill"}
    assert by_name["month-end"]["schedules"] == [{"cron": MONTH_END_CRON, "timezone": TIMEZONE}]
    assert "schedules" not in by_name["backfill"]
    for deployment, flow in ((by_name["month-end"], runs.month_end), (by_name["backfill"], runs.backfill)):
        # Loaded as a deployment loads it: the very flow of the module flows.runs (docs/dask.md).
        assert load_flow_from_entrypoint(deployment["entrypoint"]) is flow
        assert flow.fn.__module__ == "flows.runs"
        accepted = inspect.signature(flow.fn).parameters
        assert set(deployment["parameters"]) <= set(accepted)
        required = {n for n, p in accepted.items() if p.default is inspect.Parameter.empty}
        # Scheduled runs pass no month: the flow derives it; everything else required is given.
        assert required - {"first", "last"} <= set(deployment["parameters"])
    assert "month" not in by_name["month-end"]["parameters"]
    assert inspect.signature(runs.month_end.fn).parameters["month"].default is None
    # The scheduled month-end waits for the bank's extract: every 15 minutes until noon.
    assert (by_name["month-end"]["parameters"]["poll_seconds"], by_name["month-end"]["parameters"]["deadline"]) == (900, "12:00")


def test_served_deployments_carry_the_same_schedule_and_parameters_under_their_own_names():
    from flows.serve import deployments

    config = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in config["deployments"]}
    month_end, backfill = deployments("/srv/landing", "/srv/warehouse")
    # Never the prefect.yaml names: serving and `prefect deploy --all` must not overwrite each other.
    assert (month_end.name, backfill.name) == ("month-end-served", "backfill-served")
    assert (month_end.flow_name, backfill.flow_name) == ("tiers-month-end", "tiers-backfill")
    [schedule] = month_end.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 1 * *", "Asia/Shanghai")
    assert backfill.schedules == []
    where = {"input_dir": "/srv/landing", "warehouse_dir": "/srv/warehouse"}
    # The scheduled run reads only files whose control file says they are complete (data contract section 1),
    # and waits for them as prefect.yaml's does.
    assert month_end.parameters == {**declared["month-end"]["parameters"], **where}
    assert month_end.parameters["require_control"] is True
    assert backfill.parameters == {**declared["backfill"]["parameters"], **where}
    # By module path: the engine imports flows.runs, whatever the serving process's directory.
    assert (month_end.entrypoint, backfill.entrypoint) == ("flows.runs.month_end", "flows.runs.backfill")
    assert (month_end.entrypoint, backfill.entrypoint) == (declared["month-end"]["entrypoint"],
                                                           declared["backfill"]["entrypoint"])


def test_the_schedule_fires_at_two_on_the_first_in_shanghai():
    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=MONTH_END_CRON, timezone=TIMEZONE)
    start = datetime(2025, 6, 15, tzinfo=timezone.utc)
    dates = asyncio.run(schedule.get_dates(n=3, start=start))
    local = [(d.astimezone(SHANGHAI).month, d.astimezone(SHANGHAI).day, d.astimezone(SHANGHAI).hour) for d in dates]
    assert local == [(7, 1, 2), (8, 1, 2), (9, 1, 2)]
    # ...which is still the last day of the month before in UTC: the month is read in Shanghai time.
    in_utc = dates[0].astimezone(timezone.utc)
    assert (in_utc.month, in_utc.day, in_utc.hour) == (6, 30, 18)
    assert [month_just_ended(d) for d in dates] == [Month(2025, 6), Month(2025, 7), Month(2025, 8)]


@pytest.mark.parametrize("scheduled, month", [
    (datetime(2025, 7, 1, 2, tzinfo=SHANGHAI), "2025-06"),
    (datetime(2025, 6, 30, 18, tzinfo=timezone.utc), "2025-06"),   # the same instant
    (datetime(2026, 1, 1, 2, tzinfo=SHANGHAI), "2025-12"),         # across the year
    (datetime(2025, 3, 1, 0, 30, tzinfo=SHANGHAI), "2025-02"),     # a late start still the 1st locally
    (datetime(2025, 3, 15, 9, tzinfo=SHANGHAI), "2025-02"),        # a run started by hand mid-month
])
def test_month_just_ended(scheduled, month):
    assert str(month_just_ended(scheduled)) == month


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError):
        month_just_ended(datetime(2025, 7, 1, 2))


def test_a_scheduled_run_without_a_month_evaluates_the_month_just_ended(monkeypatch):
    from prefect.runtime import flow_run

    scheduled = datetime(2025, 7, 1, 2, tzinfo=SHANGHAI)
    monkeypatch.setattr(flow_run, "get_scheduled_start_time", lambda: scheduled)
    monkeypatch.setitem(flow_run.FIELDS, "scheduled_start_time", lambda: scheduled)
    assert scheduled_month() == Month(2025, 6)

    seen = {}
    monkeypatch.setattr(runs, "run_months", lambda input_dir, first, last, *rest, **options: seen.update(first=first, last=last))
    runs.month_end.fn("landing")
    assert seen == {"first": "2025-06", "last": "2025-06"}


@pytest.mark.parametrize("deadline, started, expected", [
    ("12:00", datetime(2025, 7, 1, 2, tzinfo=SHANGHAI), datetime(2025, 7, 1, 12, tzinfo=SHANGHAI)),
    # The run fires at 02:00 Shanghai, 18:00 UTC the day before: noon is read in Shanghai, on its day.
    ("12:00", datetime(2025, 6, 30, 18, tzinfo=timezone.utc), datetime(2025, 7, 1, 12, tzinfo=SHANGHAI)),
    ("9:30", datetime(2025, 7, 1, 2, tzinfo=SHANGHAI), datetime(2025, 7, 1, 9, 30, tzinfo=SHANGHAI)),
    (600, datetime(2025, 7, 1, 2, tzinfo=SHANGHAI), datetime(2025, 7, 1, 2, 10, tzinfo=SHANGHAI)),
    ("0.5", datetime(2025, 7, 1, 2, tzinfo=SHANGHAI), datetime(2025, 7, 1, 2, 0, 0, 500000, tzinfo=SHANGHAI)),
])
def test_the_deadline(deadline, started, expected):
    from flows.schedule import deadline_at

    assert deadline_at(deadline, started) == expected


@pytest.mark.parametrize("deadline", ["noon", "25:00", "12:60", "-5", ""])
def test_a_deadline_that_is_neither_a_time_nor_seconds_is_refused(deadline):
    from flows.schedule import deadline_at
    from ground.errors import TiersError

    with pytest.raises(TiersError, match=r"deadline .*: expected a time of day such as 12:00 \(Asia/Shanghai\) "
                                         r"or a number of seconds$"):
        deadline_at(deadline, datetime(2025, 7, 1, 2, tzinfo=SHANGHAI))


# -- the month-end waits for the bank's extract (flows/waiting.py) -----------------------------------------

GOLDEN_LANDING = PROJECT / "tests" / "golden" / "icbc_buffers" / "landing"
JUNE_FILES = ("balances/2025-06.csv", "transactions/2025-06.csv")


@pytest.fixture
def landing_without_june(tmp_path):
    """The golden landing folder before June's extract has landed; returns it and where June's files are."""
    landing, later = tmp_path / "landing", tmp_path / "later"
    shutil.copytree(GOLDEN_LANDING, landing)
    for name in JUNE_FILES:
        (later / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(landing / name, later / name)
    return landing, later


def test_the_month_end_waits_for_files_that_land_while_it_waits(prefect_harness, landing_without_june, tmp_path,
                                                                monkeypatch, caplog):
    """June's files land after the second check: the run logs what it waits for, then evaluates June."""
    import logging
    import threading

    from flows import waiting

    landing, later = landing_without_june
    checks = []  # what each check found missing
    missing_files = waiting.missing_files
    monkeypatch.setattr(waiting, "missing_files", lambda *args: checks.append(missing_files(*args)) or checks[-1])

    def the_extract_lands():
        while len(checks) < 2:
            time.sleep(0.01)
        for name in JUNE_FILES:
            shutil.copy(later / name, landing / name)

    caplog.set_level(logging.INFO, logger="tiers.waiting")
    lands = threading.Thread(target=the_extract_lands, daemon=True)
    lands.start()
    result = runs.month_end.fn(str(landing), "2025-06", str(tmp_path / "warehouse"), ["icbc_star"],
                               poll_seconds=0.05, deadline=60)
    lands.join(5)
    assert [(e.program, e.month) for e in result["evaluated"]] == [("icbc_star", "2025-06")]
    # Two checks found both files missing; the one after they landed found nothing missing.
    assert len(checks) >= 3 and len(checks[0]) == len(checks[1]) == 2 and checks[-1] == []
    waited = [r.getMessage() for r in caplog.records if r.name == "tiers.waiting"]
    assert waited[0].startswith("2025-06: waiting for 2 files to land (checking every 0.05 s until ")
    assert waited[0].endswith(f": {landing / 'balances' / '2025-06'}.csv (or .parquet, or a folder 2025-06/), "
                              f"{landing / 'transactions' / '2025-06'}.csv (or .parquet, or a folder 2025-06/)")
    assert waited[-1].startswith("2025-06: every file has landed, after waiting ")


def test_the_month_end_fails_at_the_deadline_naming_the_files_still_missing(landing_without_june, tmp_path):
    from ground.errors import InputError

    landing, _ = landing_without_june
    warehouse = tmp_path / "warehouse"
    started = time.monotonic()
    with pytest.raises(InputError) as failed:
        runs.month_end.fn(str(landing), "2025-06", str(warehouse), ["icbc_star"], poll_seconds=0.05, deadline=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("2025-06: still missing at the deadline (")
    assert message.endswith(f"): {landing / 'balances' / '2025-06'}.csv (or .parquet, or a folder 2025-06/), "
                            f"{landing / 'transactions' / '2025-06'}.csv (or .parquet, or a folder 2025-06/); "
                            "nothing was read or published, run the month again once they have landed")
    assert not warehouse.exists()  # it only looked: no lock taken, nothing written


def test_with_control_files_required_a_file_without_its_control_file_is_waited_for(tmp_path):
    """The extract writes each file and then its .ctl: a file without one has not landed yet."""
    from flows.waiting import missing_files
    from ground.months import Month

    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN_LANDING, landing)
    june = Month(2025, 6)
    assert missing_files(landing, june, ["icbc_star"], require_control=False) == []
    waiting_for = missing_files(landing, june, ["icbc_star"], require_control=True)
    assert str(landing / "customers.csv.ctl") in waiting_for
    assert str(landing / "balances" / "2025-06.csv.ctl") in waiting_for
    assert str(landing / "transactions" / "2025-06.csv.ctl") in waiting_for
    assert not any("2025-05" in name for name in waiting_for)  # earlier months are not waited for
    for name in waiting_for:
        Path(name).write_text("rows,total\n0,0\n")
    assert missing_files(landing, june, ["icbc_star"], require_control=True) == []
