"""tiers: month-end customer tier evaluation.

The stages live in their own top-level packages so the layout shows the architecture:
``transforms`` (landing files -> warehouse tables -> figures, all SQL), ``rules`` (programs as data),
``flows`` (Prefect orchestration) and ``data`` (synthetic data). This package holds what they share:
errors, months, the warehouse and snapshot publishing, and the CLI.
"""

__version__ = "0.1.0"
