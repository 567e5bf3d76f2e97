from dataclasses import replace
from pathlib import Path

import pytest

from benchmark_sets.debian_reference import DEBIAN_REFERENCE
from benchmark_sets.html_sections import parse_html_folder
from benchmark_sets.translated_docs import build_doc_benchmark, fetch_packages
from evaluation.data import load_beir, load_corpus, load_queries
from evaluation.evaluate import evaluate_model

HTML_DOCS = Path(__file__).parents[1] / "fixtures" / "html_docs"


def test_doc_benchmark_is_aligned_held_out_and_cross_lingual(tmp_path):
    source = replace(DEBIAN_REFERENCE, eval_fraction=0.5)
    roots = {"en": HTML_DOCS / "en", "de": HTML_DOCS / "de"}
    # Nearly everything held out: the fixture's sections are all in the benchmark.
    counts = build_doc_benchmark(source, roots, tmp_path, eval_fraction=0.99, min_queries=1)
    assert counts["en"]["queries"] == 4  # "Short" has too little text
    assert counts["de"]["queries"] == 3  # "Virtual consoles" is untranslated in de (identical to en): dropped
    assert counts["de"]["title_as_en"] == 0
    queries = load_queries(tmp_path / "de" / "queries.jsonl")
    assert sorted(queries.values()) == ["Das root-Konto", "Die Eingabeaufforderung", "Kapitel 1. Einführungen"]
    for lang in roots:
        load_beir(tmp_path / lang)  # every qrels id exists
    # Document ids are shared with English: the cross-lingual run works.
    results = evaluate_model("bm25", tmp_path, cross_lingual="en", show_progress_bar=False)
    assert results["per_language"]["de"]["num_queries"] == 3
    assert (tmp_path / "README.md").is_file()

    # With a real split, nothing held out appears in the unlabelled text, in any language.
    counts = build_doc_benchmark(source, roots, tmp_path / "split", min_queries=1)
    held_out = set()
    for lang in roots:
        if (tmp_path / "split" / lang).is_dir():
            held_out |= set(load_corpus(tmp_path / "split" / lang / "corpus.jsonl"))
    assert held_out, "the fixture should put some section in the held-out split"
    english = parse_html_folder(HTML_DOCS / "en", DEBIAN_REFERENCE.page_id, skip_classes=source.skip_classes)
    german = parse_html_folder(HTML_DOCS / "de", DEBIAN_REFERENCE.page_id, skip_classes=source.skip_classes)
    for lang, units in (("en", english), ("de", german)):
        lines = set((tmp_path / "split" / "unlabelled" / f"{lang}.txt").read_text(encoding="utf-8").splitlines())
        for uid in held_out:
            assert not lines & set(units[uid].paragraphs), f"{lang}: held-out text of {uid} in the training text"
    # The dev split is the same task over the other units: none of it is held out, all of its text is training text.
    dev = load_corpus(tmp_path / "split" / "dev" / "en" / "corpus.jsonl")
    assert dev and not set(dev) & held_out
    assert counts["en"]["dev_queries"] == len(load_queries(tmp_path / "split" / "dev" / "en" / "queries.jsonl"))
    lines = set((tmp_path / "split" / "unlabelled" / "en.txt").read_text(encoding="utf-8").splitlines())
    for uid in dev:
        assert set(english[uid].paragraphs) <= lines, f"dev text of {uid} missing from the training text"
    load_beir(tmp_path / "split" / "dev" / "en")
    # Only the benchmark's own folders are languages: dev/ and unlabelled/ are not.
    assert set(evaluate_model("bm25", tmp_path / "split", show_progress_bar=False)["per_language"]) <= set(roots)
    with pytest.raises(ValueError, match="between 0 and 1"):
        build_doc_benchmark(source, roots, tmp_path, eval_fraction=1.0)
    with pytest.raises(ValueError, match="must include 'en'"):
        build_doc_benchmark(source, {"de": HTML_DOCS / "de"}, tmp_path)


def test_fetch_packages_explains_a_missing_apt(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(FileNotFoundError, match="apt-get"):
        fetch_packages(["debian-reference-en"], tmp_path)
    # Packages already unpacked are reused without apt.
    (tmp_path / "debian-reference-en").mkdir()
    assert fetch_packages(["debian-reference-en"], tmp_path) == {
        "debian-reference-en": tmp_path / "debian-reference-en"
    }


def test_a_package_with_two_html_folders_gives_the_one_its_language_names(tmp_path):
    """libreoffice-help-ca ships help/ca/text and help/ca-valencia/text: the language picks its own."""
    from benchmark_sets.libreoffice_help import LIBREOFFICE_HELP
    from benchmark_sets.translated_docs import _html_root

    for name in ("ca", "ca-valencia"):
        (tmp_path / "usr" / "share" / "libreoffice" / "help" / name / "text").mkdir(parents=True)
    assert _html_root(tmp_path, LIBREOFFICE_HELP, "ca").parent.name == "ca"
    with pytest.raises(FileNotFoundError, match="found 2"):
        _html_root(tmp_path, LIBREOFFICE_HELP, "oc")  # neither is named after it: no guess
