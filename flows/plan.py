"""What a run must do, decided before anything is read: which program evaluates which months (with
the cascade over later published months, and over what an unfinished run left), and which dataset-months
must be ingested for their windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rules.loader import LoadedProgram
from stores import snapshots
from ground.errors import InputError
from ground.months import Month, month_range, window
from stores.warehouse import Warehouse
from rules import sources
from transforms import landing
from transforms.evaluate import check_chain


@dataclass
class RunPlan:
    evaluations: list[tuple[Month, str]] = field(default_factory=list)  # (month, program), in run order
    ingest: list[tuple[str, Month, str]] = field(default_factory=list)  # (dataset, month, needed_by)
    skipped: list[str] = field(default_factory=list)  # programs left out, with the reason
    resumed: list[str] = field(default_factory=list)  # cascades of an unfinished run this run takes over

    @property
    def firsts(self) -> dict[str, Month]:
        """Each program's first evaluated month: where the run's cascade starts."""
        firsts: dict[str, Month] = {}
        for month, program in self.evaluations:
            firsts.setdefault(program, month)
        return firsts


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


def _before_landing(input_dir: Path, loaded: LoadedProgram, month: Month) -> bool:
    """Whether ``month`` comes before the landing folder's first month, over every monthly dataset (a
    bank's first months: history that was never extracted). A dataset that starts later than another
    has a gap, not a beginning; except an optional dataset the program reads (card points), which
    begins where it begins: the program's first month is then the later of the two (programs.md section 5)."""
    def first(dataset: str) -> list[Month]:
        return landing.landed_months(input_dir, dataset)[:1]

    landed = [found[0] for dataset in (each.name for each in sources.monthly()) if (found := first(dataset))]
    if not landed:
        return False
    beginning = min(landed)
    for dataset in loaded.rules.optional_sources:
        if loaded.rules.history_months.get(dataset) and (found := first(dataset)):
            beginning = max(beginning, found[0])
    return month < beginning


def absent_data(input_dir: Path, loaded: LoadedProgram) -> list[str]:
    """What the program's figures read that the landing folder lacks altogether (data-contract.md section 4):
    an optional dataset, or any rate of a currency a figure is valued in. Nothing: the program applies."""
    absent = []
    for dataset in loaded.rules.optional_sources:
        if not landing.present(input_dir, dataset):
            absent.append(f"no {dataset}/ folder" if sources.source(dataset).monthly else f"no {dataset} file")
    for currency in loaded.rules.valuation_currencies:
        if not landing.has_rates(input_dir, currency):
            absent.append(f"no {currency} rate in fx_rates")
    return absent


def _resume_from(warehouse: Warehouse, program: str, first: Month, unfinished: dict[str, Month]) -> Month:
    """An unfinished run's cascade is taken over when it reaches a published month: those months may
    have been computed from data that run already replaced in the warehouse."""
    pending = unfinished.get(program)
    if pending is None or pending >= first:
        return first
    if not any(month >= pending for month in snapshots.published_months(warehouse, program)):
        return first
    return pending


def plan_run(input_dir: Path, warehouse: Warehouse, programs: list[LoadedProgram], first: Month, last: Month,
             programs_named: bool, unfinished: dict[str, Month] | None = None) -> RunPlan:
    """A month missing from a window fails the run, named or not. The one exception: a program nobody
    named, with nothing published, whose window starts before the landing folder's first month (the
    bank's first months) is skipped and reported. ``unfinished``: programs whose re-evaluation from a
    month a stopped run left undone (snapshots.unfinished_cascades); this run re-evaluates from there."""
    plan = RunPlan()
    wanted: dict[tuple[str, Month], str] = {}
    by_month: dict[Month, list[str]] = {}
    for loaded in programs:
        absent = absent_data(input_dir, loaded)
        if absent:
            if programs_named:
                raise InputError(f"{loaded.name} needs data that {input_dir} does not have: {'; '.join(absent)}")
            plan.skipped.append(f"{loaded.name}: does not apply to this landing folder ({'; '.join(absent)})")
            continue
        start = _resume_from(warehouse, loaded.name, first, unfinished or {})
        if start < first:
            plan.resumed.append(f"{loaded.name}: re-evaluating from {start}, where an unfinished run's re-evaluation "
                                "started (it stopped before publishing)")
        months = months_for(warehouse, loaded.name, start, last)
        # A broken chain of months fails the whole run before any program publishes anything.
        check_chain(warehouse, loaded.name, months)
        needs = _needs(loaded, months)
        # Every file is located before anything is read, so a gap fails (or skips) the run up front.
        try:
            for dataset, month, needed_by in needs:
                landing.month_source(input_dir, dataset, month, needed_by)
        except InputError as missing:
            skippable = (not programs_named and not snapshots.published_months(warehouse, loaded.name)
                         and _before_landing(input_dir, loaded, month))
            if not skippable:
                raise
            plan.skipped.append(f"{loaded.name}: skipped, its window starts before the landing folder's first "
                                f"month and nothing of it is published yet ({missing})")
            continue
        for dataset, month, needed_by in needs:
            wanted.setdefault((dataset, month), needed_by)
        for month in months:
            by_month.setdefault(month, []).append(loaded.name)
    plan.ingest = [(dataset, month, needed_by) for (dataset, month), needed_by in sorted(wanted.items())]
    plan.evaluations = [(month, name) for month in sorted(by_month) for name in by_month[month]]
    return plan
