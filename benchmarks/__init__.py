"""Benchmark scripts (run as ``python benchmarks/<name>.py``; a package so that they can share helpers)."""
