"""Retrieval metrics: nDCG@10, MRR@10 and Recall@k per query, computed by `ir-measures` (trec_eval's definitions).

- nDCG@10: ``sum(rel_i / log2(i + 1))`` over ranks ``i = 1..10`` (linear gain, graded relevance from the qrels),
  divided by the same sum for the ideal ranking of the query's judged documents.
- MRR@10: ``1 / rank`` of the first relevant document (score > 0) in the top 10, else 0.
- Recall@k: relevant documents in the top k / all relevant documents of the query.

Only qrels scores > 0 count (a document judged 0 or below is not relevant and adds no gain). The ranking is ours:
documents reach trec_eval with strictly decreasing scores, so its own tie-breaking (by document id) never applies
and ties stay ranked by corpus order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures
import numpy as np

NDCG_CUTOFF = 10
MRR_CUTOFF = 10
DEFAULT_K_VALUES = (1, 10, 100)

PerQuery = dict[str, dict[str, float]]


def measures(k_values: Sequence[int] = DEFAULT_K_VALUES) -> dict[str, ir_measures.Measure]:
    """Our metric keys for `k_values`, in display order -> the `ir-measures` measures that compute them."""
    return {
        f"ndcg@{NDCG_CUTOFF}": ir_measures.nDCG @ NDCG_CUTOFF,
        f"mrr@{MRR_CUTOFF}": ir_measures.RR @ MRR_CUTOFF,
        **{f"recall@{k}": ir_measures.R @ k for k in sorted(set(k_values))},
    }


def metric_names(k_values: Sequence[int] = DEFAULT_K_VALUES) -> list[str]:
    """The metric keys of `score_rankings` for `k_values`, in display order."""
    return list(measures(k_values))


def search_depth(k_values: Sequence[int]) -> int:
    """How many documents a ranking must hold for every metric: ``max(10, *k_values)``.

    Raises:
        ValueError: when a cutoff is not a positive integer.
    """
    if not k_values or any(k < 1 for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {list(k_values)}.")
    return max(NDCG_CUTOFF, MRR_CUTOFF, *k_values)


def score_rankings(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> PerQuery:
    """Per-query metrics of ready-made rankings.

    Args:
        rankings: query id -> retrieved document ids, best first (at least `search_depth` of them when the corpus
            has that many).
        qrels: query id -> {document id: relevance}; only scores > 0 count as relevant.
        k_values: Recall@k cutoffs.

    Returns:
        query id -> ``{"ndcg@10": ..., "mrr@10": ..., "recall@<k>": ...}``, for every query of `rankings` (0 for a
        query without a relevant document).
    """
    by_name = measures(k_values)
    name_of = {measure: name for name, measure in by_name.items()}
    relevant = {qid: {doc_id: score for doc_id, score in qrels.get(qid, {}).items() if score > 0} for qid in rankings}
    relevant = {qid: docs for qid, docs in relevant.items() if docs}
    # Strictly decreasing scores: trec_eval sorts a run by score and breaks ties by document id, which would undo the
    # corpus-order tie-breaking of the ranking.
    run = {
        qid: {doc_id: float(len(ranking) - rank) for rank, doc_id in enumerate(ranking)}
        for qid, ranking in rankings.items()
        if ranking
    }
    per_query = {qid: dict.fromkeys(by_name, 0.0) for qid in rankings}  # trec_eval skips the queries it cannot score
    if relevant and run:
        for metric in ir_measures.iter_calc(list(by_name.values()), relevant, run):
            per_query[metric.query_id][name_of[metric.measure]] = float(metric.value)
    return per_query


def aggregate(per_query: PerQuery, num_documents: int) -> dict[str, float]:
    """Average per-query metrics; adds ``num_queries`` and ``num_documents``.

    Raises:
        ValueError: when there is no query.
    """
    if not per_query:
        raise ValueError("No query to evaluate: the qrels give no query a relevant document (score > 0).")
    names = list(next(iter(per_query.values())))
    result: dict[str, float] = {name: float(np.mean([m[name] for m in per_query.values()])) for name in names}
    return result | {"num_queries": len(per_query), "num_documents": num_documents}
