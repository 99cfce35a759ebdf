"""The ground every layer stands on: months, errors, literal paths, checksums, progress notes.

Imports nothing of this project. The layers above, in order: ``rules`` / ``stores`` / ``data``,
``transforms``, ``flows``, ``interfaces`` (pyproject.toml's import-linter contract).
"""
