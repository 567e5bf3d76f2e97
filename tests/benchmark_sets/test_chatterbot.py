import json

import pytest

from benchmark_sets.chatterbot import dialogue_retrieval_set
from benchmark_sets.cli import main
from evaluation.data import load_beir


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
    # Held out means held out: no evaluation query or document (dev or test) is in the training text.
    for lang in languages:
        seen = set((unlabelled / f"{lang}.txt").read_text(encoding="utf-8").splitlines())
        for split in (tmp_path / lang, tmp_path / "dev" / lang):
            queries, corpus, _ = load_beir(split)
            assert not seen & {*queries.values(), *corpus.values()}, f"{split}: evaluation text in unlabelled/"
        dev_queries = set(load_beir(tmp_path / "dev" / lang)[0].values())
        assert len(dev_queries) == counts[lang]["dev_queries"] > 0
        assert not dev_queries & set(load_beir(tmp_path / lang)[0].values())  # dev and test questions differ
    assert "Gunther Cox" in (tmp_path / "LICENSE").read_text()
    assert "BSD" in (tmp_path / "README.md").read_text()


def test_dialogue_retrieval_set_deduplicates():
    pairs = [("hi", "hello"), ("hi", "hey"), ("hello", "hi"), ("hi", "hello"), ("yo", "hey")]
    queries, corpus, qrels = dialogue_retrieval_set(pairs)
    assert queries == {"q0": "hi", "q1": "hello", "q2": "yo"}
    assert corpus == {"d0": "hello", "d1": "hey", "d2": "hi"}
    assert qrels == {"q0": {"d0": 1, "d1": 1}, "q1": {"d2": 1}, "q2": {"d1": 1}}


def test_cli_without_the_corpus_package_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_corpus(name, *args, **kwargs):
        if name == "chatterbot_corpus":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_corpus)
    with pytest.raises(SystemExit) as exit_info:
        main(["chatterbot", "--output", str(tmp_path)])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("automlm-build-benchmark: ") and "pip install chatterbot-corpus" in error
    assert len(error.strip().splitlines()) == 1
