"""The month-end schedule, offline: the deployment definitions and the month a scheduled run evaluates."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows import runs
from flows.schedule import MONTH_END_CRON, TIMEZONE, month_just_ended, scheduled_month
from tiers.months import Month

PROJECT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_prefect_yaml_declares_the_month_end_and_backfill_deployments():
    config = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    assert set(by_name) == {"month-end", "backfill"}
    assert by_name["month-end"]["schedules"] == [{"cron": MONTH_END_CRON, "timezone": TIMEZONE}]
    assert "schedules" not in by_name["backfill"]
    for deployment, flow in ((by_name["month-end"], runs.month_end), (by_name["backfill"], runs.backfill)):
        path, attribute = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, attribute) is flow
        accepted = inspect.signature(flow.fn).parameters
        assert set(deployment["parameters"]) <= set(accepted)
        required = {n for n, p in accepted.items() if p.default is inspect.Parameter.empty}
        # Scheduled runs pass no month: the flow derives it; everything else required is given.
        assert required - {"first", "last"} <= set(deployment["parameters"])
    assert "month" not in by_name["month-end"]["parameters"]
    assert inspect.signature(runs.month_end.fn).parameters["month"].default is None


def test_served_deployments_carry_the_same_schedule():
    from flows.serve import deployments

    month_end, backfill = deployments("/srv/landing", "/srv/warehouse")
    assert (month_end.name, backfill.name) == ("month-end", "backfill")
    [schedule] = month_end.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 1 * *", "Asia/Shanghai")
    assert backfill.schedules == []
    where = {"input_dir": "/srv/landing", "warehouse_dir": "/srv/warehouse"}
    # The scheduled run reads only files whose control file says they are complete (data contract section 1).
    assert month_end.parameters == {**where, "require_control": True}
    assert backfill.parameters == where


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
    monkeypatch.setattr(runs, "_run", lambda input_dir, first, last, *rest: seen.update(first=first, last=last))
    runs.month_end.fn("landing")
    assert seen == {"first": "2025-06", "last": "2025-06"}
