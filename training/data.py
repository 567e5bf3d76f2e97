"""Unlabelled multilingual text: reading, cleaning, language-balanced sampling, and the batch collator."""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from corpora.chatterbot import chatterbot_languages, held_out_texts, read_chatterbot_language
from corpora.files import read_jsonl, read_lines

from .arguments import EMBEDDED_CORPUS, DataArguments

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt",)
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
UNKNOWN_LANGUAGE = "und"


@dataclass
class Corpus:
    """Sentences with their language, and what reading them found."""

    texts: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    skipped_blank_lines: int = 0
    duplicates_removed: int = 0
    sources: list[dict[str, str]] = field(default_factory=list)

    def add(self, text: str, language: str) -> None:
        text = text.strip()
        if not text:
            self.skipped_blank_lines += 1
            return
        self.texts.append(text)
        self.languages.append(language)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.languages).items()))

    def stats(self) -> dict[str, Any]:
        """What `data_stats.json` records."""
        return {
            "sentences_per_language": self.counts(),
            "total_sentences": len(self.texts),
            "skipped_blank_lines": self.skipped_blank_lines,
            "duplicates_removed": self.duplicates_removed,
            "sources": self.sources,
        }


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------
def read_embedded_corpus(corpus: Corpus) -> None:
    """The utterances of the `chatterbot-corpus` package (BSD-3-Clause) with their language codes, except those of
    the question -> answer pairs held out for evaluation (the dev and test splits of ``chatterbot-qa``)."""
    for language, folder in chatterbot_languages().items():
        data = read_chatterbot_language(folder)
        held_out = held_out_texts(data)
        for utterance in data.utterances:
            if utterance not in held_out:
                corpus.add(utterance, language)
    corpus.sources.append(
        {
            "name": "chatterbot-corpus",
            "version": "1.3.3",
            "license": "BSD-3-Clause",
            "url": "https://github.com/gunthercox/chatterbot-corpus",
        }
    )


def embedded_dev_data() -> Path:
    """The dev split of ``chatterbot-qa`` (held-out pairs the embedded corpus leaves out), built once from the
    installed `chatterbot-corpus` package into the Hugging Face cache folder and reused."""
    from huggingface_hub.constants import HF_HOME

    from benchmark_sets.chatterbot import DEV_DIR, build_chatterbot

    folder = Path(HF_HOME) / "automlm" / f"chatterbot-qa-{importlib.metadata.version('chatterbot-corpus')}"
    if not (folder / "README.md").is_file():  # written last by the builder
        building = folder.with_name(f".{folder.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        build_chatterbot(building)
        with contextlib.suppress(OSError):  # another process may have finished first: its folder is as good
            os.replace(building, folder)
        shutil.rmtree(building, ignore_errors=True)
    return folder / DEV_DIR


def _read_text_file(path: Path, corpus: Corpus, language: str) -> None:
    for _, line in read_lines(path):
        corpus.add(line, language)


def _row_language(row: dict[str, Any], args: DataArguments, default: str, where: str) -> str:
    if args.language_column is None:
        return default
    if args.language_column not in row:
        raise ValueError(f"{where}: no language column `{args.language_column}`; fix --language_column.")
    return str(row[args.language_column])


def _row_text(row: dict[str, Any], args: DataArguments, where: str) -> str:
    if args.text_column not in row:
        raise ValueError(
            f"{where}: no column `{args.text_column}` (columns: {sorted(row)}); set --text_column to the text column."
        )
    value = row[args.text_column]
    return "" if value is None else str(value)


def _read_table(path: Path, corpus: Corpus, args: DataArguments, language: str) -> None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: Iterable[tuple[int, dict[str, Any]]] = enumerate(pq.read_table(path).to_pylist(), start=1)
    elif path.suffix in (".csv", ".tsv"):
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(enumerate(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","), 2))
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not valid UTF-8 ({error.reason}); re-encode the file as UTF-8.") from error
    else:
        rows = read_jsonl(path)
    for number, row in rows:
        where = f"{path}, row {number}"
        corpus.add(_row_text(row, args, where), _row_language(row, args, language, where))


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + TABLE_SUFFIXES)
        if not files:
            raise ValueError(f"Folder {path} holds no {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"Training file {path} not found; check --train_files.")
    if path.suffix not in TEXT_SUFFIXES + TABLE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}."
        )
    return [path]


def _read_hub_dataset(corpus: Corpus, args: DataArguments) -> None:
    import datasets

    dataset = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=args.dataset_split)
    if args.text_column not in dataset.column_names:
        raise ValueError(
            f"Dataset {args.dataset_name} has no column `{args.text_column}` (columns: {dataset.column_names}); "
            "set --text_column."
        )
    for number, row in enumerate(dataset, start=1):
        where = f"{args.dataset_name}, row {number}"
        corpus.add(_row_text(row, args, where), _row_language(row, args, UNKNOWN_LANGUAGE, where))
    corpus.sources.append({"name": args.dataset_name, "hub_id": args.dataset_name})


def load_corpus(args: DataArguments) -> Corpus:
    """Read every source of `args` into one `Corpus` (deduplicated, capped, never empty)."""
    corpus = Corpus()
    for source in args.train_files:
        if source == EMBEDDED_CORPUS:
            read_embedded_corpus(corpus)
            continue
        for path in _expand(source):
            # A file's language is its name (de.txt, de.jsonl) unless a language column says otherwise.
            language = path.stem
            if path.suffix in TEXT_SUFFIXES:
                _read_text_file(path, corpus, language)
            else:
                _read_table(path, corpus, args, language)
            corpus.sources.append({"name": path.name})
    if args.dataset_name is not None and not args.streaming:
        _read_hub_dataset(corpus, args)
    if args.deduplicate:
        seen: set[tuple[str, str]] = set()
        texts, languages = [], []
        for text, language in zip(corpus.texts, corpus.languages):
            if (language, text) not in seen:
                seen.add((language, text))
                texts.append(text)
                languages.append(language)
        corpus.duplicates_removed = len(corpus.texts) - len(texts)
        corpus.texts, corpus.languages = texts, languages
    if args.max_train_sentences is not None:
        corpus.texts = corpus.texts[: args.max_train_sentences]
        corpus.languages = corpus.languages[: args.max_train_sentences]
    if not corpus.texts:
        raise ValueError(
            f"The training corpus is empty ({corpus.skipped_blank_lines} blank lines skipped): check --train_files "
            "and --text_column."
        )
    logger.info(
        "Read %d sentences (%d blank lines skipped, %d duplicates removed); per language: %s",
        len(corpus.texts), corpus.skipped_blank_lines, corpus.duplicates_removed, corpus.counts(),
    )  # fmt: skip
    return corpus


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------
def language_sampling_probabilities(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """XLM-R's smoothed language distribution: `p_l = n_l^alpha / sum_k n_k^alpha`."""
    weights = {language: count**alpha for language, count in counts.items()}
    total = sum(weights.values())
    return {language: weight / total for language, weight in weights.items()}


def balance_languages(corpus: Corpus, alpha: float, seed: int) -> list[int]:
    """Indices of one epoch drawn so that language `l` makes up `p_l` of it (see `language_sampling_probabilities`).

    The epoch keeps the corpus size; small languages are repeated (with replacement) and large ones subsampled.
    With `alpha=1` every sentence appears once.
    """
    by_language: dict[str, list[int]] = {}
    for index, language in enumerate(corpus.languages):
        by_language.setdefault(language, []).append(index)
    if alpha == 1.0 or len(by_language) == 1:
        return list(range(len(corpus.texts)))
    probabilities = language_sampling_probabilities(corpus.counts(), alpha)
    rng = np.random.default_rng(seed)
    total = len(corpus.texts)
    indices: list[int] = []
    sampled = {}
    for language, members in sorted(by_language.items()):
        target = max(1, round(probabilities[language] * total))
        replace = target > len(members)
        indices.extend(int(i) for i in rng.choice(members, size=target, replace=replace))
        sampled[language] = target
    logger.info("Language-balanced sampling (alpha=%s), sentences per epoch: %s", alpha, sampled)
    return indices


class StreamingSentences(IterableDataset):
    """`{"text": ...}` items streamed with `datasets` (for corpora larger than memory), shuffled in a buffer.

    `dataset_name` is a Hub dataset or a local folder or file that `datasets.load_dataset` reads. Blank texts are
    skipped. Resuming a streamed run replays the stream up to the checkpoint, so it continues on the same data, but
    the order after a shuffle buffer is only as reproducible as the source.
    """

    def __init__(self, args: DataArguments, seed: int, buffer_size: int = 10_000) -> None:
        import datasets

        stream = datasets.load_dataset(
            args.dataset_name, args.dataset_config_name, split=args.dataset_split, streaming=True
        )
        self.stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        self.text_column = args.text_column
        self.name = args.dataset_name

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, str]]:
        for number, row in enumerate(self.stream, start=1):
            if self.text_column not in row:
                raise ValueError(
                    f"{self.name}, row {number}: no column `{self.text_column}` (columns: {sorted(row)}); "
                    "set --text_column."
                )
            text = row[self.text_column]
            if text is not None and str(text).strip():
                yield {"text": str(text).strip()}


class SentenceDataset(Dataset):
    """Map-style dataset of `{"text": ...}` items."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, str]:
        return {"text": self.texts[index]}


# ----------------------------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class AutoMLMCollator:
    """Tokenize and pad a list of `{"text": str[, "positive": str]}` items for [`AutoMLMForPreTraining`].

    Returns `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them), `positive_*` for
    items with a positive, and `word_ids` (word index per token, -1 for special tokens and padding) when
    `whole_word_masking` is set. Masking itself happens in the model, from its config. Over-long texts are
    truncated to `max_length` tokens.

    Unlabelled items (no positive) become their two contrastive views here, as `views` says:

    - ``"dropout"``: ``text_prefix + text`` once; the model encodes it twice with different dropout (SimCSE).
    - ``"prompts"``: ``query_prompt + text`` and, as its positive, ``document_prompt + text``: the two roles an
      asymmetric retriever such as E5 is used in.
    - ``"crop"``: ``query_prompt`` + a random span of the text (a share of its tokens drawn from `crop_ratio`), and
      ``document_prompt + text`` as its positive, as in Contriever's independent cropping: a short piece has to
      find the text it comes from, which is what a query does. Spans are drawn from torch's global generator,
      so they follow the run's seed and replay on resume.

    The Auto-MLM and MLM terms read the first view. The batch's ``special_tokens_mask`` marks the tokens that are
    never masked: the tokenizer's special tokens and the tokens of the first view's prefix (``text_prefix``, or
    ``query_prompt`` for the ``prompts`` and ``crop`` views). A prefix is the same in every sentence, so a masked-LM
    head that was allowed to predict it would learn the prompt instead of the sentence.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 64
    whole_word_masking: bool = False
    text_key: str = "text"
    positive_key: str = "positive"
    views: Literal["dropout", "prompts", "crop"] = "dropout"
    text_prefix: str = ""
    query_prompt: str = ""
    document_prompt: str = ""
    crop_ratio: tuple[float, float] = (0.1, 0.5)

    def crop(self, text: str) -> str:
        """A random contiguous span of `text`'s tokens (at least 4 of them, or the whole of a shorter text)."""
        ids = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        low, high = self.crop_ratio
        ratio = low + (high - low) * torch.rand(()).item()
        length = min(len(ids), max(4, round(ratio * len(ids))))
        start = int(torch.randint(0, len(ids) - length + 1, ()).item())
        return self.tokenizer.decode(ids[start : start + length]).strip()

    def make_views(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items with their first view as text and, for `prompts` and `crop`, the second view as positive."""
        prefix = self.first_view_prefix(items)
        if any(self.positive_key in item for item in items) or self.views == "dropout":
            if not prefix:
                return items
            return [{**item, self.text_key: prefix + item[self.text_key]} for item in items]
        texts = [item[self.text_key] for item in items]
        first = texts if self.views == "prompts" else [self.crop(text) for text in texts]
        return [
            {self.text_key: self.query_prompt + view, self.positive_key: self.document_prompt + text}
            for view, text in zip(first, texts)
        ]

    def first_view_prefix(self, items: list[dict[str, Any]]) -> str:
        """The text `make_views` puts before every first view of these items."""
        if any(self.positive_key in item for item in items) or self.views == "dropout":
            return self.text_prefix
        return self.query_prompt

    def _encode(self, texts: list[str], prefix: str = "", protected_prefix: str = "") -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=not prefix,
        )
        batch = {f"{prefix}{key}": value for key, value in encoded.items() if key != "special_tokens_mask"}
        if not prefix:
            protected = encoded["special_tokens_mask"].bool()  # (batch, seq_len)
            if protected_prefix:
                protected |= prefix_token_mask(self.tokenizer, encoded, protected_prefix)
            batch["special_tokens_mask"] = protected.long()
        if self.whole_word_masking and not prefix:
            if not getattr(self.tokenizer, "is_fast", False):
                raise ValueError("Whole-word masking needs a fast tokenizer (it provides word ids).")
            word_ids = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(texts))]
            batch["word_ids"] = torch.tensor(word_ids, dtype=torch.long)
        return batch

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        protected_prefix = self.first_view_prefix(items)
        items = self.make_views(items)
        texts = [item[self.text_key] for item in items]
        batch = self._encode(texts, protected_prefix=protected_prefix)
        if any(self.positive_key in item for item in items):
            if not all(self.positive_key in item for item in items):
                raise ValueError(f"Some items of the batch have a `{self.positive_key}` and others not.")
            batch.update(self._encode([item[self.positive_key] for item in items], prefix="positive_"))
        return batch


def prefix_token_mask(tokenizer: PreTrainedTokenizerBase, encoded: Any, prefix: str) -> torch.Tensor:
    """`(batch, seq_len)` True at the tokens of `encoded` that lie wholly inside `prefix`, the text put before every
    sentence (a prompt such as E5's ``"query: "``).

    A fast tokenizer gives each token's character span, which decides; a token that spans the prefix's end and the
    sentence's first characters counts as the sentence's. A slow tokenizer has no spans: the prefix is then taken
    to be the tokens after the leading special tokens, as many as the prefix makes alone.
    """
    input_ids = encoded["input_ids"]
    special = encoded["special_tokens_mask"].bool()
    if getattr(tokenizer, "is_fast", False):
        protected = torch.zeros(input_ids.shape, dtype=torch.bool)  # (batch, seq_len)
        for row in range(input_ids.shape[0]):
            for position in range(input_ids.shape[1]):
                span = None if special[row, position] else encoded.token_to_chars(row, position)
                if span is not None and span.end <= len(prefix):
                    protected[row, position] = True
                elif span is not None:
                    break  # the sentence has begun
        return protected
    length = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    first = (~special).int().argmax(dim=1, keepdim=True)  # (batch, 1): the first token that is not special
    positions = torch.arange(input_ids.shape[1])[None]  # (1, seq_len)
    return (positions >= first) & (positions < first + length) & ~special
