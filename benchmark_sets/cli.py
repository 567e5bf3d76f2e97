"""``automlm-build-benchmark``: build one benchmark set in BEIR layout (see ``docs/DATASETS.md``).

Usage::

    automlm-build-benchmark chatterbot --output data/chatterbot-qa
    automlm-build-benchmark debian-reference --output data/debian-reference
    automlm-build-benchmark libreoffice-help --output data/libreoffice-help --languages de fr ja
"""

from __future__ import annotations

import json
from pathlib import Path

from training import cli

from .chatterbot import CHATTERBOT_EVAL_FRACTION, CHATTERBOT_MIN_PAIRS, build_chatterbot
from .debian_reference import DEBIAN_REFERENCE
from .libreoffice_help import LIBREOFFICE_HELP
from .translated_docs import MIN_QUERIES, build_translated_docs

DOC_SOURCES = {source.name: source for source in (DEBIAN_REFERENCE, LIBREOFFICE_HELP)}
PROG = "automlm-build-benchmark"


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-build-benchmark``: one subcommand per source."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description="Build a multilingual retrieval benchmark in BEIR layout from data the project can get offline.",
        example=f"{PROG} chatterbot --output data/chatterbot-qa",
    )
    commands = parser.add_subparsers(dest="source", required=True)
    chatterbot = commands.add_parser(
        "chatterbot",
        help="question -> answer sets from chatterbot-corpus",
        example=f"{PROG} chatterbot --output data/chatterbot-qa",
    )
    chatterbot.add_argument("--output", required=True, type=Path, help="target folder")
    chatterbot.add_argument(
        "--data-dir", type=Path, help="the corpus' data folder (default: the installed chatterbot-corpus package's)"
    )
    chatterbot.add_argument("--min-pairs", type=int, default=CHATTERBOT_MIN_PAIRS, help="smallest language kept")
    chatterbot.add_argument(
        "--eval-fraction", type=float, default=CHATTERBOT_EVAL_FRACTION, help="held-out share of the questions"
    )
    for source in DOC_SOURCES.values():
        command = commands.add_parser(
            source.name,
            help=f"title -> text sets from the {source.name} packages",
            example=f"{PROG} {source.name} --output data/{source.name}",
        )
        command.add_argument("--output", required=True, type=Path, help="target folder")
        command.add_argument(
            "--languages", nargs="+", choices=sorted(source.packages), help="default: all (English is always added)"
        )
        command.add_argument("--work-dir", type=Path, help="keep the unpacked packages here for the next run")
        command.add_argument("--eval-fraction", type=float, default=source.eval_fraction, help="held-out share")
        command.add_argument("--min-queries", type=int, default=MIN_QUERIES, help="smallest language kept")
    return parser


@cli.entry_point(PROG)
def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-build-benchmark``; print the counts per language as JSON, or one line naming what went wrong."""
    args = build_parser().parse_args(argv)
    cli.output_folder(args.output, "--output")
    if args.source == "chatterbot":
        counts = build_chatterbot(
            args.output, min_pairs=args.min_pairs, data_dir=args.data_dir, eval_fraction=args.eval_fraction
        )
    else:
        if args.work_dir is not None:
            cli.output_folder(args.work_dir, "--work-dir")
        counts = build_translated_docs(
            DOC_SOURCES[args.source],
            args.output,
            args.languages,
            work_dir=args.work_dir,
            eval_fraction=args.eval_fraction,
            min_queries=args.min_queries,
        )
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
