"""A re-run that cascades over later months publishes them as one change (issue 11, point 7;
stores/snapshots.py): a kill -9 at any moment leaves the months either as before or, once the next run
has finished what the killed one staged, as after; never some months of one run and some of another.

Re-running 2025-03 re-publishes 2025-03..2025-06 (four months). Two landing folders differ for one
customer in every window month, so each month's rows tell which data they come from. After each kill
the next run re-runs a random month with the same landing folder, as an operator would: every month
must then equal a fresh backfill of that data.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time

import pytest

from test_reliability import (PROGRAM, TIERS, cli_env, copy_landing, kill_group, published_rows, rows_of,
                              scale_balances, snapshot_file)
from ground.months import Month, month_range

FROM, TO = "2025-03", "2025-06"
MONTHS = [str(m) for m in month_range(Month.parse(FROM), Month.parse(TO))]
WINDOW_MONTHS = [str(m) for m in month_range(Month.parse("2024-10"), Month.parse(TO))]


def _run_argv(landing, warehouse, month):
    return [str(TIERS), "run", "--input", str(landing), "--month", month, "--program", PROGRAM,
            "--warehouse", str(warehouse)]


@pytest.fixture(scope="module")
def references(prefect_harness, tmp_path_factory):
    """Landing folders A and B, and a clean backfill of each (its warehouse and its rows)."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("cascade-kill").resolve()
    landings = {"A": copy_landing(base / "landing-a"), "B": copy_landing(base / "landing-b")}
    scale_balances(landings["B"], "climber", 3, WINDOW_MONTHS)
    rows, warehouses = {}, {}
    for key, landing in landings.items():
        warehouses[key] = base / f"reference-{key}"
        backfill.fn(str(landing), FROM, TO, str(warehouses[key]), [PROGRAM])
        rows[key] = published_rows(warehouses[key], MONTHS)
    assert all(rows["A"][m] != rows["B"][m] for m in MONTHS)
    return base, landings, warehouses, rows


def _run_ids(warehouse) -> set[str]:
    manifests = [warehouse / "manifests" / f"program={PROGRAM}" / f"as_of={Month.parse(m).last_day}" / "manifest.json"
                 for m in MONTHS]
    return {json.loads(manifest.read_text())["run_id"] for manifest in manifests}


def test_a_cascade_is_published_as_one_run(references, tmp_path):
    """Every month of one re-run names that run in its manifest; the run log has the run."""
    from flows.runs import month_end

    _, landings, warehouses, rows = references
    warehouse = tmp_path / "warehouse"
    shutil.copytree(warehouses["A"], warehouse)
    result = month_end.fn(str(landings["B"]), FROM, str(warehouse), [PROGRAM])
    assert published_rows(warehouse, MONTHS) == rows["B"]
    assert _run_ids(warehouse) == {result["run_id"]}
    assert not (warehouse / "publishing.json").exists() and not (warehouse / "cascade.json").exists()
    assert not list((warehouse / "staging").glob("run-*"))
    assert (warehouse / "runs" / f"run-{result['run_id']}.parquet").is_file()


def test_a_stopped_cascade_is_taken_over_by_the_next_run_of_a_later_month(references, tmp_path, monkeypatch):
    """A run that stopped after ingesting new data but before publishing leaves its cascade recorded; a
    later run of June alone then re-evaluates from 2025-03, so no month mixes the old and the new data."""
    from flows import runs
    from flows.runs import month_end
    from stores import snapshots

    _, landings, warehouses, rows = references
    warehouse = tmp_path / "warehouse"
    shutil.copytree(warehouses["A"], warehouse)

    def stop(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshots, "commit_run", stop)
    with pytest.raises(OSError):
        month_end.fn(str(landings["B"]), FROM, str(warehouse), [PROGRAM])
    monkeypatch.undo()
    assert published_rows(warehouse, MONTHS) == rows["A"]  # nothing published
    assert not list((warehouse / "staging").glob("run-*"))  # and nothing left staged
    assert json.loads((warehouse / "cascade.json").read_text())["programs"] == {PROGRAM: FROM}

    result = runs.month_end.fn(str(landings["B"]), TO, str(warehouse), [PROGRAM])
    assert [e.month for e in result["evaluated"]] == MONTHS
    assert result["resumed"] and FROM in result["resumed"][0]
    assert published_rows(warehouse, MONTHS) == rows["B"]
    assert not (warehouse / "cascade.json").exists()


def test_a_journal_left_by_a_kill_is_finished_by_the_next_run(references, tmp_path, monkeypatch):
    """Killed between its renames: two months are the new run's, two the old; the next writing run
    (here a run of another month) finishes the moves first."""
    from flows.runs import month_end
    from stores import snapshots

    _, landings, warehouses, rows = references
    warehouse = tmp_path / "warehouse"
    shutil.copytree(warehouses["A"], warehouse)
    real_replace, moved = os.replace, []

    def replace_then_die(source, target):
        if "snapshots" in str(target) and str(target).endswith(".parquet") and len(moved) == 2:
            raise KeyboardInterrupt  # stands for the kill: no clean-up code runs past the journal
        real_replace(source, target)
        if "snapshots" in str(target):
            moved.append(target)

    monkeypatch.setattr(snapshots.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        month_end.fn(str(landings["B"]), FROM, str(warehouse), [PROGRAM])
    monkeypatch.undo()
    mixed = published_rows(warehouse, MONTHS)
    assert mixed[MONTHS[0]] == rows["B"][MONTHS[0]] and mixed[MONTHS[-1]] == rows["A"][MONTHS[-1]]
    journal = json.loads((warehouse / "publishing.json").read_text())
    # Until it is finished, a reader can tell which months are whose: the manifests name their runs.
    assert len(_run_ids(warehouse)) == 2 and journal["run_id"] in _run_ids(warehouse)

    month_end.fn(str(landings["B"]), TO, str(warehouse), [PROGRAM])
    assert published_rows(warehouse, MONTHS) == rows["B"]
    assert not (warehouse / "publishing.json").exists()


@pytest.mark.slow
def test_kill_9_during_a_cascade_then_the_next_run_leaves_no_mix(references, prefect_harness):
    """SIGKILL ``tiers run --month 2025-03`` (re-publishing four months) at random moments, 20 times,
    a third of them once its journal appears (while it publishes). After each kill every month is a
    whole file of the old or the new data; where the killed run had not yet recorded anything, all are
    the old. Then a run of a random month with the same landing folder leaves every month equal to a
    fresh backfill of the new data."""
    from prefect.settings import PREFECT_API_URL

    base, landings, warehouses, rows = references
    warehouse = base / "kill-warehouse"
    shutil.copytree(warehouses["A"], warehouse)
    env = cli_env(base / "prefect-home", PREFECT_API_URL=PREFECT_API_URL.value())
    rng = random.Random(20251130)

    started = time.monotonic()
    done = subprocess.run(_run_argv(landings["B"], warehouse, FROM), env=env, capture_output=True, text=True,
                          timeout=300)
    full_run = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert published_rows(warehouse, MONTHS) == rows["B"]

    previous_key, outcomes = "B", []
    for iteration in range(20):
        key = "A" if previous_key == "B" else "B"
        publishing = iteration % 3 == 0
        proc = subprocess.Popen(_run_argv(landings[key], warehouse, FROM), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.monotonic()
        if publishing:
            while proc.poll() is None and not (warehouse / "publishing.json").exists():
                assert time.monotonic() - started < 300, "the run never published"
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.005))
        else:
            deadline = started + rng.uniform(0.2, full_run)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        exited = kill_group(proc)

        after_kill = published_rows(warehouse, MONTHS)  # reading each file whole: none is partial
        for month in MONTHS:
            assert after_kill[month] in (rows[previous_key][month], rows[key][month]), (iteration, month)
        recorded = (warehouse / "cascade.json").exists() or (warehouse / "publishing.json").exists()
        if not recorded:  # not yet begun (all old), or done (all new, killed while it wrote its run log)
            assert after_kill in (rows[previous_key], rows[key]), f"iteration {iteration}: a mix with nothing recorded"

        # The next run: a random month when the killed run had begun or finished, else the same command again
        # (a run of a later month alone, with changed data, does not re-evaluate the earlier months, by design).
        month = rng.choice(MONTHS) if recorded or after_kill == rows[key] else FROM
        nxt = subprocess.run(_run_argv(landings[key], warehouse, month), env=env, capture_output=True, text=True,
                             timeout=300)
        assert nxt.returncode == 0, (iteration, nxt.stderr)
        assert published_rows(warehouse, MONTHS) == rows[key], f"iteration {iteration}: a mix after the next run"
        assert not (warehouse / "publishing.json").exists() and not (warehouse / "cascade.json").exists()
        outcomes.append((publishing, exited, recorded, month))
        previous_key = key

    print("\nkills (waited for the journal, exited by itself, had recorded, next month):\n"
          + "\n".join(map(str, outcomes)))
    assert sum(1 for p, e, r, _ in outcomes if r and not e) >= 5, outcomes  # most kills hit a run under way
    assert any(p and not e for p, e, _, _ in outcomes), outcomes
