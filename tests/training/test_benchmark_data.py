import json
from dataclasses import replace
from pathlib import Path

import pytest

from training.benchmark_data import (
    DEBIAN_REFERENCE,
    build_doc_benchmark,
    dialogue_retrieval_set,
    fetch_packages,
    main,
    parse_html_folder,
    parse_html_sections,
    read_chatterbot_language,
    strip_section_number,
)
from training.evaluation import evaluate_model, load_beir, load_corpus, load_queries

FIXTURES = Path(__file__).parent.parent / "fixtures"
HTML_DOCS = FIXTURES / "html_docs"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_chatterbot_builder_on_the_installed_corpus(tmp_path, capsys):
    pytest.importorskip("chatterbot_corpus")
    main(["chatterbot", "--output", str(tmp_path)])
    counts = json.loads(capsys.readouterr().out)
    languages = sorted(p.name for p in tmp_path.iterdir() if (p / "queries.jsonl").is_file())
    assert len(languages) >= 10
    assert {"en", "de", "ja", "zh-Hans", "zh-Hant"} <= set(languages)
    assert languages == sorted(code for code, c in counts.items() if c["queries"])
    for lang in languages:
        queries, corpus, qrels = load_beir(tmp_path / lang)  # raises if a qrels id is missing
        assert len(queries) == counts[lang]["queries"] >= 10
        assert len(set(queries.values())) == len(queries), f"{lang}: duplicate query texts"
        assert len(set(corpus.values())) == len(corpus), f"{lang}: duplicate document texts"
        assert set(qrels) == set(queries)
        assert sum(len(docs) for docs in qrels.values()) == counts[lang]["pairs"] >= 50
        assert all(text.strip() == text and text for text in [*queries.values(), *corpus.values()])
    # Unlabelled text for every language, benchmark or not, and never read as a benchmark language.
    unlabelled = tmp_path / "unlabelled"
    assert {p.stem for p in unlabelled.glob("*.txt")} == set(counts)
    english = (unlabelled / "en.txt").read_text(encoding="utf-8").splitlines()
    assert len(english) == len(set(english)) == counts["en"]["unlabelled"]
    assert "Gunther Cox" in (tmp_path / "LICENSE").read_text()
    assert "BSD" in (tmp_path / "README.md").read_text()


def test_chatterbot_reader_handles_odd_entries(tmp_path):
    (tmp_path / "a.yml").write_text(
        """categories: [test]
conversations:
- - Hello
  - Hi there
  - How are you?
- - 42
  - yes
  - Fine
- - Question? - Answer.
- Is this a list? - No, a mis-indented string.
- - Outer
  - - Inner question
    - Inner answer
  - After
- - ""
  - Lonely
""",
        encoding="utf-8",
    )
    (tmp_path / "b.yml").write_text("conversations: [[unclosed", encoding="utf-8")  # not valid YAML: skipped
    (tmp_path / "c.yml").write_text("- just a list\n", encoding="utf-8")  # no conversations: skipped
    data = read_chatterbot_language(tmp_path)
    assert data.pairs == [
        ("Hello", "Hi there"),
        ("Hi there", "How are you?"),
        # `yes` is read as a boolean by YAML: skipped, and it breaks the chain; 42 keeps its text.
        ("Inner question", "Inner answer"),
    ]
    assert "42" in data.utterances
    assert "Is this a list? - No, a mis-indented string." in data.utterances
    assert "Lonely" in data.utterances and "" not in data.utterances
    assert data.skipped == 2  # `yes` and the empty string


def test_dialogue_retrieval_set_deduplicates():
    pairs = [("hi", "hello"), ("hi", "hey"), ("hello", "hi"), ("hi", "hello"), ("yo", "hey")]
    queries, corpus, qrels = dialogue_retrieval_set(pairs)
    assert queries == {"q0": "hi", "q1": "hello", "q2": "yo"}
    assert corpus == {"d0": "hello", "d1": "hey", "d2": "hi"}
    assert qrels == {"q0": {"d0": 1, "d1": 1}, "q1": {"d2": 1}, "q2": {"d1": 1}}


def test_html_sections_follow_headings_and_skip_navigation():
    html = (HTML_DOCS / "en" / "ch01.en.html").read_text(encoding="utf-8")
    sections = parse_html_sections(
        html, "ch01", skip_classes=DEBIAN_REFERENCE.skip_classes, clean_title=strip_section_number
    )
    assert [(s.id, s.title, s.level) for s in sections] == [
        ("ch01#_tutorials", "Chapter 1. Tutorials", 1),
        ("ch01#_the_shell_prompt", "The shell prompt", 2),
        ("ch01#_the_root_account", "The root account", 3),
        ("ch01#_virtual_consoles", "Virtual consoles", 2),
        ("ch01#_short", "Short", 2),
    ]
    by_id = {s.id: s for s in sections}
    # A parent section holds its own text only, not its subsections'; blocks and <br/> separate words.
    assert by_id["ch01#_the_shell_prompt"].paragraphs == [
        "After login the shell prompt shows your user name and the host name of the machine.",
        "Type a command and press Enter to run it.",
        "The output follows.",
    ]
    assert by_id["ch01#_tutorials"].text == (
        "This chapter teaches the basics of the command line to new users of the system."
    )
    text = " ".join(s.text for s in sections)
    for leak in ("script text", "Table of Contents", "1.1. The shell prompt", "footnote", "Chapter 2"):
        assert leak not in text


def test_html_anchor_fallbacks_and_text_before_the_first_heading():
    html = """<html><body><p>Intro &amp; more</p>
    <h1 id="top">Page title</h1><p>First <b>bold</b> words</p>
    <h2><a name="named"></a>Named</h2><ul><li>one</li><li>two</li></ul>
    <h2>No anchor</h2><p>text</p>
    <h2 id="top">Reused anchor</h2><p>again</p></body></html>"""
    sections = parse_html_sections(html, "page")
    assert [(s.id, s.title, s.paragraphs) for s in sections] == [
        ("page#", "", ["Intro & more"]),
        ("page#top", "Page title", ["First bold words"]),
        ("page#named", "Named", ["one", "two"]),
        ("page#h3", "No anchor", ["text"]),
        ("page#top~4", "Reused anchor", ["again"]),
    ]
    page = parse_html_folder(HTML_DOCS / "en", lambda relative: relative.split(".")[0], unit="page")
    assert list(page) == ["ch01"]
    assert page["ch01"].title == "Chapter 1. Tutorials"
    assert "1.1. The shell prompt" in page["ch01"].paragraphs  # later headings are part of the page's text


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
