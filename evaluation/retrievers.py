"""Retrievers behind one interface: exact dense (cosine) search over embeddings, and BM25.

A `Retriever` builds a `SearchIndex` over a corpus; the index returns, for a list of queries, the indices of the
best documents, best first, ties ranked by corpus order. `evaluation.evaluate` evaluates any retriever the same
way, whatever it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# Query rows scored at once against the whole corpus: bounds the (rows, corpus) score matrix to ~64 MB of float32.
_SCORE_ELEMENTS = 2**24
# Scripts written without spaces between words: their runs of letters are cut into character uni- and bigrams.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"


class SearchIndex(Protocol):
    """A corpus prepared for search."""

    def search(self, queries: Sequence[str], top_k: int) -> torch.Tensor:
        """``(len(queries), min(top_k, num_documents))`` document indices, best first, ties by corpus order."""


class Retriever(Protocol):
    """Anything that can index a corpus and search it.

    Attributes:
        name: recorded as ``"model"`` in the results.
        max_seq_length: the truncation of the inputs (in tokens), recorded in the results; None when there is none.
    """

    name: str
    max_seq_length: int | None

    def index(self, documents: Sequence[str], label: str = "") -> SearchIndex:
        """Index `documents` (texts, in corpus order); `label` names progress bars, e.g. the language."""


def rank_documents(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """The indices of the `top_k` highest scores of each row, ties broken by column order (a stable sort).

    Args:
        scores: ``(num_queries, num_documents)``.
        top_k: how many to keep (at most ``num_documents``).

    Returns:
        ``(num_queries, min(top_k, num_documents))`` column indices, best first.
    """
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :top_k]


def rank_in_chunks(
    scores: Callable[[int, int], torch.Tensor], num_queries: int, num_documents: int, top_k: int
) -> torch.Tensor:
    """`rank_documents` over every query, scoring a few thousand queries at a time to bound memory.

    Args:
        scores: ``scores(start, end)`` is the ``(end - start, num_documents)`` score matrix of queries
            ``start..end``.
        num_queries: how many queries.
        num_documents: how many documents.
        top_k: how many documents to keep per query.

    Returns:
        ``(num_queries, min(top_k, num_documents))`` document indices, best first.
    """
    rows = max(1, _SCORE_ELEMENTS // max(num_documents, 1))
    chunks = [rank_documents(scores(start, start + rows), top_k) for start in range(0, num_queries, rows)]
    return torch.cat(chunks) if chunks else torch.empty(0, 0, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------------
# Dense search
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


class DenseIndex:
    """Exact cosine search over the embeddings of a corpus.

    Args:
        retriever: the `DenseRetriever` that encodes documents and queries.
        documents: the documents' texts, in corpus order (which breaks ties).
        label: names the progress bars, e.g. the language.
    """

    def __init__(self, retriever: DenseRetriever, documents: Sequence[str], label: str = ""):
        self.retriever = retriever
        self.label = label
        documents = [retriever.document_prompt + text for text in documents]
        self.embeddings = retriever.embed(documents, f"Corpus {label}".strip())  # (num_documents, dim)

    def search(self, queries: Sequence[str], top_k: int) -> torch.Tensor:
        """``(len(queries), min(top_k, num_documents))`` document indices, best first, ties by corpus order."""
        queries = [self.retriever.query_prompt + text for text in queries]
        query_embeddings = self.retriever.embed(queries, f"Queries {self.label}".strip())  # (num_queries, dim)
        return rank_in_chunks(
            lambda start, end: query_embeddings[start:end] @ self.embeddings.T,
            query_embeddings.shape[0],
            self.embeddings.shape[0],
            top_k,
        )


class DenseRetriever:
    """Exact cosine search with any embedding function.

    Args:
        encode: maps a list of texts to a ``(len(texts), dim)`` float tensor (normalised here).
        batch_size: texts per call of `encode` (sorted by length, so that a batch pads little).
        show_progress_bar: show tqdm bars while encoding.
        name: recorded as ``"model"``.
        max_seq_length: the truncation `encode` applies, recorded as ``"max_seq_length"``.
        query_prompt: text put before every query (e.g. E5's ``"query: "``), as sentence-transformers'
            ``encode_query`` does.
        document_prompt: text put before every document (e.g. E5's ``"passage: "``), as ``encode_document`` does.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        batch_size: int = 64,
        show_progress_bar: bool = False,
        name: str = "encoder",
        max_seq_length: int | None = None,
        query_prompt: str = "",
        document_prompt: str = "",
    ):
        self.encode = encode
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.name = name
        self.max_seq_length = max_seq_length
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt

    def embed(self, texts: Sequence[str], desc: str = "Encoding") -> torch.Tensor:
        """`encode_texts` with this retriever's settings: ``(len(texts), dim)`` unit vectors."""
        return encode_texts(self.encode, texts, self.batch_size, self.show_progress_bar, desc)

    def index(self, documents: Sequence[str], label: str = "") -> DenseIndex:
        """Encode `documents` for exact cosine search."""
        return DenseIndex(self, documents, label)

    @classmethod
    def from_model(
        cls,
        model: str,
        *,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        device: str | None = None,
        show_progress_bar: bool = False,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> DenseRetriever:
        """A sentence-transformers model (`load_sentence_transformer`) as a retriever named `model`.

        Queries and documents get the model's own prompts named ``query`` and ``document`` (those of
        `SentenceTransformer.encode_query` / `encode_document`, from its ``config_sentence_transformers.json``), unless
        `query_prompt` / `document_prompt` are given (``""`` for none).
        """
        encoder = load_sentence_transformer(model, max_seq_length=max_seq_length, device=device)
        prompts = encoder.prompts or {}

        def encode(texts: list[str]) -> torch.Tensor:
            return encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)

        return cls(
            encode,
            batch_size,
            show_progress_bar,
            name=model,
            max_seq_length=encoder.max_seq_length,
            query_prompt=prompts.get("query", "") if query_prompt is None else query_prompt,
            document_prompt=prompts.get("document", "") if document_prompt is None else document_prompt,
        )


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

    Raises:
        FileNotFoundError: when `model` is neither a folder nor a model that can be loaded by name (offline: one
            in the local Hugging Face cache).
        ValueError: on a non-positive `max_seq_length`.
    """
    if max_seq_length is not None and max_seq_length < 1:
        raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
    from sentence_transformers import SentenceTransformer

    path = Path(model)
    if path.is_dir():
        if not any((path / name).is_file() for name in ("modules.json", "config.json")):
            raise FileNotFoundError(
                f"{model} holds no model (no modules.json or config.json); pass the folder of a saved model, e.g. "
                "outputs/<run>/final."
            )
    elif path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:  # a path, not a Hub name
        raise FileNotFoundError(
            f"{model} is not a model folder: pass the folder of a saved model (e.g. outputs/<run>/final) or a model "
            "name on the Hugging Face Hub."
        )
    else:
        logger.info("%s is not a local folder: loading it by name (offline only from the local cache)", model)
    try:
        encoder = SentenceTransformer(
            model, device=device, trust_remote_code=path.is_dir() and _needs_remote_code(path)
        )
    except OSError as error:  # a folder without weights, an unknown or uncached name offline: all OSErrors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if path.is_dir():
            raise FileNotFoundError(
                f"{model} holds no loadable model ({reason}); pass the folder of a saved model, e.g. "
                "outputs/<run>/final."
            ) from error
        raise FileNotFoundError(
            f"{model} is neither a local folder nor a model that loads by name ({reason}); check the name, or, "
            "offline, download the model once with `hf download` (or unset HF_HUB_OFFLINE)."
        ) from error
    if max_seq_length is not None:
        encoder.max_seq_length = max_seq_length
    return encoder


# ---------------------------------------------------------------------------------------------------------------------
# BM25
# ---------------------------------------------------------------------------------------------------------------------


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
        documents: the documents' texts, in corpus order (which breaks ties).

    Raises:
        ImportError: without `bm25s` (``pip install automlm[eval]``).
    """

    def __init__(self, documents: Sequence[str]):
        try:
            import bm25s
        except ImportError as error:
            raise ImportError(
                "BM25 needs the `bm25s` package: `pip install -e .[eval]` (or `pip install bm25s`)."
            ) from error

        self.num_documents = len(documents)
        self.retriever = bm25s.BM25()
        self.retriever.index([bm25_tokenize(text) for text in documents], show_progress=False)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """``(len(queries), num_documents)`` BM25 scores; a query with no known token scores 0 everywhere."""
        rows = []
        for text in queries:
            tokens = [t for t in bm25_tokenize(text) if t in self.retriever.vocab_dict]
            rows.append(self.retriever.get_scores(tokens) if tokens else np.zeros(self.num_documents))
        return torch.from_numpy(np.asarray(rows, dtype=np.float32).reshape(len(queries), self.num_documents))

    def search(self, queries: Sequence[str], top_k: int) -> torch.Tensor:
        """``(len(queries), min(top_k, num_documents))`` document indices, best first, ties by corpus order."""
        return rank_in_chunks(
            lambda start, end: self.scores(queries[start:end]), len(queries), self.num_documents, top_k
        )


class BM25Retriever:
    """The lexical baseline as a `Retriever`: `BM25Index` over each corpus; no truncation."""

    name = "bm25"
    max_seq_length = None

    def index(self, documents: Sequence[str], label: str = "") -> BM25Index:
        """Tokenize and index `documents`."""
        return BM25Index(documents)
