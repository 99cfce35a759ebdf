"""``tiers explain``: why a customer has their tier, read back from the golden scenarios' snapshots.

Each scenario's warehouse is backfilled once per module, in-process (one Prefect server for the
session), over the months these tests look at: fewer than the README's full range where the later
months add nothing here. Two tests go through the installed command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from rules.loader import RULES_DIR
from ground.errors import TiersError
from interfaces.explain import explain_customer, render_text
from ground.months import Month

GOLDEN = Path(__file__).resolve().parent / "golden"
# scenario -> (program, first month, last month)
BACKFILLS = {
    "icbc_buffers": ("icbc_star", "2024-12", "2025-07"),
    "icbc_floors_caps": ("icbc_star", "2025-06", "2025-08"),
    "icbc_money": ("icbc_star", "2025-06", "2025-06"),
    "icbc_thresholds": ("icbc_star", "2025-06", "2025-06"),
    "boc_tracks": ("boc_vip", "2025-07", "2025-08"),
}


@pytest.fixture(scope="module")
def warehouses(prefect_harness, tmp_path_factory) -> dict[str, Path]:
    from flows.runs import backfill

    built = {}
    for scenario, (program, first, last) in BACKFILLS.items():
        warehouse = tmp_path_factory.mktemp("explain") / scenario
        backfill.fn(str(GOLDEN / scenario / "landing"), first, last, str(warehouse), [program])
        built[scenario] = warehouse
    return built


def explain(warehouses, scenario: str, customer: str, month: str) -> dict:
    program = BACKFILLS[scenario][0]
    [explanation] = explain_customer(warehouses[scenario], customer, Month.parse(month), program)
    assert json.loads(json.dumps(explanation)) == explanation  # JSON-friendly as it stands
    return explanation


def band(explanation: dict, name: str) -> dict:
    return next(b for b in explanation["bands"] if b["name"] == name)


def figure(explanation: dict, name: str) -> dict:
    return next(f for f in explanation["figures"] if f["name"] == name)


# -- the state machine's reasons, one sentence each ----------------------------------------------------

def test_buffer_at_the_june_review(warehouses):
    e = explain(warehouses, "icbc_buffers", "recovers", "2025-06")
    assert (e["reason"], e["tier_name"], e["computed_tier_name"]) == ("buffer", "five-star", "three-star")
    assert (e["failed_reviews"], e["buffer_since"], e["falls_after_failed_reviews"]) == (1, "2025-06-30", 2)
    assert e["at_risk"] is True and e["next_review"] == "2025-12-31" and e["points"] == "453.59"
    assert [b["status"] for b in e["bands"]] == ["missed"] * 4 + ["earned"] + ["below earned"] * 2
    assert e["next_band_up"]["gap"] == "453.59 points, 46.41 short of 500 for four-star"
    assert "2025-12-31 review" in e["decision"] and e["decision"].startswith("Kept five-star in its buffer")
    assert figure(e, "long_term_assets")["basis"] == "average daily balance over 2025-01..2025-06 (181 days)"


def test_held_until_review_before_any_failed_review(warehouses):
    e = explain(warehouses, "icbc_buffers", "recovers", "2025-03")
    assert e["reason"] == "held_until_review" and e["failed_reviews"] == 0
    assert e["decision"] == (
        "Held at five-star until the 2025-06-30 review: earned four-star (1,760.38 points, 239.62 short of 2,000 "
        "for five-star); the 2025-06-30 review would be its first failed one, and a five-star falls after "
        "2 failed reviews."
    )


def test_held_in_buffer_falls_at_next_review(warehouses):
    e = explain(warehouses, "icbc_buffers", "five-star", "2025-07")
    assert e["reason"] == "held_until_review" and e["buffer_since"] == "2025-06-30"
    assert "falls at the 2025-12-31 review unless it earns five-star again" in e["decision"]


def test_downgrade_and_meets_and_upgrade(warehouses):
    fell = explain(warehouses, "icbc_buffers", "four-star", "2025-06")
    assert (fell["reason"], fell["previous_tier_name"], fell["tier_name"]) == ("downgrade", "four-star", "three-star")
    assert fell["decision"].startswith("Downgraded from four-star to three-star at the 2025-06-30 review")
    assert "after 1 failed review:" in fell["decision"] and fell["falls_after_failed_reviews"] == 1
    climbed = explain(warehouses, "icbc_buffers", "climber", "2025-04")
    assert climbed["reason"] == "upgrade" and climbed["decision"].startswith("Upgraded from four-star to five-star")
    stays = explain(warehouses, "icbc_buffers", "climber", "2025-05")
    assert stays["reason"] == "meets" and stays["decision"].startswith("Stays five-star")


def test_floor_from_held_gold_card(warehouses):
    e = explain(warehouses, "icbc_floors_caps", "gold-card", "2025-08")
    assert (e["reason"], e["computed_tier_name"], e["earned_tier_name"]) == ("upgrade", "three-star", "five-star")
    # The snapshot records the floor tier; the rule file says which products give it.
    assert e["floor"] == {"tier": 5, "products": ["credit_card_gold", "elite_club_account"]}
    assert "through a credit_card_gold or elite_club_account floor" in e["decision"] and e["warnings"] == []
    assert "Floor: 5 (a held credit_card_gold or elite_club_account)" in render_text(e)


def test_cap_from_loan_loss(warehouses):
    e = explain(warehouses, "icbc_floors_caps", "defaulted", "2025-07")
    assert (e["reason"], e["tier_name"], e["computed_tier_name"]) == ("credit_cap", "quasi-star", "six-star")
    assert e["cap"] == {"capped": True, "cap_tier": 1,
                        "events": ["loan_loss", "quasi_credit_overdraft_12m", "credit_card_default_11m"]}
    assert e["decision"].startswith("Capped at quasi-star by an active credit event "
                                    "(loan_loss, quasi_credit_overdraft_12m or credit_card_default_11m)")
    assert "Cap: capped at 1 (an active loan_loss, " in render_text(e)


def test_initial_with_capped_settlement(warehouses):
    e = explain(warehouses, "icbc_money", "remitter", "2025-06")
    assert e["reason"] == "initial" and e["previous_tier"] is None
    assert e["decision"].startswith("First evaluation at three-star")
    settlement = figure(e, "settlement")
    assert (settlement["value"], settlement["points"]) == ("10500.05", "210.00")
    assert settlement["rate"] == "200 per 10,000 CNY"
    assert "capped at 5,000.00" in settlement["basis"] and settlement["codes"] == ["remote_cash", "remittance"]
    text = render_text(e)
    assert "10,500.05 CNY  counted amount over 2025-01..2025-06" in text and "= 210.00 points" in text
    assert "[" not in text  # plain text, no rich markup


def test_card_spending_meets_the_any_of_band(warehouses):
    e = explain(warehouses, "boc_tracks", "spender", "2025-08")
    assert e["points"] is None and e["reason"] == "meets" and e["tier_name"] == "wealth"
    wealth = band(e, "wealth")
    assert wealth["status"] == "earned" and wealth["rule"].startswith("any of:")
    met = {c["measure"]: c["met"] for group in wealth["groups"] for c in group}
    assert met == {"financial_assets": False, "normal_loans": False, "card_spending": True}
    assert figure(e, "card_spending")["value"] == "108000.00"
    assert "card spending 108,000.00 CNY >= 100,000" in e["decision"]
    assert "rate" not in figure(e, "card_spending")
    # boc_vip has no caps nor floors: "no active credit event" would suggest it might have had one.
    text = render_text(e)
    assert "Cap: none (the program has no caps)" in text and "Floor: none (the program has no floors)" in text


def test_cut_points_follow_the_computed_tier(warehouses):
    # 0.00005 points show as 0.00: the exact value is above 0, so quasi-star's condition is met.
    sliver = explain(warehouses, "icbc_thresholds", "one-cent", "2025-06")
    [[condition]] = band(sliver, "quasi-star")["groups"]
    assert sliver["points"] == "0.00" and condition["met"] is True and band(sliver, "quasi-star")["status"] == "earned"
    under = explain(warehouses, "icbc_thresholds", "under-2000", "2025-06")
    assert under["next_band_up"]["gap"] == "1,999.99 points, 0.01 short of 2,000 for five-star"


# -- errors, warnings and what is read --------------------------------------------------------------

def test_errors_name_what_is_missing(warehouses, tmp_path):
    money = warehouses["icbc_money"]
    with pytest.raises(TiersError, match=r"^icbc_star has no snapshot for 2025-07 .*published months: 2025-06\)$"):
        explain_customer(money, "remitter", Month.parse("2025-07"), "icbc_star")
    with pytest.raises(TiersError, match="'nobody-here' is not in the icbc_star snapshot for 2025-06"):
        explain_customer(money, "nobody-here", Month.parse("2025-06"))
    with pytest.raises(TiersError) as empty:
        explain_customer(tmp_path / "none", "remitter", Month.parse("2025-06"))
    assert str(empty.value) == f"no snapshot of any program for 2025-06 in {tmp_path / 'none'}"
    # Without --program: every program published for the month.
    assert [e["program"] for e in explain_customer(money, "remitter", Month.parse("2025-06"))] == ["icbc_star"]


def test_never_opens_the_warehouse_database(warehouses, tmp_path):
    # Without the database the explanation is the same; with it held by a writer, explain still works.
    copy = tmp_path / "warehouse"
    shutil.copytree(warehouses["icbc_floors_caps"], copy, ignore=shutil.ignore_patterns("tiers.duckdb*", "tiers.lock"))
    assert not (copy / "tiers.duckdb").exists()
    [alone] = explain_customer(copy, "gold-card", Month.parse("2025-08"), "icbc_star")
    assert alone == explain(warehouses, "icbc_floors_caps", "gold-card", "2025-08")
    assert not (copy / "tiers.duckdb").exists() and alone["warnings"] == []


def test_works_while_a_writer_holds_the_database(warehouses):
    # A writing connection in this process: a reader that opened the file would be refused (or block).
    writer = duckdb.connect(str(warehouses["icbc_money"] / "tiers.duckdb"))
    try:
        [e] = explain_customer(warehouses["icbc_money"], "remitter", Month.parse("2025-06"), "icbc_star")
    finally:
        writer.close()
    assert e["reason"] == "initial" and e["warnings"] == []


def test_warns_when_the_rule_file_changed(warehouses, tmp_path):
    copy = tmp_path / "warehouse"
    shutil.copytree(warehouses["icbc_money"], copy, ignore=shutil.ignore_patterns("tiers.lock"))
    edited = tmp_path / "icbc_star.yaml"
    edited.write_text((RULES_DIR / "icbc_star.yaml").read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    manifest = copy / "manifests" / "program=icbc_star" / "as_of=2025-06-30" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "rules_file": str(edited)}))
    [e] = explain_customer(copy, "remitter", Month.parse("2025-06"), "icbc_star")
    assert e["current_rules_version"] != e["rules_version"]
    [warning] = e["warnings"]
    assert str(edited) in warning and e["rules_version"] in warning and e["current_rules_version"] in warning
    assert f"Warning: {warning}" in render_text(e)


# -- through the installed command -----------------------------------------------------------------

def test_cli_json_has_the_same_decision(warehouses, tiers_cli):
    done = tiers_cli("explain", "recovers", "--month", "2025-06", "--format", "json",
                     "--warehouse", str(warehouses["icbc_buffers"]), check=True)
    [shown] = json.loads(done.stdout)
    assert shown == explain(warehouses, "icbc_buffers", "recovers", "2025-06")
    text = tiers_cli("explain", "recovers", "--month", "2025-06", "--warehouse", str(warehouses["icbc_buffers"]),
                     check=True)
    assert f"Decision: {shown['decision']}" in text.stdout


def test_cli_unknown_customer_is_one_plain_line(warehouses, tiers_cli):
    done = tiers_cli("explain", "nobody-here", "--month", "2025-06", "--warehouse", str(warehouses["icbc_money"]))
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("error: customer 'nobody-here' is not in the icbc_star snapshot for 2025-06")


# -- what a program has at all, and points cut part by part (hand-written snapshots, no run) ---------------

SNAPSHOT_TYPES = {
    "customer_id": "VARCHAR", "points": "DECIMAL(18,2)", "computed_tier": "INTEGER", "floor_tier": "INTEGER",
    "capped": "BOOLEAN", "previous_tier": "INTEGER", "tier": "INTEGER", "tier_name": "VARCHAR", "reason": "VARCHAR",
    "failed_reviews": "INTEGER", "buffer_since": "DATE", "at_risk": "BOOLEAN", "next_review": "DATE",
    "effective_from": "DATE", "rules_version": "VARCHAR",
}


def write_snapshot(warehouse: Path, rule_file: Path, month: str, **values) -> None:
    """One customer's snapshot row for the program of ``rule_file``: every figure 0.00 unless given."""
    from rules.loader import load_program
    from stores import snapshots
    from stores.warehouse import Warehouse

    loaded = load_program(rule_file)
    row = {"customer_id": "c1", "points": None, "floor_tier": None, "capped": False, "previous_tier": None,
           "reason": "initial", "failed_reviews": 0, "buffer_since": None, "at_risk": False,
           "next_review": "2025-12-31", "effective_from": "2025-07-05", "rules_version": loaded.version}
    types = dict(SNAPSHOT_TYPES)
    for name in loaded.rules.figures:
        row[f"fig_{name}"], types[f"fig_{name}"] = "0.00", "DECIMAL(18,2)"
        if loaded.rules.points and name in loaded.rules.points.rates:
            row[f"pts_{name}"], types[f"pts_{name}"] = "0.00", "DECIMAL(18,2)"
    row.update(values)
    path = snapshots.snapshot_path(Warehouse(warehouse), loaded.name, Month.parse(month))
    path.parent.mkdir(parents=True)
    with duckdb.connect() as con:
        con.execute("CREATE TABLE snapshot AS SELECT " + ", ".join(f"${c}::{types[c]} AS {c}" for c in row), row)
        con.execute(f"COPY snapshot TO '{path}' (FORMAT parquet)")


def test_a_program_without_points_floors_or_caps_says_so(tmp_path):
    write_snapshot(tmp_path, RULES_DIR / "boc_vip.yaml", "2025-06", computed_tier=0, tier=0, tier_name="ordinary",
                   fig_financial_assets="1500.00")

    [e] = explain_customer(tmp_path, "c1", Month.parse("2025-06"), "boc_vip")

    assert e["program_has"] == {"points": False, "floors": False, "caps": False}
    assert e["figure_points_sum"] is None and e["warnings"] == []
    text = render_text(e)
    assert "Floor: none (the program has no floors)" in text
    assert "Cap: none (the program has no caps)" in text
    assert "no points: the program's bands compare these figures" in text
    assert "no active credit event" not in text and "no floor product held" not in text


def test_points_cut_part_by_part_are_shown_against_the_total(tmp_path):
    # 0.336 + 0.336 points: each part cuts to 0.33, the total 0.672 to 0.67.
    write_snapshot(tmp_path, RULES_DIR / "icbc_star.yaml", "2025-06", points="0.67", computed_tier=1, tier=1,
                   tier_name="quasi-star", fig_short_term_assets="24.89", pts_short_term_assets="0.33",
                   fig_long_term_assets="33.60", pts_long_term_assets="0.33")

    [e] = explain_customer(tmp_path, "c1", Month.parse("2025-06"), "icbc_star")

    assert (e["points"], e["figure_points_sum"]) == ("0.67", "0.66")
    text = render_text(e)
    assert ("0.67 points (cut to the cent once; the points above, each cut to the cent, add up to 0.66, "
            "0.01 less)") in text
    # icbc_star has floors and caps: their absence is the customer's, worded as before.
    assert "Floor: none (no floor product held)" in text and "Cap: not capped (no active credit event)" in text


def test_points_that_add_up_need_no_note(tmp_path):
    write_snapshot(tmp_path, RULES_DIR / "icbc_star.yaml", "2025-06", points="0.66", computed_tier=1, tier=1,
                   tier_name="quasi-star", pts_short_term_assets="0.33", pts_long_term_assets="0.33")
    [e] = explain_customer(tmp_path, "c1", Month.parse("2025-06"), "icbc_star")
    assert "0.66 points (cut to the cent)\n" in render_text(e) + "\n"


def test_the_rule_file_comes_from_the_rules_folder_in_force(tmp_path, monkeypatch):
    folder = tmp_path / "bank [1] rules"
    folder.mkdir()
    rule_file = folder / "acme_star.yaml"
    rule_file.write_text((RULES_DIR / "icbc_star.yaml").read_text(encoding="utf-8")
                         .replace("program: icbc_star", "program: acme_star"), encoding="utf-8")
    warehouse = tmp_path / "warehouse"
    write_snapshot(warehouse, rule_file, "2025-06", computed_tier=0, tier=0, tier_name="unrated")  # no manifest
    monkeypatch.setenv("TIERS_RULES_DIR", str(folder))

    [e] = explain_customer(warehouse, "c1", Month.parse("2025-06"), "acme_star")

    assert e["rules_file"] == str(rule_file) and e["warnings"] == []


def test_every_reason_the_evaluation_writes_has_its_own_sentence():
    """Explain tells each reason of rules/states.py in its own words, never the catch-all sentence."""
    from interfaces.explain import _decision
    from rules.states import REASONS

    explanation = {"tier_name": "four-star", "previous_tier_name": "five-star", "as_of": "2025-06-30",
                   "next_review": "2025-12-31", "earned_tier": 4, "computed_tier": 4, "earned_tier_name": "four-star",
                   "computed_tier_name": "four-star", "figures_summary": "1,000.00 points", "floor": {"products": []},
                   "failed_reviews": 1, "buffer_since": "2025-06-30", "falls_after_failed_reviews": 2,
                   "falls_at_next_failed_review": True, "cap": {"events": ["loan_overdue_90d"]}}
    for reason in REASONS:
        sentence = _decision({**explanation, "reason": reason})
        assert not sentence.startswith(f"four-star ({reason})"), sentence
