"""``automlm-bootstrap``: paired bootstrap of two `automlm-eval` results on the same queries, per language and macro.

automlm-bootstrap a.json b.json --metric ndcg@10
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training import cli

from .bootstrap import paired_bootstrap
from .report import markdown_table

PROG = "automlm-bootstrap"
RESULT_KEYS = ("model", "per_language", "macro", "per_query")
WHAT = "pass two `automlm-eval --output` files of one data set"


def compare_results(a: dict, b: dict, metric: str = "ndcg@10", n: int = 1000, seed: int = 0) -> list[list[str]]:
    """Rows ``[language, A, B, A - B, 95% interval, verdict]`` for every language of `a` and the macro average."""
    rows = []
    for language in [*sorted(a["per_query"]), "macro"]:
        if language == "macro":
            per_a, per_b = a["per_query"], b["per_query"]
            score_a, score_b = a["macro"][metric], b["macro"][metric]
        else:
            per_a, per_b = a["per_query"][language], b["per_query"][language]
            score_a, score_b = a["per_language"][language][metric], b["per_language"][language][metric]
        difference, low, high = paired_bootstrap(per_a, per_b, metric, n=n, seed=seed)
        verdict = "A better" if low > 0 else "B better" if high < 0 else "no significant difference"
        interval = f"[{low:+.3f}, {high:+.3f}]"
        rows.append([language, f"{score_a:.3f}", f"{score_b:.3f}", f"{difference:+.3f}", interval, verdict])
    return rows


def read_results(path: Path) -> dict[str, Any]:
    """Read one ``automlm-eval --output`` file.

    Raises:
        FileNotFoundError, IsADirectoryError: `path` is not a file.
        ValueError: it is not valid JSON, or not a results file; the message names the path.
    """
    text = cli.existing_file(path, "each results argument").read_text(encoding="utf-8")
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}); {WHAT}.") from None
    missing = [key for key in RESULT_KEYS if key not in results] if isinstance(results, dict) else list(RESULT_KEYS)
    if missing:
        raise ValueError(f"{path} is not an automlm-eval results file (no {', '.join(missing)}); {WHAT}.")
    return results


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-bootstrap``."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        example=f"{PROG} results/automlm.json results/bm25.json --metric ndcg@10",
    )
    parser.add_argument("a", type=Path, help="results JSON of system A (automlm-eval --output)")
    parser.add_argument("b", type=Path, help="results JSON of system B, on the same queries")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser


@cli.entry_point(PROG)
def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-bootstrap``; bad input ends it with one line naming the problem (exit 1)."""
    args = build_parser().parse_args(argv)
    a, b = read_results(args.a), read_results(args.b)
    try:
        rows = compare_results(a, b, args.metric, args.resamples, args.seed)
    except KeyError as error:
        raise ValueError(
            f"{args.a} and {args.b} do not match: no {error} in both; {WHAT}, and a --metric they hold."
        ) from None
    headers = ["language", f"A {args.metric}", f"B {args.metric}", "A - B", "95% CI", "verdict"]
    print(f"A = {a['model']}, B = {b['model']}, paired bootstrap ({args.resamples} resamples, seed {args.seed})\n")
    print(markdown_table(rows, headers))


if __name__ == "__main__":
    main()
