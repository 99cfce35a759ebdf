"""Errors a user can act on.

Every failure we anticipate (bad input, a missing month, a busy warehouse) is a ``TiersError`` whose
message is one plain sentence naming the file, the line or month, and what was expected. The CLI
prints it without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class TiersError(Exception):
    """A failure the user can fix; ``str(error)`` is the whole message."""


class InputError(TiersError):
    """The landing folder is missing a file, or a file cannot be read as the contract says."""


class BadRowsError(TiersError):
    """More bad rows than ``--max-bad-rows``: nothing is published."""


class StateError(TiersError):
    """The warehouse's published months do not allow this evaluation (e.g. a missing predecessor)."""


class RuleError(TiersError):
    """A rule file is malformed."""


class WarehouseBusyError(TiersError):
    """Another run holds the warehouse lock."""
