"""Prefect flows: the month-end run and backfills. Thin: they say what runs in which order.

Importing this package sets Prefect's quiet, offline defaults before Prefect itself is imported:
no telemetry, a patient start-up for the temporary local server. A user's own settings win.
"""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
