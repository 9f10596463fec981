"""Helpers for the analysis tests."""

from __future__ import annotations

import argparse


def run_cli(argv: list[str]) -> int:
    """Run an ``analysis.commands`` subcommand the way ``deepbehavior`` would; returns its exit code."""
    from analysis.commands import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
