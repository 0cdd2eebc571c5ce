"""Admin commands for quota config: ``crmsync quota set|show|history`` and ``crmsync status``."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``quota`` and ``status`` subcommands."""
