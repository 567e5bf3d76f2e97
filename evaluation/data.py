"""BEIR-layout folders: reading them (with errors that name the file and the line) and writing them.

A BEIR folder holds ``queries.jsonl`` (``_id``, ``text``), ``corpus.jsonl`` (``_id``, optional ``title``, ``text``)
and ``qrels.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line; BEIR's ``qrels/test.tsv`` is accepted
too). A data folder is one BEIR folder (one language) or a folder of them, one per language.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corpora.files import read_jsonl, read_lines

QRELS_COLUMNS = ("query-id", "corpus-id", "score")

Qrels = dict[str, dict[str, int]]


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
    for line_number, record in read_jsonl(path):
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
    for line_number, line in read_lines(path):
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


def qrels_path(folder: Path) -> Path:
    """``qrels.tsv`` of a BEIR folder, or BEIR's ``qrels/test.tsv``.

    Raises:
        FileNotFoundError: when there is neither.
    """
    for candidate in (folder / "qrels.tsv", folder / "qrels" / "test.tsv"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No qrels in {folder}: expected qrels.tsv (or BEIR's qrels/test.tsv).")


def beir_file(folder: Path, name: str) -> Path:
    """``folder / name``, a file the BEIR layout requires (``queries.jsonl`` or ``corpus.jsonl``).

    Raises:
        FileNotFoundError: when it is missing.
    """
    path = folder / name
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
    queries = load_queries(beir_file(folder, "queries.jsonl"))
    corpus = load_corpus(beir_file(folder, "corpus.jsonl"))
    path = qrels_path(folder)
    qrels = load_qrels(path)
    check_qrels(qrels, queries, corpus, source=str(path))
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
        raise FileNotFoundError(
            f"{data_dir} is not a folder: pass a BEIR folder or a folder of BEIR folders; build the project's sets "
            "with `automlm-build-benchmark` (docs/DATASETS.md)."
        )
    if (data_dir / "queries.jsonl").is_file():
        return {data_dir.resolve().name: data_dir}
    languages = {p.name: p for p in sorted(data_dir.iterdir()) if (p / "queries.jsonl").is_file()}
    if not languages:
        raise FileNotFoundError(
            f"No BEIR folder in {data_dir}: expected queries.jsonl there or in its subfolders (one per language); "
            "build one with `automlm-build-benchmark`."
        )
    return languages


def select_languages(
    data_dir: str | Path, languages: Sequence[str] | None = None, cross_lingual: str | None = None
) -> tuple[dict[str, Path], dict[str, Path]]:
    """The language folders to evaluate, and every language folder of `data_dir`.

    Args:
        data_dir: a BEIR folder, or a folder of BEIR folders named by language.
        languages: keep only these (default: all).
        cross_lingual: a language whose corpus serves every other language; it is not evaluated itself.

    Raises:
        FileNotFoundError: when `data_dir` holds no BEIR folder.
        ValueError: naming an unknown language and the available ones.
    """
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


def write_beir(folder: str | Path, queries: Mapping[str, str], corpus: Mapping[str, str], qrels: Qrels) -> Path:
    """Write one BEIR folder: ``queries.jsonl``, ``corpus.jsonl`` (empty titles) and ``qrels.tsv`` with its header.

    Args:
        folder: target folder (created).
        queries: query id to text.
        corpus: document id to text.
        qrels: query id to {document id: relevance}.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for did, text in corpus.items():
            f.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(QRELS_COLUMNS) + "\n")
        for qid, docs in qrels.items():
            for did, score in docs.items():
                f.write(f"{qid}\t{did}\t{score}\n")
    return folder
