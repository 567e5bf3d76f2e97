"""Build multilingual retrieval benchmarks in BEIR layout from data the project can get offline.

Two sources, each written as one BEIR folder per language (``queries.jsonl``, ``corpus.jsonl``, ``qrels.tsv``) plus
the unlabelled text the trainer can pretrain on (``unlabelled/<lang>.txt``, one text per line), a ``README.md`` with
the counts and the licence notices of the source:

- ``chatterbot``: the dialogues of the `chatterbot-corpus` package (BSD-3-Clause). Query: a turn; relevant
  documents: the turns that answer it. Small and chatty, a smoke test.
- ``debian-reference`` / ``libreoffice-help``: translated documentation from Debian packages, fetched with
  ``apt-get download`` and unpacked with ``dpkg-deb -x`` (nothing is installed). Query: the title of a section
  (Debian Reference) or of a help page (LibreOffice); relevant document: its text. Ids are shared by all the
  translations, so the same folders also serve a cross-lingual run (queries in one language, the English corpus; see
  `training.evaluation`). A held-out split of the units (by a hash of the id, the same in every language) forms the
  benchmark; the other units' text is the unlabelled training text, so no benchmark document, nor any of its
  translations, is in the training text.

Usage::

    python -m training.benchmark_data chatterbot --output data/chatterbot-qa
    python -m training.benchmark_data libreoffice-help --output data/libreoffice-help
    python -m training.benchmark_data debian-reference --output data/debian-reference

See ``docs/DATASETS.md`` for what each set holds and the counts per language.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import yaml

logger = logging.getLogger(__name__)

QRELS_HEADER = "query-id\tcorpus-id\tscore"
UNLABELLED_DIR = "unlabelled"

# ---------------------------------------------------------------------------------------------------------------------
# Writing BEIR folders
# ---------------------------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace (newlines and tabs included) into one space and strip the ends."""
    return " ".join(text.split())


def write_beir(
    folder: str | Path, queries: dict[str, str], corpus: dict[str, str], qrels: dict[str, dict[str, int]]
) -> Path:
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
        f.write(QRELS_HEADER + "\n")
        for qid, docs in qrels.items():
            for did, score in docs.items():
                f.write(f"{qid}\t{did}\t{score}\n")
    return folder


def write_lines(path: str | Path, lines: Iterable[str]) -> int:
    """Write texts one per line (each flattened to one line, empty ones skipped); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            line = normalize_text(line)
            if line:
                f.write(line + "\n")
                count += 1
    return count


def _dedup(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


# ---------------------------------------------------------------------------------------------------------------------
# chatterbot-corpus: question -> answer
# ---------------------------------------------------------------------------------------------------------------------

# Folder names of chatterbot-corpus 1.3.3 -> ISO 639-1 codes, with a BCP 47 script subtag where one language has two
# scripts (Chinese) and for Hinglish (Hindi written in Latin script, which has no code of its own).
CHATTERBOT_LANGUAGE_CODES = {
    "arabic": "ar",
    "bengali": "bn",
    "catalan": "ca",
    "chinese": "zh-Hans",
    "dutch": "nl",
    "english": "en",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hindi": "hi",
    "hinglish": "hi-Latn",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "marathi": "mr",
    "oriya": "or",
    "persian": "fa",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "tamil": "ta",
    "telugu": "te",
    "thai": "th",
    "traditionalchinese": "zh-Hant",
    "turkish": "tr",
    "ukrainian": "uk",
    "urdu": "ur",
    "yoruba": "yo",
}

# With 50 deduplicated question -> answer pairs, 20 of the 28 languages of chatterbot-corpus 1.3.3 qualify (the
# smallest, Russian, with 63 pairs and 58 queries); the next ones down have 46 (Yoruba) and 44 (Tamil). Below ~50
# queries one query changing rank moves a score by several points: too noisy even for a smoke test.
CHATTERBOT_MIN_PAIRS = 50

CHATTERBOT_LICENSE = """\
The dialogues come from chatterbot-corpus (https://github.com/gunthercox/chatterbot-corpus), licensed under the
BSD 3-Clause licence:

Copyright (c) 2017, Gunther Cox All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided that the
following conditions are met:

    Redistributions of source code must retain the above copyright notice, this list of conditions and the
    following disclaimer.

    Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the
    following disclaimer in the documentation and/or other materials provided with the distribution.

    Neither the name of chatterbot nor the names of its contributors may be used to endorse or promote products
    derived from this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES,
INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


@dataclass
class DialogueData:
    """What one language folder of chatterbot-corpus holds.

    Attributes:
        pairs: (turn, next turn) pairs in file order, duplicates included.
        utterances: every usable turn in file order, duplicates included (also turns that could not be paired).
        skipped: number of entries that were neither a text turn nor a list of turns.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    utterances: list[str] = field(default_factory=list)
    skipped: int = 0


def chatterbot_data_dir() -> Path:
    """The ``data`` folder of the installed `chatterbot-corpus` package.

    Raises:
        FileNotFoundError: when the package is not installed.
    """
    try:
        import chatterbot_corpus
    except ImportError as err:
        raise FileNotFoundError(
            "The chatterbot-corpus package is not installed: `pip install chatterbot-corpus==1.3.3` "
            "(or `pip install -e .[demo]`)."
        ) from err
    return Path(chatterbot_corpus.__file__).parent / "data"


def _turn_text(turn: object) -> str | None:
    """The text of one turn, or None when the entry is not a usable text turn.

    YAML reads unquoted numbers as int/float (their text is faithful) but ``yes``/``no``/``on`` as booleans and an
    empty entry as None (their text is lost), so only strings and numbers are kept.
    """
    if isinstance(turn, bool) or turn is None:
        return None
    if isinstance(turn, str | int | float):
        return normalize_text(str(turn)) or None
    return None


def _read_conversation(conversation: list, data: DialogueData) -> None:
    previous: str | None = None
    for turn in conversation:
        if isinstance(turn, list):
            # A nested list is a conversation of its own: pair inside it, and break the chain around it.
            _read_conversation(turn, data)
            previous = None
            continue
        text = _turn_text(turn)
        if text is None:
            data.skipped += 1
            previous = None
            continue
        data.utterances.append(text)
        if previous is not None:
            data.pairs.append((previous, text))
        previous = text


def read_chatterbot_language(folder: str | Path) -> DialogueData:
    """Read the ``conversations`` of every ``*.yml`` file of one chatterbot-corpus language folder.

    Consecutive turns make a (question, answer) pair. Odd entries are handled rather than trusted: a conversation
    that is a single string (a mis-indented YAML list, e.g. ``"Q? - A."``) is kept as an utterance but not split,
    since " - " is also ordinary punctuation; nested lists are read as conversations of their own; non-text turns
    (booleans, None, mappings) are skipped and break the chain of pairs; a file that is not valid YAML is skipped
    with a warning.

    Args:
        folder: e.g. ``chatterbot_corpus/data/english``.

    Returns:
        The pairs and utterances, in sorted-file order.
    """
    data = DialogueData()
    for path in sorted(Path(folder).glob("*.yml")):
        try:
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            logger.warning("Skipping %s: not valid YAML (%s)", path, err)
            continue
        conversations = content.get("conversations") if isinstance(content, dict) else None
        if not isinstance(conversations, list):
            logger.warning("Skipping %s: no `conversations:` list", path)
            continue
        for conversation in conversations:
            if isinstance(conversation, list):
                _read_conversation(conversation, data)
            elif (text := _turn_text(conversation)) is not None:
                data.utterances.append(text)
            else:
                data.skipped += 1
    if data.skipped:
        logger.info("%s: skipped %d entries that are not text turns", folder, data.skipped)
    return data


def dialogue_retrieval_set(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Turn (question, answer) pairs into a deduplicated retrieval set.

    Queries and documents are deduplicated by their exact (whitespace-normalised) text; a question with several
    answers gets all of them as relevant (score 1). Ids follow first appearance: ``q0, q1, ...`` and ``d0, d1, ...``.

    Args:
        pairs: (question, answer) pairs.

    Returns:
        queries, corpus, qrels.
    """
    query_ids: dict[str, str] = {}
    doc_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for question, answer in pairs:
        qid = query_ids.setdefault(question, f"q{len(query_ids)}")
        did = doc_ids.setdefault(answer, f"d{len(doc_ids)}")
        qrels.setdefault(qid, {})[did] = 1
    queries = {qid: text for text, qid in query_ids.items()}
    corpus = {did: text for text, did in doc_ids.items()}
    return queries, corpus, qrels


def build_chatterbot(
    output_dir: str | Path, min_pairs: int = CHATTERBOT_MIN_PAIRS, data_dir: str | Path | None = None
) -> dict[str, dict[str, int]]:
    """Build the chatterbot-corpus question -> answer retrieval benchmark.

    Writes ``<output_dir>/<lang>/{queries.jsonl,corpus.jsonl,qrels.tsv}`` for every language with at least
    `min_pairs` deduplicated (question, answer) pairs, ``<output_dir>/unlabelled/<lang>.txt`` (the deduplicated
    utterances of every language, one per line, for pretraining), ``LICENSE`` and ``README.md``.

    Args:
        output_dir: target folder (created; files of the same names are overwritten).
        min_pairs: smallest number of deduplicated pairs (qrels lines) for a language to get a benchmark folder.
        data_dir: the corpus' ``data`` folder; defaults to the installed package's.

    Returns:
        Counts per language code, sorted: ``pairs`` (deduplicated, i.e. qrels lines), ``queries``, ``documents``
        (both 0 for a language below the threshold, which gets only unlabelled text) and ``unlabelled`` (lines).
    """
    data_dir = Path(data_dir) if data_dir is not None else chatterbot_data_dir()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a folder: pass the `data` folder of chatterbot-corpus.")
    output_dir = Path(output_dir)
    counts: dict[str, dict[str, int]] = {}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        code = CHATTERBOT_LANGUAGE_CODES.get(folder.name)
        if code is None:
            code = folder.name
            logger.warning("No language code known for chatterbot folder %r: using the folder name", folder.name)
        if code in counts:
            raise ValueError(
                f"Two chatterbot folders map to the language code {code!r}; fix CHATTERBOT_LANGUAGE_CODES."
            )
        data = read_chatterbot_language(folder)
        queries, corpus, qrels = dialogue_retrieval_set(data.pairs)
        num_pairs = sum(len(docs) for docs in qrels.values())
        unlabelled = write_lines(output_dir / UNLABELLED_DIR / f"{code}.txt", _dedup(data.utterances))
        if num_pairs >= min_pairs:
            write_beir(output_dir / code, queries, corpus, qrels)
            counts[code] = {"pairs": num_pairs, "queries": len(queries), "documents": len(corpus)}
        else:
            logger.info("%s (%s): %d pairs < %d, unlabelled text only", code, folder.name, num_pairs, min_pairs)
            counts[code] = {"pairs": num_pairs, "queries": 0, "documents": 0}
        counts[code]["unlabelled"] = unlabelled
    counts = dict(sorted(counts.items()))
    benchmark = {code: c for code, c in counts.items() if c["queries"]}
    if not benchmark:
        raise ValueError(f"No language of {data_dir} has {min_pairs} pairs: lower `min_pairs`.")
    (output_dir / "LICENSE").write_text(CHATTERBOT_LICENSE, encoding="utf-8")
    readme = _readme(
        title="chatterbot-corpus question -> answer retrieval",
        description=(
            "Query: a turn of a chatterbot-corpus dialogue; relevant documents: every turn that follows it somewhere "
            "in the corpus (score 1). Queries and documents are deduplicated by exact text. Languages with at least "
            f"{min_pairs} deduplicated pairs get a benchmark folder (the others show 0 queries); "
            "`unlabelled/<lang>.txt` holds the deduplicated utterances of every language (including the benchmark's "
            "own turns: the set measures a model pretrained on them). Built from the installed chatterbot-corpus "
            "package with `python -m training.benchmark_data chatterbot`."
        ),
        counts=counts,
        licence="BSD-3-Clause, see LICENSE.",
    )
    (output_dir / "README.md").write_text(readme, encoding="utf-8")
    logger.info("Wrote the chatterbot benchmark for %d languages to %s", len(benchmark), output_dir)
    return counts


def _readme(title: str, description: str, counts: dict[str, dict[str, int]], licence: str) -> str:
    keys = list(next(iter(counts.values())))
    lines = [f"# {title}", "", description, "", "| language | " + " | ".join(keys) + " |"]
    lines.append("|---" * (len(keys) + 1) + "|")
    for code, c in counts.items():
        lines.append(f"| {code} | " + " | ".join(str(c[k]) for k in keys) + " |")
    lines += ["", f"Licence: {licence}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Translated documentation: HTML -> sections
# ---------------------------------------------------------------------------------------------------------------------

HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Tags after which text must not run into the next word.
BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "form", "header", "hr", "li", "main", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot",
        "th", "thead", "tr", "ul",
    }
)  # fmt: skip
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
DEFAULT_SKIP_TAGS = frozenset({"head", "script", "style", "noscript", "template", "nav", "header", "footer", "aside"})


@dataclass
class Section:
    """A titled piece of a translated document: an HTML section (heading + its own text) or a whole page.

    Attributes:
        id: shared by every translation: ``<page id>#<anchor>`` for a section, ``<page id>`` for a page.
        title: the heading text, numbering removed; empty for the text before a page's first heading.
        paragraphs: the text, one entry per HTML block (a section's subsections are not part of it).
        level: heading level (1 for ``<h1>``), 0 for a page or the text before the first heading.
    """

    id: str
    title: str
    paragraphs: list[str]
    level: int = 0

    @property
    def text(self) -> str:
        """The paragraphs joined by spaces."""
        return " ".join(self.paragraphs)


class _SectionParser(HTMLParser):
    """Split one HTML page at its headings, leaving out skipped elements (navigation, scripts, skipped classes)."""

    def __init__(self, skip_tags: frozenset[str], skip_classes: frozenset[str]):
        super().__init__(convert_charrefs=True)
        self.skip_tags = skip_tags
        self.skip_classes = skip_classes
        self.skip_stack: list[str] = []  # tags opened since skipping began; the first one started it
        # (anchor, title, paragraphs, level); the first entry gathers the text before the first heading.
        self.sections: list[tuple[str | None, str, list[str], int]] = [(None, "", [], 0)]
        self.heading: str | None = None  # tag of the heading being read
        self.heading_anchor: str | None = None
        self.heading_text: list[str] = []
        self.buffer: list[str] = []

    def _flush(self) -> None:
        # Text is gathered in `buffer` and becomes one paragraph at every block boundary.
        text = normalize_text("".join(self.buffer))
        self.buffer = []
        if text:
            self.sections[-1][2].append(text)

    def _starts_skip(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in self.skip_tags:
            return True
        classes = (dict(attrs).get("class") or "").split()
        return any(c in self.skip_classes for c in classes)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_stack or self._starts_skip(tag, attrs):
            if tag not in VOID_TAGS:
                self.skip_stack.append(tag)
            return
        attributes = dict(attrs)
        if tag in HEADING_TAGS:
            self._flush()
            self.heading = tag
            self.heading_anchor = attributes.get("id")
            self.heading_text = []
        elif self.heading is not None:
            # DocBook and LibreOffice put the anchor in an <a id="..."> or <a name="..."> inside the heading.
            if tag == "a" and self.heading_anchor is None:
                self.heading_anchor = attributes.get("id") or attributes.get("name")
            elif tag == "br":
                self.heading_text.append(" ")
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # XHTML's <a id="x"/> or <div/>: a start tag that closes itself.
        if self.skip_stack or self._starts_skip(tag, attrs):
            return
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            # Close up to the matching open tag, which tolerates unclosed children such as <p> or <li>.
            if tag in self.skip_stack:
                while self.skip_stack.pop() != tag:
                    pass
            return
        if self.heading is not None:
            if tag == self.heading:
                title = normalize_text("".join(self.heading_text))
                self.sections.append((self.heading_anchor, title, [], int(tag[1])))
                self.heading = None
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skip_stack:
            (self.heading_text if self.heading is not None else self.buffer).append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def parse_html_sections(
    html_text: str,
    page_id: str,
    *,
    skip_tags: Iterable[str] = DEFAULT_SKIP_TAGS,
    skip_classes: Iterable[str] = (),
    clean_title: Callable[[str], str] | None = None,
) -> list[Section]:
    """Split one HTML page into sections, one per heading (``<h1>`` to ``<h6>``).

    A section's text is what follows its heading up to the next heading of any level: a parent section holds only
    its own introduction, never its subsections. Its id is ``<page_id>#<anchor>``, the anchor being the heading's
    ``id``, else the ``id`` or ``name`` of the first ``<a>`` inside the heading, else ``h<n>`` (its position in the
    page); an anchor used twice in a page gets ``~<n>`` appended. Text before the first heading becomes a section
    with an empty title and the id ``<page_id>#``.

    Args:
        html_text: the page.
        page_id: the page's id, shared by its translations (e.g. its path without the language).
        skip_tags: elements left out with everything inside them.
        skip_classes: CSS classes whose elements are left out with everything inside them (tables of contents,
            navigation bars).
        clean_title: applied to every heading text, e.g. to strip section numbers.

    Returns:
        The sections in page order (the untitled one first, when there is text before the first heading).
    """
    parser = _SectionParser(frozenset(skip_tags), frozenset(skip_classes))
    parser.feed(html_text)
    parser.close()
    sections = []
    seen: set[str] = set()
    for position, (anchor, title, paragraphs, level) in enumerate(parser.sections):
        if position == 0:
            if paragraphs:
                sections.append(Section(id=f"{page_id}#", title="", paragraphs=paragraphs, level=0))
            continue
        section_id = f"{page_id}#{anchor or f'h{position}'}"
        if section_id in seen:
            section_id = f"{section_id}~{position}"
        seen.add(section_id)
        title = clean_title(title) if clean_title is not None else title
        sections.append(Section(id=section_id, title=title, paragraphs=paragraphs, level=level))
    return sections


def merge_page(page_id: str, sections: Sequence[Section]) -> Section:
    """One page as a single unit: the first heading is its title, everything else (later headings too) its text."""
    title = ""
    paragraphs: list[str] = []
    for section in sections:
        if section.title and not title:
            title = section.title
        elif section.title:
            paragraphs.append(section.title)
        paragraphs += section.paragraphs
    return Section(id=page_id, title=title, paragraphs=paragraphs, level=0)


def parse_html_folder(
    root: str | Path,
    page_id: Callable[[str], str] = lambda relative: relative.removesuffix(".html"),
    *,
    unit: Literal["section", "page"] = "section",
    skip_tags: Iterable[str] = DEFAULT_SKIP_TAGS,
    skip_classes: Iterable[str] = (),
    clean_title: Callable[[str], str] | None = None,
) -> dict[str, Section]:
    """Parse every ``*.html`` file under `root` (one language) into sections or pages.

    Args:
        root: the HTML folder of one language.
        page_id: maps a file's path relative to `root` (``/`` separators) to an id shared by its translations.
        unit: ``"section"``: one unit per heading (`parse_html_sections`); ``"page"``: one per file (`merge_page`).
        skip_tags: elements left out with everything inside them.
        skip_classes: CSS classes whose elements are left out.
        clean_title: applied to every heading text.

    Returns:
        Units by id, files in sorted order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: pass the folder that holds the HTML files of one language.")
    units: dict[str, Section] = {}
    for path in sorted(root.rglob("*.html")):
        pid = page_id(path.relative_to(root).as_posix())
        text = path.read_text(encoding="utf-8", errors="replace")
        sections = parse_html_sections(
            text, pid, skip_tags=skip_tags, skip_classes=skip_classes, clean_title=clean_title
        )
        for section in [merge_page(pid, sections)] if unit == "page" else sections:
            if section.id in units:
                raise ValueError(f"Two units of {root} have the id {section.id!r}: fix the `page_id` function.")
            units[section.id] = section
    return units


# ---------------------------------------------------------------------------------------------------------------------
# Translated documentation from Debian packages
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocSource:
    """A translated documentation set shipped as Debian packages, one package per language.

    Attributes:
        name: the set's name (README, logs).
        description: a paragraph for the README.
        packages: language code (BCP 47) -> Debian package.
        html_glob: where the HTML folder of the language lies inside an unpacked package (a glob with one match).
        page_id: maps a file path relative to the HTML folder to an id shared by every translation.
        unit: ``"section"`` (heading -> its own text) or ``"page"`` (first heading -> the rest of the page).
        skip_classes: CSS classes left out (navigation, tables of contents, debug boxes).
        clean_title: strips numbering from headings.
        eval_fraction: share of the units (chosen by a hash of the id, so the same in every language) held out for
            the benchmark; the rest is unlabelled training text.
        min_chars: shortest text of a benchmark document.
        english: the language the others are aligned to.
    """

    name: str
    description: str
    packages: dict[str, str]
    html_glob: str
    page_id: Callable[[str], str]
    unit: Literal["section", "page"]
    skip_classes: frozenset[str]
    clean_title: Callable[[str], str]
    eval_fraction: float
    min_chars: int = 40
    english: str = "en"


_SECTION_NUMBER = re.compile(r"^\s*(?:[A-Z]|\d+)(?:\.\d+)*\.\s+")


def strip_section_number(title: str) -> str:
    """``"1.2.3. Title"`` or ``"A.1. Title"`` -> ``"Title"`` (DocBook's numbering would tie titles to their ids)."""
    return _SECTION_NUMBER.sub("", title).strip()


DEBIAN_REFERENCE = DocSource(
    name="debian-reference",
    description=(
        "The Debian Reference (Osamu Aoki and translators, version 2.100 in Debian 12), a system administration "
        "guide in DocBook, translated with po4a. Unit: a section (query: its title without numbering; document: "
        "its own text, without its subsections)."
    ),
    packages={
        "en": "debian-reference-en",
        "de": "debian-reference-de",
        "es": "debian-reference-es",
        "fr": "debian-reference-fr",
        "id": "debian-reference-id",
        "it": "debian-reference-it",
        "ja": "debian-reference-ja",
        "pt": "debian-reference-pt",
        # debian-reference-pt-br is left out: a near copy of -pt (103 of its 4458 unlabelled lines differ).
        "zh-Hans": "debian-reference-zh-cn",
        "zh-Hant": "debian-reference-zh-tw",
    },
    html_glob="usr/share/debian-reference",
    page_id=lambda relative: relative.split(".", 1)[0],  # ch01.zh-cn.html -> ch01
    unit="section",
    skip_classes=frozenset({"navheader", "navfooter", "toc", "list-of-tables", "list-of-figures", "footnotes"}),
    clean_title=strip_section_number,
    eval_fraction=0.5,
)

# Every libreoffice-help-* package of Debian 12 but en-gb (a second English).
_LIBREOFFICE_LANGUAGES = (
    "en", "ca", "cs", "da", "de", "dz", "el", "es", "et", "eu", "fi", "fr", "gl", "hi", "hu", "id", "it", "ja", "km",
    "ko", "nl", "om", "pl", "pt", "pt-BR", "ru", "sk", "sl", "sv", "tr", "vi", "zh-Hans", "zh-Hant",
)  # fmt: skip
_LIBREOFFICE_PACKAGE_SUFFIX = {"en": "en-us", "pt-BR": "pt-br", "zh-Hans": "zh-cn", "zh-Hant": "zh-tw"}

LIBREOFFICE_HELP = DocSource(
    name="libreoffice-help",
    description=(
        "The LibreOffice 7.4 offline help in Debian 12, translated by the LibreOffice localisation teams. Unit: a "
        "help page (query: its first heading; document: the rest of the page). Untranslated strings of a partial "
        "translation are shown in English, and pages left entirely in English are dropped from that language."
    ),
    packages={
        code: f"libreoffice-help-{_LIBREOFFICE_PACKAGE_SUFFIX.get(code, code)}" for code in _LIBREOFFICE_LANGUAGES
    },
    html_glob="usr/share/libreoffice/help/*/text",  # help/<lang>/text; help/media holds images
    page_id=lambda relative: relative.removesuffix(".html"),  # shared/guide/active_help_on_off
    unit="page",
    skip_classes=frozenset({"relatedtopics", "debug"}),
    clean_title=str.strip,
    eval_fraction=0.2,
)

DOC_SOURCES = {source.name: source for source in (DEBIAN_REFERENCE, LIBREOFFICE_HELP)}
MIN_QUERIES = 50


def fetch_packages(packages: Sequence[str], work_dir: str | Path) -> dict[str, Path]:
    """Download Debian packages with ``apt-get download`` and unpack each with ``dpkg-deb -x`` (no installation).

    Packages already unpacked in `work_dir` (a folder named after the package) are reused.

    Args:
        packages: package names.
        work_dir: where ``<package>/`` folders are unpacked.

    Returns:
        Package name -> its unpacked root.

    Raises:
        FileNotFoundError: without ``apt-get`` or ``dpkg-deb`` (not a Debian-based system).
        ValueError: when apt cannot download a package (e.g. its lists are stale: run ``apt-get update``).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not (work_dir / p).is_dir()]
    if missing:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(
                    f"`{tool}` is not available: build this set on Debian or Ubuntu, or unpack the packages "
                    f"{missing} yourself into {work_dir}/<package>/."
                )
        with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
            logger.info("apt-get download %s", " ".join(missing))
            result = subprocess.run(["apt-get", "download", *missing], cwd=scratch, capture_output=True, text=True)
            if result.returncode != 0:
                raise ValueError(
                    f"`apt-get download {' '.join(missing)}` failed:\n{result.stderr.strip()}\n"
                    "Run `apt-get update` (as root) if the package lists are missing or stale, or leave out the "
                    "languages whose package does not exist in your release."
                )
            for deb in sorted(Path(scratch).glob("*.deb")):
                package = deb.name.split("_", 1)[0]
                subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(scratch) / package)], check=True)
                (Path(scratch) / package).rename(work_dir / package)
    return {p: work_dir / p for p in packages}


def _html_root(package_root: Path, source: DocSource) -> Path:
    matches = sorted(p for p in package_root.glob(source.html_glob) if p.is_dir())
    if len(matches) != 1:
        raise FileNotFoundError(
            f"Expected one folder {source.html_glob} in {package_root}, found {len(matches)}: is it a "
            f"{source.name} package?"
        )
    return matches[0]


def _in_eval_split(unit_id: str, fraction: float) -> bool:
    # A hash of the id, not a random draw: the same units are held out in every language and every run.
    digest = hashlib.sha1(unit_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def doc_retrieval_set(units: Sequence[Section]) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Turn titled units into a retrieval set: query = title, relevant document = the unit's text (score 1).

    Documents keep the unit id (so a translation's qrels point into the English corpus too); a text that repeats an
    earlier one is not stored again and its queries point to the first copy. Queries are deduplicated by text: a
    title shared by several units has all of them as relevant. A query's id is ``q:`` + its first unit's id.
    """
    doc_by_text: dict[str, str] = {}
    query_by_title: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for unit in units:
        did = doc_by_text.setdefault(unit.text, unit.id)
        qid = query_by_title.setdefault(unit.title, f"q:{unit.id}")
        qrels.setdefault(qid, {})[did] = 1
    queries = {qid: title for title, qid in query_by_title.items()}
    corpus = {did: text for text, did in doc_by_text.items()}
    return queries, corpus, qrels


def _english_text_percent(units: Sequence[Section], english: dict[str, Section]) -> int:
    # Characters in paragraphs found verbatim in the English unit: code, commands, table cells of names and numbers,
    # and the strings a partial translation leaves in English.
    total = same = 0
    for unit in units:
        reference = set(english[unit.id].paragraphs) if unit.id in english else set()
        total += sum(len(paragraph) for paragraph in unit.paragraphs)
        same += sum(len(paragraph) for paragraph in unit.paragraphs if paragraph in reference)
    return round(100 * same / max(total, 1))


def build_doc_benchmark(
    source: DocSource,
    html_roots: dict[str, str | Path],
    output_dir: str | Path,
    *,
    eval_fraction: float | None = None,
    min_queries: int = MIN_QUERIES,
    licence_files: dict[str, Path] | None = None,
) -> dict[str, dict[str, int]]:
    """Build a title -> text retrieval benchmark from the HTML folders of a translated documentation set.

    The benchmark ids are fixed once, from English: units in the held-out split (`eval_fraction`, by a hash of the
    id) with a title and at least ``source.min_chars`` characters of text, the first of any identical texts. Each
    language keeps those of its units whose text differs from the English one (an identical text is an untranslated
    unit) and is long enough, so every document id of every language exists in the English corpus: the cross-lingual
    run (`training.evaluation.evaluate_model(..., cross_lingual="en")`) pairs a language's queries and qrels with the
    English corpus. The units outside the held-out split (titles and paragraphs, untranslated ones left out) are the
    language's unlabelled text.

    Args:
        source: the documentation set.
        html_roots: language code -> the folder of its HTML files (must include ``source.english``).
        output_dir: target folder (created).
        eval_fraction: overrides ``source.eval_fraction``.
        min_queries: a language with fewer benchmark queries gets only unlabelled text.
        licence_files: name -> licence/copyright file, copied to ``licenses/<name>.copyright``.

    Returns:
        Counts per language: ``queries``, ``documents``, ``qrels``, ``title_as_en`` (queries identical to the
        English title of their unit: cross-lingual giveaways such as command names), ``en_text_pct`` (share of
        the documents' characters in paragraphs found verbatim in the English unit: code, names, untranslated strings),
        ``unlabelled_lines``, ``unlabelled_chars``.
    """
    fraction = source.eval_fraction if eval_fraction is None else eval_fraction
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {fraction}.")
    if source.english not in html_roots:
        raise ValueError(f"The languages must include {source.english!r}: the others are aligned to it.")
    units_by_lang = {
        lang: parse_html_folder(
            root,
            source.page_id,
            unit=source.unit,
            skip_classes=source.skip_classes,
            clean_title=source.clean_title,
        )
        for lang, root in html_roots.items()
    }
    english = units_by_lang[source.english]

    def usable(unit: Section) -> bool:
        return bool(unit.title) and len(unit.text) >= source.min_chars

    benchmark_ids: list[str] = []
    seen_texts: set[str] = set()
    for uid, unit in english.items():
        if _in_eval_split(uid, fraction) and usable(unit) and unit.text not in seen_texts:
            benchmark_ids.append(uid)
            seen_texts.add(unit.text)

    output_dir = Path(output_dir)
    counts: dict[str, dict[str, int]] = {}
    for lang in sorted(units_by_lang, key=lambda code: (code != source.english, code)):
        units = units_by_lang[lang]

        def translated(unit: Section, lang: str = lang) -> bool:
            reference = english.get(unit.id)
            return lang == source.english or reference is None or reference.text != unit.text

        selected = [units[uid] for uid in benchmark_ids if uid in units and usable(units[uid])]
        selected = [unit for unit in selected if translated(unit)]
        queries, corpus, qrels = doc_retrieval_set(selected)
        lines = _dedup(
            line
            for unit in units.values()
            if not _in_eval_split(unit.id, fraction) and translated(unit)
            for line in [unit.title, *unit.paragraphs]
            if line
        )
        write_lines(output_dir / UNLABELLED_DIR / f"{lang}.txt", lines)
        counts[lang] = {"queries": 0, "documents": 0, "qrels": 0, "title_as_en": 0, "en_text_pct": 0}
        if len(queries) >= min_queries:
            write_beir(output_dir / lang, queries, corpus, qrels)
            english_titles = {english[uid].title for uid in (qid.removeprefix("q:") for qid in queries)}
            counts[lang] = {
                "queries": len(queries),
                "documents": len(corpus),
                "qrels": sum(len(docs) for docs in qrels.values()),
                "title_as_en": sum(text in english_titles for text in queries.values()),
                "en_text_pct": _english_text_percent([units[did] for did in corpus], english),
            }
        else:
            logger.info("%s %s: %d queries < %d, unlabelled text only", source.name, lang, len(queries), min_queries)
        counts[lang] |= {"unlabelled_lines": len(lines), "unlabelled_chars": sum(len(line) for line in lines)}
        logger.info("%s %s: %s", source.name, lang, counts[lang])

    licence_names = []
    for name, path in (licence_files or {}).items():
        if path.is_file():
            (output_dir / "licenses").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, output_dir / "licenses" / f"{name}.copyright")
            licence_names.append(name)
        else:
            logger.warning("No copyright file at %s", path)
    licence = (
        "the copyright files of the Debian packages, in `licenses/` (" + ", ".join(licence_names) + ")."
        if licence_names
        else "see the copyright files of the source packages."
    )
    description = (
        f"{source.description} A held-out {fraction:.0%} of the units (chosen by a hash of their id, the same in "
        "every language) forms the benchmark; `unlabelled/<lang>.txt` holds the text of the other units, so no "
        "benchmark document nor any of its translations is in the training text. Document ids are shared by all "
        "languages: `automlm-eval --cross-lingual-corpus en` runs each language's queries against the English corpus. "
        "`title_as_en` counts the queries identical to the English title (names of commands or functions), which "
        "a lexical match solves across languages; `en_text_pct` is the share of the documents' characters in "
        "paragraphs found verbatim in the English unit (code, commands, table cells, and strings the translation "
        "lacks), i.e. roughly how much of a language's documents is not in that language. Built with "
        f"`python -m training.benchmark_data {source.name}`."
    )
    (output_dir / "README.md").write_text(
        _readme(f"{source.name}: title -> text retrieval", description, counts, licence), encoding="utf-8"
    )
    return counts


def build_translated_docs(
    source: DocSource,
    output_dir: str | Path,
    languages: Sequence[str] | None = None,
    *,
    work_dir: str | Path | None = None,
    eval_fraction: float | None = None,
    min_queries: int = MIN_QUERIES,
) -> dict[str, dict[str, int]]:
    """Download the packages of a documentation set, unpack them and build its benchmark (`build_doc_benchmark`).

    Args:
        source: e.g. `DEBIAN_REFERENCE` or `LIBREOFFICE_HELP`.
        output_dir: target folder.
        languages: language codes (keys of ``source.packages``); default all. English is always added.
        work_dir: where packages are unpacked and kept for the next run; default a temporary folder.
        eval_fraction: overrides ``source.eval_fraction``.
        min_queries: a language with fewer benchmark queries gets only unlabelled text.

    Returns:
        Counts per language (see `build_doc_benchmark`).
    """
    languages = list(source.packages) if languages is None else list(dict.fromkeys([source.english, *languages]))
    unknown = [lang for lang in languages if lang not in source.packages]
    if unknown:
        raise ValueError(f"No {source.name} package for {unknown}; choose among {sorted(source.packages)}.")
    packages = {lang: source.packages[lang] for lang in languages}
    with tempfile.TemporaryDirectory() as scratch:
        roots = fetch_packages(list(packages.values()), work_dir if work_dir is not None else scratch)
        html_roots = {lang: _html_root(roots[package], source) for lang, package in packages.items()}
        licences = {p: roots[p] / "usr/share/doc" / p / "copyright" for p in packages.values()}
        return build_doc_benchmark(
            source,
            html_roots,
            output_dir,
            eval_fraction=eval_fraction,
            min_queries=min_queries,
            licence_files=licences,
        )


def build_debian_reference(
    output_dir: str | Path,
    languages: Sequence[str] | None = None,
    *,
    work_dir: str | Path | None = None,
    eval_fraction: float | None = None,
    min_queries: int = MIN_QUERIES,
) -> dict[str, dict[str, int]]:
    """Build the Debian Reference section title -> section text benchmark (arguments: `build_translated_docs`)."""
    return build_translated_docs(
        DEBIAN_REFERENCE,
        output_dir,
        languages,
        work_dir=work_dir,
        eval_fraction=eval_fraction,
        min_queries=min_queries,
    )


def build_libreoffice_help(
    output_dir: str | Path,
    languages: Sequence[str] | None = None,
    *,
    work_dir: str | Path | None = None,
    eval_fraction: float | None = None,
    min_queries: int = MIN_QUERIES,
) -> dict[str, dict[str, int]]:
    """Build the LibreOffice help page title -> page text benchmark (arguments: `build_translated_docs`)."""
    return build_translated_docs(
        LIBREOFFICE_HELP,
        output_dir,
        languages,
        work_dir=work_dir,
        eval_fraction=eval_fraction,
        min_queries=min_queries,
    )


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``automlm-build-benchmark`` / ``python -m training.benchmark_data``: build one benchmark set."""
    parser = argparse.ArgumentParser(prog="automlm-build-benchmark", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="source", required=True)
    chatterbot = commands.add_parser("chatterbot", help="question -> answer sets from chatterbot-corpus")
    chatterbot.add_argument("--output", required=True, type=Path, help="target folder")
    chatterbot.add_argument("--min-pairs", type=int, default=CHATTERBOT_MIN_PAIRS, help="smallest language kept")
    for source in DOC_SOURCES.values():
        command = commands.add_parser(source.name, help=f"title -> text sets from the {source.name} packages")
        command.add_argument("--output", required=True, type=Path, help="target folder")
        command.add_argument(
            "--languages", nargs="+", choices=sorted(source.packages), help="default: all (English is always added)"
        )
        command.add_argument("--work-dir", type=Path, help="keep the unpacked packages here for the next run")
        command.add_argument("--eval-fraction", type=float, default=source.eval_fraction, help="held-out share")
        command.add_argument("--min-queries", type=int, default=MIN_QUERIES, help="smallest language kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.source == "chatterbot":
        counts = build_chatterbot(args.output, min_pairs=args.min_pairs)
    else:
        counts = build_translated_docs(
            DOC_SOURCES[args.source],
            args.output,
            args.languages,
            work_dir=args.work_dir,
            eval_fraction=args.eval_fraction,
            min_queries=args.min_queries,
        )
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
