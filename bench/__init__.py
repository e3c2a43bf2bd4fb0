"""Benchmarks: each prints a table and writes JSON; never part of `pytest`."""
