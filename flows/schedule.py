"""The month-end schedule: 02:00 on the 1st, Shanghai time, evaluating the month just ended.

The scheduler starts a run at 2025-07-01 02:00 +08:00, which is 2025-06-30 18:00 UTC: the month
just ended is read off the scheduled time *in the schedule's time zone*, not in UTC.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from tiers.months import Month

MONTH_END_CRON = "0 2 1 * *"
TIMEZONE = "Asia/Shanghai"


def month_just_ended(scheduled: datetime, timezone: str = TIMEZONE) -> Month:
    """The calendar month before the one ``scheduled`` falls in, in ``timezone``."""
    if scheduled.tzinfo is None:
        raise ValueError("a scheduled time must carry its time zone")
    return Month.of(scheduled.astimezone(ZoneInfo(timezone)).date()).plus(-1)


def scheduled_month() -> Month:
    """The month a scheduled flow run evaluates (Prefect's expected start time; now outside a run)."""
    from prefect.runtime import flow_run

    return month_just_ended(flow_run.scheduled_start_time)
