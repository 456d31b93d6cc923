"""CLI commands about schedules and run history: `crontab import`, `history`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the htd-pipelines parser."""
