"""``fieldhub bench ingest`` (being written)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=10_000)


async def main(args: argparse.Namespace) -> int:
    raise SystemExit("not yet")
