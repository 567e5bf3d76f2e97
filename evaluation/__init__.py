"""Retrieval evaluation on BEIR-layout folders: dense or BM25 search, nDCG@10, MRR@10 and Recall@k per language.

- `evaluation.data`: reading (and writing) BEIR folders: ``queries.jsonl``, ``corpus.jsonl``, ``qrels.tsv``.
- `evaluation.retrievers`: the `Retriever` interface, exact dense search (`DenseRetriever`) and BM25
  (`BM25Retriever`, needs the ``eval`` extra).
- `evaluation.metrics`: per-query metrics from `ir-measures` (trec_eval's definitions) and their averages.
- `evaluation.evaluate`: one function that evaluates any retriever on a folder of languages (`evaluate`), and the
  shortcuts `evaluate_model` (a model folder or ``"bm25"``) and `evaluate_encoder` (any embedding function).
- `evaluation.bootstrap`: the paired bootstrap of a difference between two systems.
- `evaluation.report`: the results JSON and its markdown table.
- `evaluation.cli`: ``automlm-eval``.

Nothing here imports `training` but `training.cli`, the standard-library frame every console script runs in: the
trainer imports this package for its dev metric, not the other way round.
"""
