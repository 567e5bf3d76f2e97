"""Title -> text benchmarks from translated documentation shipped as Debian packages, one package per language.

`fetch_packages` downloads the packages with ``apt-get download`` and unpacks them with ``dpkg-deb -x`` (nothing is
installed); `build_doc_benchmark` turns their HTML (`benchmark_sets.html_sections`) into one BEIR folder per
language. A held-out split of the units (by a hash of the id, the same in every language) forms the benchmark; the
other units' text is the unlabelled training text, so no benchmark document, nor any of its translations, is in
the training text. A `DocSource` describes one documentation set: `benchmark_sets.debian_reference`,
`benchmark_sets.libreoffice_help`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evaluation.data import write_beir

from .common import DEV_DIR, UNLABELLED_DIR, dedup, render_readme, write_lines
from .html_sections import Section, parse_html_folder

logger = logging.getLogger(__name__)


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


def _html_root(package_root: Path, source: DocSource, language: str) -> Path:
    """The package's one HTML folder; where it ships several (libreoffice-help-ca: ``ca`` and ``ca-valencia``), the
    one whose path names the language."""
    matches = sorted(p for p in package_root.glob(source.html_glob) if p.is_dir())
    if len(matches) > 1:
        named = [p for p in matches if language.lower() in map(str.lower, p.relative_to(package_root).parts)]
        matches = named if len(named) == 1 else matches
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
    run (`evaluation.evaluate.evaluate_model(..., cross_lingual="en")`) pairs a language's queries and qrels with the
    English corpus. The units outside the held-out split (titles and paragraphs, untranslated ones left out) are the
    language's unlabelled text. The same task over those units is the dev split, ``<output_dir>/dev/<lang>/`` (for
    the languages with a benchmark folder and at least `min_queries` dev queries): it shares no unit with the
    benchmark, so hyperparameters can be chosen on it, and its documents are in the training text, as a knowledge
    base is when a model is adapted to it (the training text never pairs a title with its text).

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
        ``dev_queries``, ``unlabelled_lines``, ``unlabelled_chars``.
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

    def split_ids(held_out: bool) -> list[str]:
        ids: list[str] = []
        seen_texts: set[str] = set()
        for uid, unit in english.items():
            if _in_eval_split(uid, fraction) == held_out and usable(unit) and unit.text not in seen_texts:
                ids.append(uid)
                seen_texts.add(unit.text)
        return ids

    benchmark_ids, dev_ids = split_ids(True), split_ids(False)

    output_dir = Path(output_dir)
    counts: dict[str, dict[str, int]] = {}
    for lang in sorted(units_by_lang, key=lambda code: (code != source.english, code)):
        units = units_by_lang[lang]

        def translated(unit: Section, lang: str = lang) -> bool:
            reference = english.get(unit.id)
            return lang == source.english or reference is None or reference.text != unit.text

        def retrieval_set(
            ids: list[str], units: dict[str, Section] = units
        ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
            selected = [units[uid] for uid in ids if uid in units and usable(units[uid])]
            return doc_retrieval_set([unit for unit in selected if translated(unit)])

        queries, corpus, qrels = retrieval_set(benchmark_ids)
        dev_queries, dev_corpus, dev_qrels = retrieval_set(dev_ids)
        has_dev = len(dev_queries) >= min_queries
        lines = dedup(
            line
            for unit in units.values()
            if not _in_eval_split(unit.id, fraction) and translated(unit)
            for line in [unit.title, *unit.paragraphs]
            if line
        )
        write_lines(output_dir / UNLABELLED_DIR / f"{lang}.txt", lines)
        counts[lang] = {"queries": 0, "documents": 0, "qrels": 0, "title_as_en": 0, "en_text_pct": 0, "dev_queries": 0}
        if len(queries) >= min_queries:
            write_beir(output_dir / lang, queries, corpus, qrels)
            if has_dev:
                write_beir(output_dir / DEV_DIR / lang, dev_queries, dev_corpus, dev_qrels)
            english_titles = {english[uid].title for uid in (qid.removeprefix("q:") for qid in queries)}
            counts[lang] = {
                "queries": len(queries),
                "documents": len(corpus),
                "qrels": sum(len(docs) for docs in qrels.values()),
                "title_as_en": sum(text in english_titles for text in queries.values()),
                "en_text_pct": _english_text_percent([units[did] for did in corpus], english),
                "dev_queries": len(dev_queries) if has_dev else 0,
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
        "benchmark document nor any of its translations is in the training text. `dev/<lang>/` is the same task over "
        "those other units (`dev_queries` queries): a selection split that shares no unit with the benchmark, whose "
        "documents, unlike the benchmark's, are in the training text (as a knowledge base is when it is adapted to "
        "itself), though no title is ever paired with its text there. Document ids are shared by all "
        "languages: `automlm-eval --cross-lingual-corpus en` runs each language's queries against the English corpus. "
        "`title_as_en` counts the queries identical to the English title (names of commands or functions), which "
        "a lexical match solves across languages; `en_text_pct` is the share of the documents' characters in "
        "paragraphs found verbatim in the English unit (code, commands, table cells, and strings the translation "
        "lacks), i.e. roughly how much of a language's documents is not in that language. Built with "
        f"`automlm-build-benchmark {source.name}`."
    )
    (output_dir / "README.md").write_text(
        render_readme(f"{source.name}: title -> text retrieval", description, counts, licence), encoding="utf-8"
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
        html_roots = {}
        for lang, package in packages.items():
            if lang != source.english and not any(roots[package].glob(source.html_glob)):
                # A transitional package (libreoffice-help-sk in Debian 12 depends on the Czech help, ships none).
                logger.warning("%s holds no %s: %s is left out.", package, source.html_glob, lang)
                continue
            html_roots[lang] = _html_root(roots[package], source, lang)
        packages = {lang: packages[lang] for lang in html_roots}
        licences = {p: roots[p] / "usr/share/doc" / p / "copyright" for p in packages.values()}
        return build_doc_benchmark(
            source,
            html_roots,
            output_dir,
            eval_fraction=eval_fraction,
            min_queries=min_queries,
            licence_files=licences,
        )
