"""Leaves every package imports (registry, config schema, tasks, checkpoint format, atomic files, metrics, events,
thresholds, runtime): nothing here imports another package of the project."""
