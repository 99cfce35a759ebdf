"""Calendar months as the pipeline sees them: ``YYYY-MM`` strings in, dates out."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

from ground.errors import TiersError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Month":
        match = _MONTH.match(text or "")
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise TiersError(f"month {text!r} is not a month: expected YYYY-MM, e.g. 2025-06")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> "Month":
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def plus(self, months: int) -> "Month":
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, self.days)

    @property
    def days(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]


def month_range(first: Month, last: Month) -> list[Month]:
    """Every month from ``first`` to ``last`` inclusive (empty when last < first)."""
    months = []
    current = first
    while current <= last:
        months.append(current)
        current = current.plus(1)
    return months


def window(end: Month, length: int) -> list[Month]:
    """The ``length`` months ending with ``end``: the window of an evaluation at ``end``."""
    return month_range(end.plus(-(length - 1)), end)
