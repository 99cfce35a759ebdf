"""Where state lives: the warehouse folder and its lock (``warehouse``), published snapshots with
their manifests, journal and staging (``snapshots``), and the run log (``run_log``).

Stands on ``ground`` only; the pipeline's tables and SQL are ``transforms``'.
"""
