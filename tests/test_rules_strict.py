"""Issue 11 point 9: rule files are strict.

Duplicate keys, a threshold written as text, a number beyond DECIMAL(18,2), deep nesting or aliases,
a file that is not UTF-8, and a band that a higher band always shadows are ``RuleError``s naming the
file and the key as written; ``tiers rules check`` prints them as one plain line. A broken rule file
of one program does not stop loading (or running) another one named with ``--program``.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

import rules.loader
from rules.loader import RULES_DIR, load_program, load_programs
from ground.errors import RuleError

GOLDEN = Path(__file__).resolve().parent / "golden"
SHIPPED = ("boc_vip", "bohai_wealth", "cgb_card_star", "icbc_star", "private_banking_8m", "private_banking_cbrc",
           "private_banking_ubs")


def edited(base: str, *edits: tuple[str, str]) -> str:
    """A shipped rule file's text with each ``old`` (which must occur exactly once) replaced by ``new``."""
    text = (RULES_DIR / f"{base}.yaml").read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {base}.yaml"
        text = text.replace(old, new)
    return text


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(RuleError) as raised:
        load_program(path)
    message = str(raised.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


# -- each kind of problem names the file and the key --------------------------------------------------

BOHAI_PLATINUM = "all_of: [{measure: financial_assets, at_least: 500000}]"

CASES = {
    # name: (base file, edits, key named, a word of the explanation)
    "duplicate_key_once_read_as_a_number": (
        "bohai_wealth", [("failed_reviews_to_fall: {4: 6}", 'failed_reviews_to_fall: {4: 6, "4": 2}')],
        "calendar.failed_reviews_to_fall.4: ", "twice"),
    "two_tiers_of_one_name": (
        "bohai_wealth", [("name: gold, label", "name: platinum, label")], "tiers: ", "own name"),
    "duplicate_top_level_key": (
        "bohai_wealth", [("title: Bohai", "program: bohai_wealth\ntitle: Bohai")], "program: ", "twice"),
    "duplicate_nested_key": (
        "bohai_wealth", [(BOHAI_PLATINUM, "all_of: [{measure: financial_assets, at_least: 500000, at_least: 5}]")],
        "tiers.2.all_of.0.at_least: ", "twice"),
    "duplicate_figure_name": (
        "boc_vip", [("  normal_loans:\n", "  financial_assets:\n")], "figures.financial_assets: ", "twice"),
    "threshold_as_text": (
        "bohai_wealth", [(BOHAI_PLATINUM, 'all_of: [{measure: financial_assets, at_least: "500000"}]')],
        "tiers.2.all_of.0.at_least: ", "not text"),
    "rate_as_text": (
        "icbc_star", [("short_term_assets: 135", 'short_term_assets: "135"')],
        "points.rates.short_term_assets: ", "not text"),
    "threshold_with_three_decimals": (
        "bohai_wealth", [(BOHAI_PLATINUM, "all_of: [{measure: financial_assets, at_least: 500000.001}]")],
        "tiers.2.all_of.0.at_least: ", "2 decimal places"),
    "threshold_of_ten_to_the_16": (
        "bohai_wealth", [(BOHAI_PLATINUM, "all_of: [{measure: financial_assets, at_least: 10000000000000000}]")],
        "tiers.2.all_of.0.at_least: ", "16 digits"),
    "infinite_threshold": (
        "bohai_wealth", [(BOHAI_PLATINUM, "all_of: [{measure: financial_assets, at_least: .inf}]")],
        "tiers.2.all_of.0.at_least: ", "finite"),
    "rate_with_seven_decimals": (
        "icbc_star", [("short_term_assets: 135", "short_term_assets: 1.3500001")],
        "points.rates.short_term_assets: ", "6 decimal places"),
    "rates_too_fine_for_int64": (
        "icbc_star", [("per_amount: 10000", "per_amount: 1234.567891"), ("short_term_assets: 135", "short_term_assets: 1.000003")],
        "points: ", "64-bit"),
    "cap_beyond_decimal_18_2": (
        "icbc_star", [('cap_per_transaction: "5000.00"', 'cap_per_transaction: "12345678901234567"')],
        "figures.settlement.cap_per_transaction: ", "16 digits"),
    "failed_reviews_beyond_32_bits": (
        "bohai_wealth", [("{4: 6}", "{4: 99999999999}")], "calendar.failed_reviews_to_fall: ", "at most 1200"),
    "deep_nesting": (
        "bohai_wealth", [("title: Bohai Bank wealth tiers (interpretation)", "title: " + "[" * 30 + "]" * 30)],
        "title.0.0.0.0", "deeper than 20"),
    "anchor_and_alias": (
        "boc_vip", [("product_codes: [mortgage,", "product_codes: &loans [mortgage,"),
                    ("reviews: every_month_end", "reviews: *loans")],
        "figures.normal_loans.product_codes: ", "aliases"),
    "merge_key": (
        "bohai_wealth", [("calendar:\n", "calendar:\n  <<: {effective_day: 9}\n")], "calendar.<<: ", "merge"),
    "higher_tier_with_a_lower_threshold": (
        "bohai_wealth", [("at_least: 2000000}", "at_least: 400000}")], "tiers.2.all_of.0.at_least: ",
        "tier 2 (platinum) can never be reached"),
    "higher_tier_with_an_equal_threshold": (
        "bohai_wealth", [("at_least: 2000000}", "at_least: 500000}")], "tiers.2.all_of.0.at_least: ",
        "tier 2 (platinum) can never be reached"),
    "track_under_a_higher_tier": (
        "boc_vip", [("{measure: financial_assets, at_least: 200000}", "{measure: financial_assets, at_least: 1000000}")],
        "tiers.2.any_of.0.at_least: ", "tier 1 (wealth) can never be reached this way"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_strictness_problem_names_the_file_and_the_key(tmp_path, case):
    base, edits, key, words = CASES[case]
    path = write(tmp_path, f"{base}.yaml", edited(base, *edits))
    message = refused(path)
    assert f"{path}: {key}" in message, message
    assert words in message, message


def test_the_billion_laughs_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = write(tmp_path, "laughs.yaml", "\n".join(lines) + "\n")
    message = refused(path)
    assert f"{path}: a: anchors and aliases" in message, message


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path):
    text = edited("bohai_wealth").encode("utf-8")
    offset = text.index(b"Bohai Bank wealth tiers (interpretation)")
    path = write(tmp_path, "bohai_wealth.yaml", text[:offset] + "Café ".encode("latin-1") + text[offset:])
    message = refused(path)
    assert f"byte {offset + 3} (0xe9, line 5)" in message, message
    assert "not UTF-8" in message, message


def test_a_quoted_threshold_is_refused_but_the_shipped_quoted_amounts_still_load(tmp_path):
    # The shipped files quote their money amounts of figures ("5000.00"); those stay accepted.
    loaded = load_program(RULES_DIR / "icbc_star.yaml")
    assert loaded.rules.figures["settlement"].cap_per_transaction == Decimal("5000.00")
    path = write(tmp_path, "icbc_star.yaml", edited("icbc_star", ("at_least: 80000}", 'at_least: "80000"}')))
    assert "tiers.0.all_of.0.at_least: must be a number" in refused(path)


def test_yaml_floats_are_read_as_the_decimals_they_spell(tmp_path):
    path = write(tmp_path, "bohai_wealth.yaml", edited(
        "bohai_wealth",
        ("at_least: 6000000}", "at_least: 1234567890123456.78}"),  # a float would give ...456.8
        ("at_least: 50000}", "at_least: 0.1}"),
    ))
    bands = load_program(path).rules.tiers
    assert str(bands[0].all_of[0].at_least) == "1234567890123456.78"
    assert str(bands[3].all_of[0].at_least) == "0.1"


# -- what stays valid ---------------------------------------------------------------------------------

def test_the_shipped_rule_files_pass_every_strict_check():
    assert [p.name for p in load_programs()] == list(SHIPPED)


def test_bands_told_apart_by_another_condition_are_reachable(tmp_path):
    # cgb_card_star's shape (programs.md section 5): every star asks the same score, higher stars ask
    # more of other figures; and an upper bound on a lower band shadows nothing above it.
    figures = (
        "figures:\n"
        "  financial_assets:\n"
        "    source: balances\n"
        "    basis: average_daily\n"
        "    product_codes: [demand_deposit]\n"
        "  loans:\n"
        "    source: balances\n"
        "    basis: month_end\n"
        "    product_codes: [mortgage]\n"
    )
    tiers = (
        "tiers:\n"
        "  - {tier: 3, name: a, all_of: [{measure: loans, at_least: 550}, {measure: financial_assets, above: 50000}]}\n"
        "  - {tier: 2, name: b, all_of: [{measure: loans, at_least: 550}, {measure: financial_assets, above: 10000}]}\n"
        "  - {tier: 1, name: c, any_of: [{measure: loans, at_least: 550}, {measure: financial_assets, at_most: 0}]}\n"
        "  - {tier: 0, name: d}\n"
    )
    text = edited("bohai_wealth", (_section("bohai_wealth", "figures"), figures), (_section("bohai_wealth", "tiers"), tiers),
                  ("failed_reviews_to_fall: {4: 6}", "failed_reviews_to_fall: {}"))
    loaded = load_program(write(tmp_path, "bohai_wealth.yaml", text))
    assert [band.tier for band in loaded.rules.tiers] == [3, 2, 1, 0]

    # ... but a band asking only what a higher one asks, no more, is refused
    shadowed = text.replace("{tier: 2, name: b, all_of: [{measure: loans, at_least: 550}, {measure: financial_assets, above: 10000}]}",
                            "{tier: 2, name: b, all_of: [{measure: loans, at_least: 600}, {measure: financial_assets, above: 50000}]}")
    message = refused(write(tmp_path / "shadowed", "bohai_wealth.yaml", shadowed))
    assert "tiers.1.all_of: tier 2 (b) can never be reached" in message, message
    assert "tier 3 (a) already does (tiers.0.all_of:" in message, message


def _section(base: str, key: str) -> str:
    """The top-level ``key:`` block of a shipped rule file, up to the next top-level key."""
    import re

    text = (RULES_DIR / f"{base}.yaml").read_text(encoding="utf-8")
    match = re.search(rf"^{key}:\n(?:(?:[ #].*)?\n)*", text, flags=re.MULTILINE)
    assert match, key
    return match.group(0)


def test_a_rules_folder_with_pattern_characters_and_cjk_in_its_name_loads(tmp_path):
    folder = tmp_path / "规则 [2025] *? x"
    folder.mkdir()
    for name in SHIPPED:
        shutil.copy(RULES_DIR / f"{name}.yaml", folder)
    loaded = load_programs(rules_dir=folder)
    assert [p.path for p in loaded] == [folder / f"{name}.yaml" for name in SHIPPED]
    assert [p.name for p in load_programs(["icbc_star"], rules_dir=folder)] == ["icbc_star"]


# -- one program's broken file does not stop another ------------------------------------------------

def broken_rules_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    for name in SHIPPED:
        write(folder, f"{name}.yaml", (RULES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    write(folder, "acme_bank.yaml", edited("bohai_wealth", ("program: bohai_wealth", "program: acme_bank"),
                                           ("title: Bohai", "title: twice\ntitle: Bohai")))
    return folder


def test_load_programs_reads_only_the_named_programs_files(tmp_path):
    folder = broken_rules_folder(tmp_path)
    assert [p.name for p in load_programs(["icbc_star", "boc_vip"], rules_dir=folder)] == ["icbc_star", "boc_vip"]
    with pytest.raises(RuleError) as raised:  # without names, every file must be valid
        load_programs(rules_dir=folder)
    assert f"{folder / 'acme_bank.yaml'}: title: the key is given twice" in str(raised.value)
    with pytest.raises(RuleError) as raised:  # an unknown name is still an error listing the programs
        load_programs(["nope"], rules_dir=folder)
    assert "no program 'nope'" in str(raised.value) and "acme_bank, boc_vip" in str(raised.value)


def test_a_broken_rule_file_does_not_stop_a_run_of_another_named_program(prefect_harness, tmp_path, monkeypatch):
    from flows.runs import backfill

    monkeypatch.setattr(rules.loader, "RULES_DIR", broken_rules_folder(tmp_path))
    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN / "icbc_thresholds" / "landing", landing)

    result = backfill.fn(str(landing), "2025-06", "2025-06", str(tmp_path / "warehouse"), ["icbc_star"])

    assert [(e.program, e.month) for e in result["evaluated"]] == [("icbc_star", "2025-06")]


# -- through the installed command ------------------------------------------------------------------

@pytest.mark.parametrize("case", ["duplicate_nested_key", "threshold_as_text", "higher_tier_with_a_lower_threshold"])
def test_rules_check_prints_one_plain_line(tiers_cli, tmp_path, case):
    base, edits, key, words = CASES[case]
    path = write(tmp_path / "我的 rules [1]", f"{base}.yaml", edited(base, *edits))

    done = tiers_cli("rules", "check", str(path))

    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {path}: {key}") and words in lines[0], lines[0]


def test_rules_check_of_a_file_that_is_not_utf8(tiers_cli, tmp_path):
    path = write(tmp_path, "boc_vip.yaml", b"program: boc_vip\ntitle: \xff\xfe\n")

    done = tiers_cli("rules", "check", str(path))

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: not UTF-8 text: byte 24 (0xff, line 2) is not valid UTF-8; save the file as UTF-8"]


def test_a_control_character_is_one_plain_line_with_its_line(tmp_path):
    text = edited("bohai_wealth", ("title: Bohai", "title: \x07Bohai"))
    path = write(tmp_path, "bohai_wealth.yaml", text)
    with pytest.raises(RuleError) as raised:
        load_program(path)
    assert str(raised.value) == f"{path} line 5: not valid YAML (character #x0007 is not allowed)"
