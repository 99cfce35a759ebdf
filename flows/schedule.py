"""The month-end schedule: 02:00 on the 1st, Shanghai time, evaluating the month just ended.

The scheduler starts a run at 2025-07-01 02:00 +08:00, which is 2025-06-30 18:00 UTC: the month
just ended is read off the scheduled time *in the schedule's time zone*, not in UTC. The run then waits
for the month's files until a deadline, a time of day read in the same time zone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ground.errors import TiersError
from ground.months import Month

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


def deadline_at(deadline: str | float, started: datetime, timezone: str = TIMEZONE) -> datetime:
    """When a run that started at ``started`` stops waiting for its files. ``"12:00"``: that time of day in
    ``timezone``, on the day ``started`` falls in there (already past for a run started later that day);
    a number (or a string of digits): that many seconds after ``started``."""
    if started.tzinfo is None:
        raise ValueError("a start time must carry its time zone")
    text = str(deadline).strip()
    if not isinstance(deadline, bool) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return started + timedelta(seconds=float(text))
    match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", text)
    if not match:
        raise TiersError(f"deadline {deadline!r}: expected a time of day such as 12:00 ({timezone}) or a number "
                         "of seconds")
    local = started.astimezone(ZoneInfo(timezone))
    return local.replace(hour=int(match.group(1)), minute=int(match.group(2)), second=0, microsecond=0)
