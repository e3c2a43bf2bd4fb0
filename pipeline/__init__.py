"""Command-line entry points: argument parsing, wiring, progress and exit codes only.

Run them as `python -m pipeline.<stage> --help`. The work itself lives in `components/`.
"""
