"""``automlm-eval``: evaluate one model (or BM25) on a benchmark folder, print a markdown table, optionally write JSON.

Usage::

    automlm-build-benchmark chatterbot --output data/chatterbot-qa      # the data first (docs/DATASETS.md)
    automlm-eval --model outputs/automlm/final --data data/chatterbot-qa --output results/automlm.json
    automlm-eval --model bm25 --data data/debian-reference --cross-lingual-corpus en    # BM25: the `eval` extra
"""

from __future__ import annotations

import logging
from pathlib import Path

from training import cli

from .evaluate import evaluate_model
from .metrics import DEFAULT_K_VALUES
from .report import results_table, write_results

logger = logging.getLogger(__name__)

PROG = "automlm-eval"


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-eval``."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description="Retrieval evaluation on BEIR-layout folders: nDCG@10, MRR@10 and Recall@k, per language and "
        "macro-averaged.",
        example=f"{PROG} --model outputs/automlm-default/final --data data/chatterbot-qa --output results/a.json",
    )
    parser.add_argument("--model", required=True, help='a sentence-transformers folder or name, or "bm25"')
    parser.add_argument("--data", required=True, type=Path, help="a BEIR folder or a folder of per-language ones")
    parser.add_argument("--output", type=Path, help="write all numbers (and per-query metrics) to this JSON file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, help="truncate inputs to this many tokens")
    parser.add_argument(
        "--cross-lingual-corpus",
        metavar="LANG",
        help="run every other language's queries against this language's corpus (ids shared across languages)",
    )
    parser.add_argument("--languages", nargs="+", help="evaluate only these language folders")
    parser.add_argument("--k-values", nargs="+", type=int, default=list(DEFAULT_K_VALUES), help="Recall@k cutoffs")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--query-prompt", help="text before every query (default: the model's own `query` prompt; '' for none)"
    )
    parser.add_argument(
        "--document-prompt", help="text before every document (default: the model's own `document` prompt)"
    )
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser


@cli.entry_point(PROG, user_errors=(ImportError,))  # BM25 without the `eval` extra: the error names the install
def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-eval``; bad input ends it with one line that names the problem and the fix (exit 1)."""
    args = build_parser().parse_args(argv)
    if args.output is not None:
        cli.output_file(args.output, "--output")
    results = evaluate_model(
        args.model,
        args.data,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        cross_lingual=args.cross_lingual_corpus,
        languages=args.languages,
        k_values=args.k_values,
        device=args.device,
        show_progress_bar=not args.no_progress_bar,
        query_prompt=args.query_prompt,
        document_prompt=args.document_prompt,
    )
    if args.output is not None:
        write_results(results, args.output)
        logger.info("Wrote %s", args.output)
    print(results_table(results))


if __name__ == "__main__":
    main()
