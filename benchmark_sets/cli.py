"""``automlm-build-benchmark``: build one benchmark set in BEIR layout (see ``docs/DATASETS.md``).

Usage::

    automlm-build-benchmark chatterbot --output data/chatterbot-qa
    automlm-build-benchmark debian-reference --output data/debian-reference
    automlm-build-benchmark libreoffice-help --output data/libreoffice-help --languages de fr ja
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .chatterbot import CHATTERBOT_EVAL_FRACTION, CHATTERBOT_MIN_PAIRS, build_chatterbot
from .debian_reference import DEBIAN_REFERENCE
from .libreoffice_help import LIBREOFFICE_HELP
from .translated_docs import MIN_QUERIES, build_translated_docs

DOC_SOURCES = {source.name: source for source in (DEBIAN_REFERENCE, LIBREOFFICE_HELP)}


def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-build-benchmark``; print the counts per language as JSON, or one line naming what went wrong."""
    parser = argparse.ArgumentParser(
        prog="automlm-build-benchmark",
        description="Build a multilingual retrieval benchmark in BEIR layout from data the project can get offline.",
    )
    commands = parser.add_subparsers(dest="source", required=True)
    chatterbot = commands.add_parser("chatterbot", help="question -> answer sets from chatterbot-corpus")
    chatterbot.add_argument("--output", required=True, type=Path, help="target folder")
    chatterbot.add_argument("--min-pairs", type=int, default=CHATTERBOT_MIN_PAIRS, help="smallest language kept")
    chatterbot.add_argument(
        "--eval-fraction", type=float, default=CHATTERBOT_EVAL_FRACTION, help="held-out share of the questions"
    )
    for source in DOC_SOURCES.values():
        command = commands.add_parser(source.name, help=f"title -> text sets from the {source.name} packages")
        command.add_argument("--output", required=True, type=Path, help="target folder")
        command.add_argument(
            "--languages", nargs="+", choices=sorted(source.packages), help="default: all (English is always added)"
        )
        command.add_argument("--work-dir", type=Path, help="keep the unpacked packages here for the next run")
        command.add_argument("--eval-fraction", type=float, default=source.eval_fraction, help="held-out share")
        command.add_argument("--min-queries", type=int, default=MIN_QUERIES, help="smallest language kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.source == "chatterbot":
            counts = build_chatterbot(args.output, min_pairs=args.min_pairs, eval_fraction=args.eval_fraction)
        else:
            counts = build_translated_docs(
                DOC_SOURCES[args.source],
                args.output,
                args.languages,
                work_dir=args.work_dir,
                eval_fraction=args.eval_fraction,
                min_queries=args.min_queries,
            )
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
