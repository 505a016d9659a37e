"""Benchmarks run with `python -m pytest benchmarks --benchmark-only`; GPU ones skip without a GPU."""
