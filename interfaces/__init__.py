"""What people use: the ``tiers`` command (``cli``) and the readers of published snapshots
(``explain``, ``report``, ``html_report``, ``sql_shell``). The top layer: nothing imports it.
"""
