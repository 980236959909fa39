"""Command-line entry points: ``openarmature-nodes probe ...``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from openarmature_nodes.cli.probe import add_probe_arguments, run_probe_command

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="openarmature-nodes")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser(
        "probe",
        help="check that an OpenAI-compatible endpoint is reachable, authorised, loaded and warm",
        description=(
            "Run ready() against an OpenAI-compatible server (GET /v1/models) and, with "
            "--warm-up, one one-token completion. Prints a verdict per step with timings; "
            "exits 0 when every step passed, 1 with the error category otherwise."
        ),
    )
    add_probe_arguments(probe)
    args = parser.parse_args(list(argv))
    return run_probe_command(args)
