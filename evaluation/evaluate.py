"""Evaluate any retriever (dense or BM25) on BEIR folders, per language and macro-averaged.

Queries without any relevant document in the qrels are not evaluated (they have nothing to find). Search is
exhaustive; ties are ranked by corpus order. Nothing is special-cased: a document whose text equals the query
competes like any other.

Cross-lingual: ``cross_lingual="en"`` runs the queries and qrels of every other language against the corpus of the
``en`` folder. It needs document ids shared by the translations, as the documentation sets of `benchmark_sets`
have; a qrels id missing from the pivot corpus is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Qrels, beir_file, check_qrels, load_corpus, load_qrels, load_queries, qrels_path, select_languages
from .metrics import DEFAULT_K_VALUES, PerQuery, aggregate, metric_names, score_rankings, search_depth
from .retrievers import BM25Retriever, DenseRetriever, Retriever, SearchIndex

logger = logging.getLogger(__name__)


def _evaluable_queries(queries: Mapping[str, str], qrels: Qrels) -> list[str]:
    evaluable = [qid for qid in queries if any(score > 0 for score in qrels.get(qid, {}).values())]
    if len(evaluable) < len(queries):
        skipped = len(queries) - len(evaluable)
        logger.info("%d of %d queries have no relevant document and are not evaluated", skipped, len(queries))
    return evaluable


def search_and_score(
    index: SearchIndex,
    doc_ids: Sequence[str],
    queries: Mapping[str, str],
    qrels: Qrels,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> PerQuery:
    """Per-query metrics of the queries with a relevant document, searched in `index` (built over `doc_ids`)."""
    query_ids = _evaluable_queries(queries, qrels)
    indices = index.search([queries[q] for q in query_ids], search_depth(k_values)).tolist()
    return score_rankings({q: [doc_ids[i] for i in row] for q, row in zip(query_ids, indices)}, qrels, k_values)


def evaluate_retriever(
    retriever: Retriever,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: Qrels,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    per_query: PerQuery | None = None,
) -> dict[str, float]:
    """Evaluate a retriever on one set: nDCG@10, MRR@10 and Recall@k, averaged over queries.

    Args:
        retriever: e.g. `DenseRetriever` or `BM25Retriever`.
        queries: query id -> text.
        corpus: document id -> text; its order breaks ties.
        qrels: query id -> {document id: relevance}; queries with no relevance > 0 are not evaluated.
        k_values: Recall@k cutoffs.
        per_query: when given, filled with each evaluated query's metrics.

    Returns:
        ``{"ndcg@10", "mrr@10", "recall@<k>"...: mean over queries, "num_queries", "num_documents"}``.

    Raises:
        ValueError: when a qrels id is missing from `queries` or `corpus`, or no query has a relevant document.
    """
    check_qrels(qrels, queries, corpus)
    doc_ids = list(corpus)
    scores = search_and_score(retriever.index([corpus[d] for d in doc_ids]), doc_ids, queries, qrels, k_values)
    if per_query is not None:
        per_query.update(scores)
    return aggregate(scores, len(doc_ids))


def evaluate(
    retriever: Retriever,
    data_dir: str | Path,
    *,
    cross_lingual: str | None = None,
    languages: Sequence[str] | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> dict[str, Any]:
    """Evaluate a retriever on every language folder of `data_dir`.

    Args:
        retriever: e.g. `DenseRetriever` or `BM25Retriever`; its ``name`` and ``max_seq_length`` are recorded.
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        cross_lingual: a language folder whose corpus replaces every other language's corpus (e.g. ``"en"``): the
            queries and qrels of language X are run against it; the pivot language itself is not evaluated.
        languages: evaluate only these language folders (default: all).
        k_values: Recall@k cutoffs.

    Returns:
        ``{"model", "dataset", "task", "max_seq_length", "prompts", "per_language", "macro", "per_query"}`` (plus
        ``"corpus_language"`` for a cross-lingual run): see `evaluation.report.write_results`.
    """
    folders, available = select_languages(data_dir, languages, cross_lingual)
    indexes: dict[str, tuple[list[str], dict[str, str], SearchIndex]] = {}
    per_language: dict[str, dict[str, float]] = {}
    per_query: dict[str, PerQuery] = {}
    for lang, folder in folders.items():
        queries = load_queries(beir_file(folder, "queries.jsonl"))
        qrels_file = qrels_path(folder)
        qrels = load_qrels(qrels_file)
        corpus_lang = lang if cross_lingual is None else cross_lingual
        if corpus_lang not in indexes:  # built once, however many query languages search it
            corpus = load_corpus(beir_file(available[corpus_lang], "corpus.jsonl"))
            doc_ids = list(corpus)
            indexes[corpus_lang] = (doc_ids, corpus, retriever.index([corpus[d] for d in doc_ids], corpus_lang))
        doc_ids, corpus, index = indexes[corpus_lang]
        source = str(qrels_file) if cross_lingual is None else f"{qrels_file} against the {cross_lingual!r} corpus"
        check_qrels(qrels, queries, corpus, source=source)
        per_query[lang] = search_and_score(index, doc_ids, queries, qrels, k_values)
        per_language[lang] = aggregate(per_query[lang], len(doc_ids))
        logger.info("%s: %s", lang, {k: round(v, 4) for k, v in per_language[lang].items()})

    names = metric_names(k_values)
    macro = {name: float(np.mean([scores[name] for scores in per_language.values()])) for name in names}
    results: dict[str, Any] = {
        "model": retriever.name,
        "dataset": Path(data_dir).resolve().name,
        "task": "monolingual" if cross_lingual is None else "cross-lingual",
        "max_seq_length": retriever.max_seq_length,
        "prompts": {
            "query": getattr(retriever, "query_prompt", ""),
            "document": getattr(retriever, "document_prompt", ""),
        },
    }
    if cross_lingual is not None:
        results["corpus_language"] = cross_lingual
    return results | {"per_language": per_language, "macro": macro, "per_query": per_query}


def evaluate_encoder(
    encode: Callable[[list[str]], torch.Tensor],
    data_dir: str | Path,
    *,
    model_name: str = "encoder",
    max_seq_length: int | None = None,
    batch_size: int = 64,
    cross_lingual: str | None = None,
    languages: Sequence[str] | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    show_progress_bar: bool = False,
    query_prompt: str = "",
    document_prompt: str = "",
) -> dict[str, Any]:
    """`evaluate` with any embedding function (a `DenseRetriever`), e.g. the trainer's periodic dev evaluation.

    Args:
        encode: maps a list of texts to a ``(len(texts), dim)`` float tensor.
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        model_name: recorded as ``"model"``.
        max_seq_length: the truncation `encode` applies, recorded as ``"max_seq_length"``.
        batch_size: texts per call of `encode`.
        cross_lingual: a language folder whose corpus replaces every other language's corpus (e.g. ``"en"``).
        languages: evaluate only these language folders (default: all).
        k_values: Recall@k cutoffs.
        show_progress_bar: tqdm bars while encoding.
        query_prompt, document_prompt: text put before every query / document (e.g. ``"query: "``).

    Returns:
        The results of `evaluate`.
    """
    retriever = DenseRetriever(
        encode,
        batch_size,
        show_progress_bar,
        name=model_name,
        max_seq_length=max_seq_length,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )
    return evaluate(retriever, data_dir, cross_lingual=cross_lingual, languages=languages, k_values=k_values)


def evaluate_model(
    model: str,
    data_dir: str | Path,
    *,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    cross_lingual: str | None = None,
    languages: Sequence[str] | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    device: str | None = None,
    show_progress_bar: bool = True,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> dict[str, Any]:
    """Evaluate a sentence-transformers model (or ``"bm25"``) on every language folder of `data_dir`.

    Args:
        model: a sentence-transformers folder (ours with its custom code, a plain export, any other), a model name
            in the local cache, or ``"bm25"`` for the lexical baseline.
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        batch_size: texts per encoding batch.
        max_seq_length: truncate inputs to this many tokens (compare models at the same value); ignored by BM25.
        cross_lingual: a language folder whose corpus replaces every other language's corpus (e.g. ``"en"``).
        languages: evaluate only these language folders (default: all).
        k_values: Recall@k cutoffs.
        device: torch device for the model.
        show_progress_bar: tqdm bars while encoding.
        query_prompt, document_prompt: override the model's own ``query`` / ``document`` prompts (``""``: none).

    Returns:
        The results of `evaluate`.
    """
    select_languages(data_dir, languages, cross_lingual)  # fail on a bad data folder before loading the model
    if model == "bm25":
        retriever: Retriever = BM25Retriever()
    else:
        retriever = DenseRetriever.from_model(
            model,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            device=device,
            show_progress_bar=show_progress_bar,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
    return evaluate(retriever, data_dir, cross_lingual=cross_lingual, languages=languages, k_values=k_values)
