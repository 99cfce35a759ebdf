"""Load rule files: YAML -> validated ``Program``, checked against the code vocabularies, fingerprinted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rules.schema import BalanceFigure, Program, TransactionFigure
from tiers.errors import RuleError

RULES_DIR = Path(__file__).resolve().parent
VOCABULARIES_FILE = RULES_DIR / "vocabularies.yaml"


class Vocabularies(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    balance_product_codes: list[str]
    txn_types: list[str]
    held_product_codes: list[str]
    credit_event_codes: list[str]
    risk_classes: list[str]

    @field_validator("risk_classes")
    @classmethod
    def _holds_the_default(cls, classes: list[str]) -> list[str]:
        # A balance row without risk_class is "normal" (data-contract.md), so the class must exist.
        if "normal" not in classes:
            raise ValueError("must include normal, the class of a balance row that gives none")
        return classes


@dataclass(frozen=True)
class LoadedProgram:
    """A validated program with where it came from and the fingerprint stamped on its snapshots."""

    rules: Program
    path: Path
    version: str

    @property
    def name(self) -> str:
        return self.rules.program


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuleError(f"{path}: no such rule file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RuleError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None


def _written_parts(raw: object, detail: dict) -> list[str]:
    """pydantic's error location with its union tags ("balances", "literal[...]") left out: follow the
    location through the file's own data and keep only the keys that are really there (and, for a
    missing key, the key that should have been)."""
    parts, node = [], raw
    location = detail["loc"]
    for index, part in enumerate(location):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif index == len(location) - 1 and detail["type"] == "missing":
            pass
        else:
            continue  # a tag pydantic added, not a key of the file
        parts.append(str(part))
    return parts


def _first_validation_error(path: Path, error: ValidationError, raw: object) -> RuleError:
    # A union reports one error per member; the one that reaches deepest into the file is the one meant.
    errors = error.errors()
    detail = max(errors, key=lambda d: len(_written_parts(raw, d)))
    key = ".".join(_written_parts(raw, detail))
    message = detail["msg"].removeprefix("Value error, ")
    got = detail.get("input")
    got_text = f", got {got!r}" if not isinstance(got, (dict, list)) and got is not None else ""
    more = len(errors) - 1
    where = f"{key}: " if key else ""
    return RuleError(f"{path}: {where}{message}{got_text}" + (f" (and {more} more problems)" if more else ""))


def load_vocabularies(path: Path = VOCABULARIES_FILE) -> Vocabularies:
    raw = _read_yaml(path)
    try:
        return Vocabularies.model_validate(raw)
    except ValidationError as error:
        raise _first_validation_error(path, error, raw) from None


def _check_codes(path: Path, program: Program, vocab: Vocabularies) -> None:
    def unknown(key: str, codes: list[str], allowed: list[str]) -> None:
        outside = [code for code in codes if code not in allowed]
        if outside:
            raise RuleError(f"{path}: {key}: {outside} are not in the vocabulary ({', '.join(allowed)})")

    for name, figure in program.figures.items():
        if isinstance(figure, BalanceFigure):
            unknown(f"figures.{name}.product_codes", figure.product_codes, vocab.balance_product_codes)
            unknown(f"figures.{name}.risk_classes", figure.risk_classes or [], vocab.risk_classes)
        elif isinstance(figure, TransactionFigure):
            unknown(f"figures.{name}.txn_types", figure.txn_types, vocab.txn_types)
    unknown("floors", list(program.floors), vocab.held_product_codes)
    if program.caps:
        unknown("caps.events", program.caps.events, vocab.credit_event_codes)


def load_program(path: Path, vocab: Vocabularies | None = None) -> LoadedProgram:
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise RuleError(f"{path}: expected a mapping of program settings at the top level")
    try:
        program = Program.model_validate(raw)
    except ValidationError as error:
        raise _first_validation_error(path, error, raw) from None
    _check_codes(path, program, vocab or load_vocabularies())
    # The fingerprint covers the bytes of the rule file: any edit gives a new rules_version.
    version = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return LoadedProgram(rules=program, path=path, version=version)


def program_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    return sorted(p for p in Path(rules_dir).glob("*.yaml") if p.name != VOCABULARIES_FILE.name)


def load_programs(names: list[str] | None = None, rules_dir: Path = RULES_DIR) -> list[LoadedProgram]:
    """Every program in ``rules_dir`` (or the named ones, in the order given)."""
    vocab = load_vocabularies()
    programs = {}
    for path in program_files(rules_dir):
        loaded = load_program(path, vocab)
        if loaded.name != path.stem:
            raise RuleError(f"{path}: program: {loaded.name!r} must match the file name {path.stem!r}")
        programs[loaded.name] = loaded
    if not names:
        return list(programs.values())
    missing = [name for name in names if name not in programs]
    if missing:
        raise RuleError(f"no program {missing[0]!r} in {rules_dir} (programs: {', '.join(sorted(programs))})")
    return [programs[name] for name in names]
