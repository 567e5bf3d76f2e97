"""The results of an evaluation: the JSON file (which the model-card generator reads) and a markdown table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write the results of `evaluation.evaluate.evaluate` as JSON.

    The structure: ``{"model", "dataset", "task": "monolingual" | "cross-lingual", "max_seq_length" (null for
    BM25), "per_language": {lang: {metric: value, "num_queries", "num_documents"}}, "macro": {metric: mean over
    languages}, "per_query": {lang: {query id: {metric: value}}}}``, plus ``"corpus_language"`` for a
    cross-lingual run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def markdown_table(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    """The project's markdown table (GitHub style, cells as given: no padding, no re-formatting of numbers).

    Every table the project prints or writes goes through here: evaluation results, benchmark-set READMEs, the
    comparison report, the speed benchmarks.
    """
    return tabulate(
        [[str(cell) for cell in row] for row in rows],
        [str(header) for header in headers],
        tablefmt="github",
        stralign=None,
        numalign=None,
        disable_numparse=True,
    )


def results_table(results: Mapping[str, Any]) -> str:
    """A markdown table of evaluation results: one row per language plus the macro average (in bold)."""
    names = list(results["macro"])
    rows = [
        [lang, *(f"{scores[n]:.4f}" for n in names), scores["num_queries"], scores["num_documents"]]
        for lang, scores in results["per_language"].items()
    ]
    rows.append(["**macro**", *(f"**{results['macro'][n]:.4f}**" for n in names), "", ""])
    return markdown_table(rows, ["language", *names, "queries", "documents"])
