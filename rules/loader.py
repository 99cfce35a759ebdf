"""Load rule files: YAML -> validated ``Program``, checked against the code vocabularies, fingerprinted."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rules.schema import BalanceFigure, Program, TransactionFigure
from ground.errors import RuleError

# The shipped programs, and the code vocabularies: those describe the landing data (data-contract.md),
# so they stay with the code whichever rules folder is in force.
SHIPPED_RULES_DIR = Path(__file__).resolve().parent
VOCABULARIES_FILE = SHIPPED_RULES_DIR / "vocabularies.yaml"
# The customer-equity settings (rules/equity.py) sit beside the programs, as a bank's folder may too.
EQUITY_SETTINGS_FILE = SHIPPED_RULES_DIR / "equity.yaml"
# The .yaml files of a rules folder that are not programs: program discovery skips them, here only.
NOT_PROGRAMS = frozenset({VOCABULARIES_FILE.name, EQUITY_SETTINGS_FILE.name})
# A bank's own rule folder. `tiers --rules-dir DIR` sets it for the process, so the run's tasks (same
# process, or Dask workers it starts) read the same folder; a deployment or a remote worker sets it itself.
RULES_DIR_VARIABLE = "TIERS_RULES_DIR"
# The folder in force when this module was imported (modules that imported the name keep this value).
RULES_DIR = Path(os.environ.get(RULES_DIR_VARIABLE) or SHIPPED_RULES_DIR)


def default_rules_dir() -> Path:
    """The rules folder in force: TIERS_RULES_DIR as it is now, else RULES_DIR (which a test may patch)."""
    configured = os.environ.get(RULES_DIR_VARIABLE)
    return Path(configured) if configured else RULES_DIR


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


MAX_DEPTH = 20  # the shipped files nest 5 levels; anything near this is a mistake or an attack


class _Refused(Exception):
    """Something the YAML library would accept but a rule file may not say."""

    def __init__(self, key: str, line: int | None, message: str):
        super().__init__(message)
        self.key, self.line, self.message = key, line, message


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: a repeated key, an anchor or alias (a "billion laughs" expands
    exponentially when validated), a merge key or nesting deeper than MAX_DEPTH is refused, naming
    the key; and a float is read as the Decimal it spells, never through a binary float."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._keys: list[str] = []  # the key path of the node being composed, as written
        self._depth = 0

    def compose_node(self, parent, index):
        if isinstance(parent, yaml.MappingNode) and index is not None:
            self._keys.append(index.value if isinstance(index, yaml.ScalarNode) else "?")
        elif isinstance(parent, yaml.SequenceNode):
            self._keys.append(str(index))
        else:
            self._keys.append("")  # the document itself, or a mapping's key
        try:
            event = self.peek_event()
            where = ".".join(key for key in self._keys if key)
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _Refused(where, event.start_mark.line + 1,
                               "anchors and aliases (&name, *name) are not allowed in a rule file")
            nests = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
            self._depth += nests
            if self._depth > MAX_DEPTH:
                raise _Refused(where, event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= nests
            node.key_path = where
            return node
        finally:
            self._keys.pop()

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key_path = ".".join(part for part in (node.key_path, str(key_node.value)) if part)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(key_path, key_node.start_mark.line + 1, "merge keys (<<) are not allowed in a rule file")
            key = self.construct_object(key_node, deep=True)
            try:
                # By its text too: 7 and "7" become the same key once pydantic reads the mapping.
                first = seen.setdefault(str(key) if isinstance(key, (int, str)) else key, key_node)
            except TypeError:
                continue  # an unhashable key: PyYAML reports it below
            if first is not key_node:
                lines = sorted({first.start_mark.line + 1, key_node.start_mark.line + 1})
                where = f"lines {lines[0]} and {lines[1]}" if len(lines) == 2 else f"line {lines[0]}"
                raise _Refused(key_path, None, f"the key is given twice ({where})")
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):
        # 0.1 must stay 0.1, not 0.1000000000000000055511151231257827: read the digits as written.
        text = self.construct_scalar(node).replace("_", "").lower()
        if ":" in text:
            raise _Refused(node.key_path, node.start_mark.line + 1,
                           f"write {text!r} as a plain decimal number (base 60 is not taken)")
        try:
            return Decimal(text.replace(".inf", "infinity").replace(".nan", "nan"))
        except InvalidOperation:  # pragma: no cover - the resolver only tags float-shaped text
            raise _Refused(node.key_path, node.start_mark.line + 1, f"{text!r} is not a number") from None


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RuleError(f"{path}: no such rule file") from None
    except OSError as error:
        raise RuleError(f"{path}: cannot read the rule file ({error.strerror or error})") from None


def _parse_yaml(path: Path, data: bytes) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise RuleError(f"{path}: not UTF-8 text: byte {error.start} (0x{data[error.start]:02x}, line {line}) "
                        "is not valid UTF-8; save the file as UTF-8") from None
    loader = None
    try:
        loader = _StrictLoader(text)  # checks every character is one YAML allows
        return loader.get_single_data()
    except _Refused as refused:
        where = f"{refused.key}: " if refused.key else ""
        line = f" (line {refused.line})" if refused.line else ""
        raise RuleError(f"{path}: {where}{refused.message}{line}") from None
    except yaml.reader.ReaderError as error:  # its own text spans two lines
        line = text.count("\n", 0, error.position) + 1
        raise RuleError(f"{path} line {line}: not valid YAML (character #x{error.character:04x} is not allowed)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RuleError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_yaml(path: Path) -> object:
    return _parse_yaml(path, _read_bytes(path))


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
    shown = str(got) if isinstance(got, Decimal) else repr(got)  # 0.125, not Decimal('0.125')
    got_text = f", got {shown}" if not isinstance(got, (dict, list)) and got is not None else ""
    more = len(errors) - 1
    where = f"{key}: " if key else ""
    return RuleError(f"{path}: {where}{message}{got_text}" + (f" (and {more} more problems)" if more else ""))


def load_settings(path: Path, model: type[BaseModel]) -> BaseModel:
    """A settings file read as strictly as a rule file (no repeated key, decimals as written) and
    validated by ``model``; an error names the file and the key."""
    raw = _read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise _first_validation_error(path, error, raw) from None


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
            unknown(f"figures.{name}.minus_product_codes", figure.minus_product_codes, vocab.balance_product_codes)
            unknown(f"figures.{name}.risk_classes", figure.risk_classes or [], vocab.risk_classes)
        elif isinstance(figure, TransactionFigure):
            unknown(f"figures.{name}.txn_types", figure.txn_types, vocab.txn_types)
    unknown("floors", list(program.floors), vocab.held_product_codes)
    if program.caps:
        unknown("caps.events", program.caps.events, vocab.credit_event_codes)


def load_program(path: Path, vocab: Vocabularies | None = None) -> LoadedProgram:
    path = Path(path)
    data = _read_bytes(path)
    raw = _parse_yaml(path, data)
    if not isinstance(raw, dict):
        raise RuleError(f"{path}: expected a mapping of program settings at the top level")
    try:
        program = Program.model_validate(raw)
    except ValidationError as error:
        raise _first_validation_error(path, error, raw) from None
    _check_codes(path, program, vocab or load_vocabularies())
    # The fingerprint covers the bytes of the rule file (the ones just parsed): any edit gives a new rules_version.
    version = "sha256:" + hashlib.sha256(data).hexdigest()[:16]
    loaded = LoadedProgram(rules=program, path=path, version=version)
    from rules.compile import check_exact  # compile imports this module

    check_exact(loaded)  # so rules check, not a month-end run, finds rates too fine for int64 arithmetic
    return loaded


def program_files(rules_dir: Path | None = None) -> list[Path]:
    # Looked up at call time, so TIERS_RULES_DIR (or a test) can point the whole project at another folder.
    folder = Path(default_rules_dir() if rules_dir is None else rules_dir)
    if not folder.is_dir():
        raise RuleError(f"{folder}: no such rules folder")
    # Listed, not globbed: nothing about the folder's name (rules[1], 规则 *) is ever read as a pattern.
    return sorted(p for p in folder.iterdir() if p.suffix == ".yaml" and p.name not in NOT_PROGRAMS)


def load_programs(names: list[str] | None = None, rules_dir: Path | None = None) -> list[LoadedProgram]:
    """Every program in ``rules_dir`` (or the named ones, in the order given). Only the named programs'
    files are read, so another program's broken file does not stop them; with no names, every file
    must be valid."""
    folder = Path(default_rules_dir() if rules_dir is None else rules_dir)
    vocab = load_vocabularies()
    files = {path.stem: path for path in program_files(folder)}
    if names:
        missing = [name for name in names if name not in files]
        if missing:
            raise RuleError(f"no program {missing[0]!r} in {folder} (programs: {', '.join(sorted(files))})")
        paths = [files[name] for name in names]
    else:
        paths = list(files.values())
    loaded = []
    for path in paths:
        program = load_program(path, vocab)
        if program.name != path.stem:
            raise RuleError(f"{path}: program: {program.name!r} must match the file name {path.stem!r}")
        loaded.append(program)
    return loaded


def load_valid_programs(rules_dir: Path | None = None) -> list[LoadedProgram]:
    """Every program in ``rules_dir`` whose file is valid, skipping broken ones: what ingestion sums the
    transactions for. A run checks the programs it evaluates strictly (``load_programs``); a broken file
    of another program must not stop it, and once fixed it changes the sums' fingerprint, so the months
    it needs are read again."""
    loaded = []
    for path in program_files(rules_dir):
        try:
            [program] = load_programs([path.stem], rules_dir)
        except RuleError:
            continue
        loaded.append(program)
    return loaded
