"""Paired bootstrap confidence interval of the difference between two systems evaluated on the same queries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .metrics import PerQuery


def _strata(per_query: Mapping[str, Any]) -> dict[str, PerQuery]:
    # {lang: {qid: {metric: v}}} (the JSON's per_query) or {qid: {metric: v}} (one language).
    first = next(iter(per_query.values()), None)
    if isinstance(first, Mapping) and first and all(isinstance(v, Mapping) for v in first.values()):
        return {str(lang): dict(queries) for lang, queries in per_query.items()}
    return {"": dict(per_query)}


def paired_bootstrap(
    per_query_a: Mapping[str, Any],
    per_query_b: Mapping[str, Any],
    metric: str,
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Paired bootstrap confidence interval of the difference A - B of a metric over the same queries.

    Takes the ``per_query`` of two `evaluation.evaluate.evaluate` results, either whole (``{lang: {query id:
    {metric: v}}}``) or one language (``{query id: {metric: v}}``). With several languages, queries are resampled
    within each language and the statistic is the macro average (mean over languages of the mean difference),
    matching ``"macro"``.

    Args:
        per_query_a: per-query metrics of system A.
        per_query_b: per-query metrics of system B, on the same queries.
        metric: e.g. ``"ndcg@10"``.
        n: bootstrap resamples.
        seed: seed of the resampling.
        confidence: width of the percentile interval.

    Returns:
        (observed difference, lower bound, upper bound).

    Raises:
        ValueError: when the two sides do not cover the same languages and queries, or lack `metric`.
    """
    strata_a, strata_b = _strata(per_query_a), _strata(per_query_b)
    if set(strata_a) != set(strata_b):
        raise ValueError(f"The two results cover different languages: {sorted(strata_a)} vs {sorted(strata_b)}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")
    rng = np.random.default_rng(seed)
    observed, resampled = [], []
    for lang in sorted(strata_a):
        a, b = strata_a[lang], strata_b[lang]
        if set(a) != set(b):
            raise ValueError(
                f"Paired bootstrap needs the same queries on both sides; language {lang!r} differs in "
                f"{len(set(a) ^ set(b))} query ids. Evaluate both systems on the same data."
            )
        if not a:
            raise ValueError(f"Language {lang!r} has no queries.")
        try:
            diffs = np.array([a[q][metric] - b[q][metric] for q in sorted(a)], dtype=np.float64)
        except KeyError as err:
            raise ValueError(f"No metric {metric!r} in the per-query results (language {lang!r}).") from err
        observed.append(diffs.mean())
        samples = rng.integers(0, len(diffs), size=(n, len(diffs)))
        resampled.append(diffs[samples].mean(axis=1))  # (n,)
    statistic = np.mean(resampled, axis=0)  # (n,) macro average of each resample
    alpha = (1 - confidence) / 2
    low, high = np.quantile(statistic, [alpha, 1 - alpha])
    return float(np.mean(observed)), float(low), float(high)
