"""Aggregation across seeds now lives in :mod:`phenomlab.store.aggregate` (report and cli use it without
importing the sweep layer); these names are kept for existing imports."""

from ..store.aggregate import aggregate, bootstrap_ci, group_key, run_scalars, to_frame

__all__ = ["aggregate", "bootstrap_ci", "group_key", "run_scalars", "to_frame"]
