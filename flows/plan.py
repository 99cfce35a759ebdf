"""What a run must do, decided before anything is read: which program evaluates which months (with
the cascade over later published months), and which dataset-months must be ingested for their windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rules.loader import LoadedProgram
from tiers import snapshots
from tiers.errors import InputError
from tiers.months import Month, month_range, window
from tiers.warehouse import Warehouse
from transforms import landing
from transforms.evaluate import check_chain


@dataclass
class RunPlan:
    evaluations: list[tuple[Month, str]] = field(default_factory=list)  # (month, program), in run order
    ingest: list[tuple[str, Month, str]] = field(default_factory=list)  # (dataset, month, needed_by)
    skipped: list[str] = field(default_factory=list)  # programs left out, with the reason


def months_for(warehouse: Warehouse, program: str, first: Month, last: Month) -> list[Month]:
    """first..last, then every later published month: each depends on the one before (the cascade)."""
    later = [m for m in snapshots.published_months(warehouse, program) if m > last]
    return month_range(first, last) + later


def _needs(loaded: LoadedProgram, months: list[Month]) -> list[tuple[str, Month, str]]:
    """Each dataset-month the evaluations' windows read, once, with the first evaluation that needs it."""
    needs: dict[tuple[str, Month], str] = {}
    for dataset, length in loaded.rules.history_months.items():
        for month in months:
            for needed in window(month, length):
                needs.setdefault((dataset, needed), f"the {loaded.name} evaluation of {month}")
    return [(dataset, month, needed_by) for (dataset, month), needed_by in needs.items()]


def plan_run(input_dir: Path, warehouse: Warehouse, programs: list[LoadedProgram], first: Month, last: Month,
             programs_named: bool) -> RunPlan:
    """Programs named on the command line must run; otherwise one lacking history is reported and skipped."""
    plan = RunPlan()
    wanted: dict[tuple[str, Month], str] = {}
    by_month: dict[Month, list[str]] = {}
    for loaded in programs:
        months = months_for(warehouse, loaded.name, first, last)
        # A broken chain of months fails the whole run before any program publishes anything.
        check_chain(warehouse, loaded.name, months)
        needs = _needs(loaded, months)
        # Every file is located before anything is read, so a gap fails (or skips) the run up front.
        try:
            for dataset, month, needed_by in needs:
                landing.month_source(input_dir, dataset, month, needed_by)
        except InputError as missing:
            if programs_named:
                raise
            plan.skipped.append(f"{loaded.name}: skipped, its window lacks history ({missing})")
            continue
        for dataset, month, needed_by in needs:
            wanted.setdefault((dataset, month), needed_by)
        for month in months:
            by_month.setdefault(month, []).append(loaded.name)
    plan.ingest = [(dataset, month, needed_by) for (dataset, month), needed_by in sorted(wanted.items())]
    plan.evaluations = [(month, name) for month in sorted(by_month) for name in by_month[month]]
    return plan
