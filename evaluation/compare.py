"""``automlm-bootstrap``: paired bootstrap of two `automlm-eval` results on the same queries, per language and macro.

automlm-bootstrap a.json b.json --metric ndcg@10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .bootstrap import paired_bootstrap
from .report import markdown_table


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


def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-bootstrap``; bad input ends it with one line naming the problem."""
    parser = argparse.ArgumentParser(prog="automlm-bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="results JSON of system A (automlm-eval --output)")
    parser.add_argument("b", type=Path, help="results JSON of system B, on the same queries")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        a, b = (json.loads(path.read_text(encoding="utf-8")) for path in (args.a, args.b))
        rows = compare_results(a, b, args.metric, args.resamples, args.seed)
    except (OSError, ValueError, KeyError) as error:
        parser.exit(2, f"{parser.prog}: error: {error!s}: pass two `automlm-eval --output` files of one data set\n")
    headers = ["language", f"A {args.metric}", f"B {args.metric}", "A - B", "95% CI", "verdict"]
    print(f"A = {a['model']}, B = {b['model']}, paired bootstrap ({args.resamples} resamples, seed {args.seed})\n")
    print(markdown_table(rows, headers))


if __name__ == "__main__":
    main()
