"""Reproducible benchmarks: each runs its peers side by side in one run and reports ratios.

Run everything with `make bench` (or `python -m benchmarks`); see benchmarks/README.md.
"""
