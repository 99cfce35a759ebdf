"""Prefect flows: the month-end run, backfills and what-if. Thin: they say what runs in which order.

Importing this package changes nothing: the ``tiers`` command sets Prefect's quiet, offline
defaults (interfaces/cli.py) before it imports a flow.
"""
