"""Programs as data: one YAML rule file per bank scheme, validated into a ``Program`` and compiled into
small rule tables that the evaluation SQL joins against (so a new bank is a new file, not new SQL)."""

from rules.loader import RULES_DIR, Vocabularies, load_program, load_programs, load_vocabularies
from rules.schema import Program

__all__ = ["RULES_DIR", "Program", "Vocabularies", "load_program", "load_programs", "load_vocabularies"]
