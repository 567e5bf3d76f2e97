"""Retrieval evaluation on BEIR-layout folders: nDCG@10, MRR@10 and Recall@k, per language and macro-averaged.

One folder per language under the data folder (a data folder that is itself a BEIR folder is one language), each
holding ``queries.jsonl`` (``_id``, ``text``), ``corpus.jsonl`` (``_id``, optional ``title``, ``text``) and
``qrels.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line; BEIR's ``qrels/test.tsv`` is accepted too).

Metrics (the definitions of trec_eval, pytrec_eval and BEIR):

- nDCG@10: ``sum(rel_i / log2(i + 1))`` over ranks ``i = 1..10`` (linear gain, graded relevance from the qrels),
  divided by the same sum for the ideal ranking of the query's judged documents.
- MRR@10: ``1 / rank`` of the first relevant document (score > 0) in the top 10, else 0.
- Recall@k: relevant documents in the top k / all relevant documents of the query.

Queries without any relevant document in the qrels are not evaluated (they have nothing to find). Search is exact
(cosine similarity over the whole corpus); ties are ranked by corpus order. Nothing is special-cased: a document
whose text equals the query competes like any other.

Cross-lingual: ``cross_lingual="en"`` (``--cross-lingual-corpus en``) runs the queries and qrels of every other
language against the corpus of the ``en`` folder. It needs document ids shared by the translations, as the
`training.benchmark_data` documentation sets have; a qrels id missing from the pivot corpus is an error.

Usage::

    automlm-eval --model outputs/automlm --data data/debian-reference --output results/automlm.json
    automlm-eval --model bm25 --data data/debian-reference --cross-lingual-corpus en
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

NDCG_CUTOFF = 10
MRR_CUTOFF = 10
DEFAULT_K_VALUES = (1, 10, 100)
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
# Query rows scored at once against the whole corpus: bounds the (rows, corpus) score matrix to ~64 MB of float32.
_SCORE_ELEMENTS = 2**24

Qrels = dict[str, dict[str, int]]
PerQuery = dict[str, dict[str, float]]


def metric_names(k_values: Sequence[int] = DEFAULT_K_VALUES) -> list[str]:
    """The metric keys `evaluate_retrieval` returns for `k_values`, in display order."""
    return [f"ndcg@{NDCG_CUTOFF}", f"mrr@{MRR_CUTOFF}", *(f"recall@{k}" for k in sorted(set(k_values)))]


# ---------------------------------------------------------------------------------------------------------------------
# Reading BEIR folders
# ---------------------------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_number}: not valid JSON ({err.msg}); each line must be one JSON object."
                ) from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}.")
            yield line_number, record


def _record_field(record: dict[str, Any], key: str, path: Path, line_number: int, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise ValueError(f'{path}, line {line_number}: missing "{key}"; every line needs "_id" and "text".')
        return ""
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids are common in BEIR files; qrels ids are read as strings
    if not isinstance(value, str):
        raise ValueError(f'{path}, line {line_number}: "{key}" must be a string, got {type(value).__name__}.')
    return value


def _load_texts(path: Path, with_title: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line_number, record in _read_jsonl(path):
        doc_id = _record_field(record, "_id", path, line_number)
        text = _record_field(record, "text", path, line_number)
        if with_title:
            title = _record_field(record, "title", path, line_number, required=False)
            # BEIR's convention: the title, when there is one, is read before the text.
            text = f"{title} {text}" if title.strip() else text
        if doc_id in texts:
            raise ValueError(
                f'{path}, line {line_number}: duplicate "_id" {doc_id!r} (first on line {first_line[doc_id]}); '
                "ids must be unique."
            )
        texts[doc_id] = text
        first_line[doc_id] = line_number
    return texts


def load_queries(path: str | Path) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl``: query id -> text.

    Raises:
        ValueError: on a malformed line (named by file and line number) or a duplicate id.
    """
    return _load_texts(Path(path), with_title=False)


def load_corpus(path: str | Path) -> dict[str, str]:
    """Read a BEIR ``corpus.jsonl``: document id -> ``"<title> <text>"`` (just the text when the title is empty).

    Raises:
        ValueError: on a malformed line (named by file and line number) or a duplicate id.
    """
    return _load_texts(Path(path), with_title=True)


def load_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (``query-id``, ``corpus-id``, ``score``; the header line is optional).

    Returns:
        query id -> {document id: relevance}, in file order.

    Raises:
        ValueError: on a malformed line (named by file and line number) or a pair listed twice.
    """
    path = Path(path)
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if line_number == 1 and tuple(field.strip() for field in fields) == QRELS_COLUMNS:
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{path}, line {line_number}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(fields)}: {line!r}."
                )
            query_id, doc_id, score_text = (field.strip() for field in fields)
            try:
                score = float(score_text)
            except ValueError:
                score = math.nan
            if not score.is_integer():
                raise ValueError(f"{path}, line {line_number}: the score must be an integer, got {score_text!r}.")
            docs = qrels.setdefault(query_id, {})
            if doc_id in docs:
                raise ValueError(f"{path}, line {line_number}: the pair ({query_id}, {doc_id}) is listed twice.")
            docs[doc_id] = int(score)
    return qrels


def _qrels_path(folder: Path) -> Path:
    for candidate in (folder / "qrels.tsv", folder / "qrels" / "test.tsv"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No qrels in {folder}: expected qrels.tsv (or BEIR's qrels/test.tsv).")


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a BEIR folder holds queries.jsonl, corpus.jsonl and qrels.tsv.")
    return path


def check_qrels(qrels: Qrels, queries: Mapping[str, str], corpus: Mapping[str, str], source: str = "qrels") -> None:
    """Check that every id of `qrels` exists in `queries` and `corpus`.

    Raises:
        ValueError: naming the first missing ids, how many there are, and the fix.
    """
    missing_queries = [qid for qid in qrels if qid not in queries]
    missing_docs = list(dict.fromkeys(did for docs in qrels.values() for did in docs if did not in corpus))
    if missing_queries:
        raise ValueError(
            f"{source}: {len(missing_queries)} query id(s) not in the queries, e.g. {missing_queries[:5]}. Add them "
            "to queries.jsonl or remove their lines from the qrels."
        )
    if missing_docs:
        raise ValueError(
            f"{source}: {len(missing_docs)} document id(s) not in the corpus, e.g. {missing_docs[:5]}. Add them to "
            "corpus.jsonl or remove their lines from the qrels (for a cross-lingual run: use a corpus whose ids are "
            "shared with the query language's)."
        )


def load_beir(folder: str | Path) -> tuple[dict[str, str], dict[str, str], Qrels]:
    """Read a BEIR folder: ``queries.jsonl``, ``corpus.jsonl`` and ``qrels.tsv`` (or ``qrels/test.tsv``).

    Args:
        folder: the folder.

    Returns:
        queries (id -> text), corpus (id -> ``"<title> <text>"``), qrels (query id -> {document id: relevance}).

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: on a malformed line (named by file and line number), or a qrels id missing from the queries or
            the corpus.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass a BEIR folder (queries.jsonl, corpus.jsonl, qrels).")
    queries = load_queries(_require_file(folder / "queries.jsonl"))
    corpus = load_corpus(_require_file(folder / "corpus.jsonl"))
    qrels_path = _qrels_path(folder)
    qrels = load_qrels(qrels_path)
    check_qrels(qrels, queries, corpus, source=str(qrels_path))
    return queries, corpus, qrels


def find_languages(data_dir: str | Path) -> dict[str, Path]:
    """The BEIR folders of a data folder: its subfolders holding ``queries.jsonl``, or the folder itself.

    Returns:
        Language (folder name) -> folder, sorted by name.

    Raises:
        FileNotFoundError: when there is no BEIR folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a folder: pass a BEIR folder or a folder of BEIR folders.")
    if (data_dir / "queries.jsonl").is_file():
        return {data_dir.resolve().name: data_dir}
    languages = {p.name: p for p in sorted(data_dir.iterdir()) if (p / "queries.jsonl").is_file()}
    if not languages:
        raise FileNotFoundError(
            f"No BEIR folder in {data_dir}: expected queries.jsonl there or in its subfolders (one per language); "
            "build one with `python -m training.benchmark_data`."
        )
    return languages


# ---------------------------------------------------------------------------------------------------------------------
# Ranking and metrics
# ---------------------------------------------------------------------------------------------------------------------


def encode_texts(
    encode: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress_bar: bool = False,
    desc: str = "Encoding",
) -> torch.Tensor:
    """Encode `texts` in batches of similar length (less padding) and L2-normalise the embeddings.

    Args:
        encode: maps a list of texts to a ``(len(texts), dim)`` float tensor.
        texts: the texts.
        batch_size: texts per call of `encode`.
        show_progress_bar: show a tqdm bar over the batches.
        desc: the bar's label.

    Returns:
        ``(len(texts), dim)`` float32 unit vectors (a zero vector stays zero), in the order of `texts`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not show_progress_bar):
        batch = [texts[i] for i in order[start : start + batch_size]]
        embeddings = torch.as_tensor(encode(batch))
        if embeddings.ndim != 2 or embeddings.shape[0] != len(batch):
            raise ValueError(
                f"`encode` must return a (num_texts, dim) tensor; for {len(batch)} texts it returned shape "
                f"{tuple(embeddings.shape)}."
            )
        chunks.append(embeddings.detach().float().cpu())
    if not chunks:
        return torch.empty(0, 0)
    sorted_embeddings = torch.cat(chunks)  # (num_texts, dim), in `order`
    embeddings = torch.empty_like(sorted_embeddings)
    embeddings[torch.tensor(order)] = sorted_embeddings
    return F.normalize(embeddings, dim=-1)


def rank_documents(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """The indices of the `top_k` highest scores of each row, ties broken by column order (a stable sort).

    Args:
        scores: ``(num_queries, num_documents)``.
        top_k: how many to keep (at most ``num_documents``).

    Returns:
        ``(num_queries, min(top_k, num_documents))`` column indices, best first.
    """
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :top_k]


def dense_rankings(query_embeddings: torch.Tensor, doc_embeddings: torch.Tensor, top_k: int) -> torch.Tensor:
    """Exact cosine search: `rank_documents` of the dot products of unit vectors, in chunks of queries.

    Returns:
        ``(num_queries, min(top_k, num_documents))`` document indices, best first.
    """
    rows = max(1, _SCORE_ELEMENTS // max(doc_embeddings.shape[0], 1))
    chunks = [
        rank_documents(query_embeddings[start : start + rows] @ doc_embeddings.T, top_k)
        for start in range(0, query_embeddings.shape[0], rows)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, 0, dtype=torch.long)


def query_metrics(ranking: Sequence[str], relevance: Mapping[str, int], k_values: Sequence[int]) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@k of one query.

    Args:
        ranking: retrieved document ids, best first (at least ``max(10, *k_values)`` of them when the corpus has
            that many).
        relevance: the query's judged documents -> relevance; only scores > 0 count as relevant.
        k_values: recall cutoffs.

    Returns:
        ``{"ndcg@10": ..., "mrr@10": ..., "recall@<k>": ...}``.
    """
    gains = {doc_id: score for doc_id, score in relevance.items() if score > 0}
    dcg = sum(gains.get(doc_id, 0) / math.log2(rank + 1) for rank, doc_id in enumerate(ranking[:NDCG_CUTOFF], 1))
    ideal = sorted(gains.values(), reverse=True)[:NDCG_CUTOFF]
    idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, 1))
    reciprocal_rank = next((1.0 / rank for rank, doc_id in enumerate(ranking[:MRR_CUTOFF], 1) if doc_id in gains), 0.0)
    metrics = {f"ndcg@{NDCG_CUTOFF}": dcg / idcg if idcg > 0 else 0.0, f"mrr@{MRR_CUTOFF}": reciprocal_rank}
    for k in sorted(set(k_values)):
        found = sum(doc_id in gains for doc_id in ranking[:k])
        metrics[f"recall@{k}"] = found / len(gains) if gains else 0.0
    return metrics


def _evaluable_queries(queries: Mapping[str, str], qrels: Qrels) -> list[str]:
    evaluable = [qid for qid in queries if any(score > 0 for score in qrels.get(qid, {}).values())]
    if len(evaluable) < len(queries):
        skipped = len(queries) - len(evaluable)
        logger.info("%d of %d queries have no relevant document and are not evaluated", skipped, len(queries))
    return evaluable


def _top_k(k_values: Sequence[int]) -> int:
    if not k_values or any(k < 1 for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {list(k_values)}.")
    return max(NDCG_CUTOFF, MRR_CUTOFF, *k_values)


def aggregate(per_query: PerQuery, num_documents: int) -> dict[str, float]:
    """Average per-query metrics; adds ``num_queries`` and ``num_documents``."""
    if not per_query:
        raise ValueError("No query to evaluate: the qrels give no query a relevant document (score > 0).")
    names = list(next(iter(per_query.values())))
    result: dict[str, float] = {name: float(np.mean([m[name] for m in per_query.values()])) for name in names}
    return result | {"num_queries": len(per_query), "num_documents": num_documents}


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Qrels, k_values: Sequence[int] = DEFAULT_K_VALUES
) -> PerQuery:
    """Per-query metrics (`query_metrics`) of ready-made rankings: query id -> document ids, best first."""
    return {qid: query_metrics(ranking, qrels.get(qid, {}), k_values) for qid, ranking in rankings.items()}


class DenseIndex:
    """Exact cosine search over the embeddings of a corpus.

    Args:
        encode: maps a list of texts to a ``(len(texts), dim)`` float tensor.
        corpus: the documents' texts, in corpus order (which breaks ties).
        batch_size: texts per call of `encode`.
        show_progress_bar: show tqdm bars while encoding.
        name: label of the bars.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        corpus: Sequence[str],
        batch_size: int = 64,
        show_progress_bar: bool = False,
        name: str = "",
    ):
        self.encode = encode
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.name = name
        self.embeddings = encode_texts(encode, corpus, batch_size, show_progress_bar, f"Corpus {name}".strip())

    def rankings(self, queries: Sequence[str], top_k: int) -> torch.Tensor:
        """``(len(queries), min(top_k, num_documents))`` document indices, best first, ties by corpus order."""
        desc = f"Queries {self.name}".strip()
        query_embeddings = encode_texts(self.encode, queries, self.batch_size, self.show_progress_bar, desc)
        return dense_rankings(query_embeddings, self.embeddings, top_k)


# Scripts written without spaces between words: their runs of letters are cut into character uni- and bigrams.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"


def bm25_tokenize(text: str) -> list[str]:
    """Language-agnostic tokens for BM25, including for scripts without spaces.

    Case-folds, then splits into runs of letters, marks and digits (so Devanagari vowel signs stay inside their
    word, unlike with ``\\w``). Runs in Han, Kana, Thai, Lao, Khmer, Myanmar or Tibetan script, which are written
    without spaces, become their single characters plus their character bigrams (the usual n-gram indexing of CJK
    text, as in Lucene's CJK analyser); every other run is one token. No stemming and no stopword list: BM25's idf
    already discounts frequent words, and neither exists for every language.

    Args:
        text: any text.

    Returns:
        The tokens, in order.
    """
    import regex

    tokens: list[str] = []
    for run in regex.findall(r"[\p{L}\p{M}\p{N}]+", text.casefold()):
        for part in regex.findall(rf"[{_UNSPACED}]+|[^{_UNSPACED}]+", run):
            if regex.match(rf"[{_UNSPACED}]", part):
                tokens += list(part)
                tokens += [part[i : i + 2] for i in range(len(part) - 1)]
            else:
                tokens.append(part)
    return tokens


class BM25Index:
    """BM25 with `bm25s` (Lucene variant, k1 = 1.5, b = 0.75) over `bm25_tokenize` tokens, scoring every document.

    Args:
        corpus: the documents' texts, in corpus order (which breaks ties).
    """

    def __init__(self, corpus: Sequence[str]):
        import bm25s

        self.num_documents = len(corpus)
        self.retriever = bm25s.BM25()
        self.retriever.index([bm25_tokenize(text) for text in corpus], show_progress=False)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """``(len(queries), num_documents)`` BM25 scores; a query with no known token scores 0 everywhere."""
        rows = []
        for text in queries:
            tokens = [t for t in bm25_tokenize(text) if t in self.retriever.vocab_dict]
            rows.append(self.retriever.get_scores(tokens) if tokens else np.zeros(self.num_documents))
        return torch.from_numpy(np.asarray(rows, dtype=np.float32).reshape(len(queries), self.num_documents))

    def rankings(self, queries: Sequence[str], top_k: int) -> torch.Tensor:
        """``(len(queries), min(top_k, num_documents))`` document indices, best first, ties by corpus order."""
        rows = max(1, _SCORE_ELEMENTS // max(self.num_documents, 1))
        chunks = [rank_documents(self.scores(queries[i : i + rows]), top_k) for i in range(0, len(queries), rows)]
        return torch.cat(chunks) if chunks else torch.empty(0, 0, dtype=torch.long)


def evaluate_index(
    index: DenseIndex | BM25Index,
    doc_ids: Sequence[str],
    queries: Mapping[str, str],
    qrels: Qrels,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> PerQuery:
    """Per-query metrics of the queries with a relevant document, searched in `index` (built over `doc_ids`)."""
    query_ids = _evaluable_queries(queries, qrels)
    indices = index.rankings([queries[q] for q in query_ids], _top_k(k_values)).tolist()
    return evaluate_rankings({q: [doc_ids[i] for i in row] for q, row in zip(query_ids, indices)}, qrels, k_values)


def evaluate_retrieval(
    encode: Callable[[list[str]], torch.Tensor],
    queries: dict[str, str],
    corpus: dict[str, str],
    qrels: dict[str, dict[str, int]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    batch_size: int = 64,
    show_progress_bar: bool = False,
    per_query: PerQuery | None = None,
) -> dict[str, float]:
    """Evaluate an embedding function by exact cosine search: nDCG@10, MRR@10 and Recall@k, averaged over queries.

    Args:
        encode: maps a list of texts to a ``(len(texts), dim)`` float tensor (normalised here).
        queries: query id -> text.
        corpus: document id -> text; its order breaks ties.
        qrels: query id -> {document id: relevance}; queries with no relevance > 0 are not evaluated.
        k_values: Recall@k cutoffs.
        batch_size: texts per call of `encode`.
        show_progress_bar: show tqdm bars while encoding.
        per_query: when given, filled with each evaluated query's metrics.

    Returns:
        ``{"ndcg@10", "mrr@10", "recall@<k>"...: mean over queries, "num_queries", "num_documents"}``.

    Raises:
        ValueError: when a qrels id is missing from `queries` or `corpus`, or no query has a relevant document.
    """
    check_qrels(qrels, queries, corpus)
    doc_ids = list(corpus)
    index = DenseIndex(encode, [corpus[d] for d in doc_ids], batch_size, show_progress_bar)
    scores = evaluate_index(index, doc_ids, queries, qrels, k_values)
    if per_query is not None:
        per_query.update(scores)
    return aggregate(scores, len(doc_ids))


def evaluate_bm25(
    queries: dict[str, str],
    corpus: dict[str, str],
    qrels: Qrels,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    per_query: PerQuery | None = None,
) -> dict[str, float]:
    """`evaluate_retrieval` with BM25 (`BM25Index`) in place of an embedding model."""
    check_qrels(qrels, queries, corpus)
    doc_ids = list(corpus)
    scores = evaluate_index(BM25Index([corpus[d] for d in doc_ids]), doc_ids, queries, qrels, k_values)
    if per_query is not None:
        per_query.update(scores)
    return aggregate(scores, len(doc_ids))


# ---------------------------------------------------------------------------------------------------------------------
# Models and data folders
# ---------------------------------------------------------------------------------------------------------------------


def _needs_remote_code(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    if not config.is_file():
        return False
    try:
        return "auto_map" in json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False


def load_sentence_transformer(model: str, max_seq_length: int | None = None, device: str | None = None):
    """Load a sentence-transformers model from a local folder (or a name in the local Hugging Face cache).

    A local folder whose ``config.json`` has an ``auto_map`` ships its own modeling code (e.g. ours): it is loaded
    with ``trust_remote_code=True``, since you chose the folder. Other names load without remote code.

    Args:
        model: a folder or a model name.
        max_seq_length: overrides the model's maximum input length (in tokens).
        device: e.g. ``"cpu"``; default: sentence-transformers' choice.

    Returns:
        The `SentenceTransformer`.
    """
    from sentence_transformers import SentenceTransformer

    path = Path(model)
    trust_remote_code = path.is_dir() and _needs_remote_code(path)
    if not path.is_dir():
        logger.info("%s is not a local folder: loading it by name (offline only from the local cache)", model)
    encoder = SentenceTransformer(model, device=device, trust_remote_code=trust_remote_code)
    if max_seq_length is not None:
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
        encoder.max_seq_length = max_seq_length
    return encoder


def _select_languages(
    data_dir: str | Path, languages: Sequence[str] | None, cross_lingual: str | None
) -> tuple[dict[str, Path], dict[str, Path]]:
    available = find_languages(data_dir)
    folders = dict(available)
    if languages is not None:
        unknown = [lang for lang in languages if lang not in available]
        if unknown:
            raise ValueError(f"No language folder {unknown} in {data_dir}; available: {sorted(available)}.")
        folders = {lang: available[lang] for lang in languages}
    if cross_lingual is not None:
        if cross_lingual not in available:
            raise ValueError(
                f"No folder {cross_lingual!r} in {data_dir} to serve as the cross-lingual corpus; "
                f"available: {sorted(available)}."
            )
        folders = {lang: folder for lang, folder in folders.items() if lang != cross_lingual}
        if not folders:
            raise ValueError(f"Nothing to evaluate cross-lingually: no language besides {cross_lingual!r}.")
    return folders, available


def evaluate_folders(
    make_index: Callable[[list[str], str], DenseIndex | BM25Index],
    data_dir: str | Path,
    *,
    model_name: str,
    max_seq_length: int | None = None,
    cross_lingual: str | None = None,
    languages: Sequence[str] | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> dict[str, Any]:
    """Evaluate a retriever on every language folder of `data_dir`: the engine of `evaluate_model`.

    Args:
        make_index: builds an index (`DenseIndex`, `BM25Index`) from a corpus' texts and its language.
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        model_name: recorded as ``"model"``.
        max_seq_length: recorded as ``"max_seq_length"``.
        cross_lingual: a language folder whose corpus replaces every other language's corpus (e.g. ``"en"``).
        languages: evaluate only these language folders (default: all).
        k_values: Recall@k cutoffs.

    Returns:
        The results structure of `write_results`.
    """
    folders, available = _select_languages(data_dir, languages, cross_lingual)
    indexes: dict[str, tuple[list[str], dict[str, str], DenseIndex | BM25Index]] = {}
    per_language: dict[str, dict[str, float]] = {}
    per_query: dict[str, PerQuery] = {}
    for lang, folder in folders.items():
        queries = load_queries(_require_file(folder / "queries.jsonl"))
        qrels_path = _qrels_path(folder)
        qrels = load_qrels(qrels_path)
        corpus_lang = lang if cross_lingual is None else cross_lingual
        if corpus_lang not in indexes:  # built once, however many query languages search it
            corpus = load_corpus(_require_file(available[corpus_lang] / "corpus.jsonl"))
            doc_ids = list(corpus)
            indexes[corpus_lang] = (doc_ids, corpus, make_index([corpus[d] for d in doc_ids], corpus_lang))
        doc_ids, corpus, index = indexes[corpus_lang]
        source = str(qrels_path) if cross_lingual is None else f"{qrels_path} against the {cross_lingual!r} corpus"
        check_qrels(qrels, queries, corpus, source=source)
        per_query[lang] = evaluate_index(index, doc_ids, queries, qrels, k_values)
        per_language[lang] = aggregate(per_query[lang], len(doc_ids))
        logger.info("%s: %s", lang, {k: round(v, 4) for k, v in per_language[lang].items()})

    names = metric_names(k_values)
    macro = {name: float(np.mean([scores[name] for scores in per_language.values()])) for name in names}
    results: dict[str, Any] = {
        "model": model_name,
        "dataset": Path(data_dir).resolve().name,
        "task": "monolingual" if cross_lingual is None else "cross-lingual",
        "max_seq_length": max_seq_length,
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
) -> dict[str, Any]:
    """`evaluate_model` for any embedding function, e.g. the trainer's periodic dev evaluation.

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

    Returns:
        The results structure of `write_results`.
    """
    return evaluate_folders(
        lambda texts, lang: DenseIndex(encode, texts, batch_size, show_progress_bar, lang),
        data_dir,
        model_name=model_name,
        max_seq_length=max_seq_length,
        cross_lingual=cross_lingual,
        languages=languages,
        k_values=k_values,
    )


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
) -> dict[str, Any]:
    """Evaluate a sentence-transformers model (or ``"bm25"``) on every language folder of `data_dir`.

    Args:
        model: a sentence-transformers folder (ours with its custom code, a plain export, any other), a model name
            in the local cache, or ``"bm25"`` for the lexical baseline.
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        batch_size: texts per encoding batch.
        max_seq_length: truncate inputs to this many tokens (compare models at the same value); ignored by BM25.
        cross_lingual: a language folder whose corpus replaces every other language's corpus (e.g. ``"en"``): the
            queries and qrels of language X are run against it; the pivot language itself is not evaluated.
        languages: evaluate only these language folders (default: all).
        k_values: Recall@k cutoffs.
        device: torch device for the model.
        show_progress_bar: tqdm bars while encoding.

    Returns:
        ``{"model", "dataset", "task", "max_seq_length", "per_language", "macro", "per_query"}`` (plus
        ``"corpus_language"`` for a cross-lingual run): see `write_results`.
    """
    options = {"cross_lingual": cross_lingual, "languages": languages, "k_values": k_values}
    if model == "bm25":
        return evaluate_folders(lambda texts, lang: BM25Index(texts), data_dir, model_name=model, **options)
    _select_languages(data_dir, languages, cross_lingual)  # fail on a bad data folder before loading the model
    encoder = load_sentence_transformer(model, max_seq_length=max_seq_length, device=device)

    def encode(texts: list[str]) -> torch.Tensor:
        return encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)

    return evaluate_encoder(
        encode,
        data_dir,
        model_name=model,
        max_seq_length=encoder.max_seq_length,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        **options,
    )


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write `evaluate_model`'s results as JSON (the model-card generator reads this file).

    The structure: ``{"model", "dataset", "task": "monolingual" | "cross-lingual", "max_seq_length" (null for
    BM25), "per_language": {lang: {metric: value, "num_queries", "num_documents"}}, "macro": {metric: mean over
    languages}, "per_query": {lang: {query id: {metric: value}}}}``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def markdown_table(results: Mapping[str, Any]) -> str:
    """A markdown table of `evaluate_model`'s results: one row per language plus the macro average."""
    per_language = results["per_language"]
    names = list(results["macro"])
    header = ["language", *names, "queries", "documents"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for lang, scores in per_language.items():
        cells = [lang, *(f"{scores[n]:.4f}" for n in names), str(scores["num_queries"]), str(scores["num_documents"])]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**macro**", *(f"**{results['macro'][n]:.4f}**" for n in names), "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------------------------------


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

    Takes the ``per_query`` of two `evaluate_model` results, either whole (``{lang: {query id: {metric: v}}}``) or
    one language (``{query id: {metric: v}}``). With several languages, queries are resampled within each language
    and the statistic is the macro average (mean over languages of the mean difference), matching ``"macro"``.

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


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``automlm-eval``: evaluate one model on a benchmark folder, print a markdown table, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="automlm-eval", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
    )
    if args.output is not None:
        write_results(results, args.output)
        logger.info("Wrote %s", args.output)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
