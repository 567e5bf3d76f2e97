import json
import re
from pathlib import Path

import pytest

from evaluation.cli import main

BEIR_TINY = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
METRICS = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"]


def test_cli_writes_json_and_prints_table(tmp_path, capsys):
    output = tmp_path / "results" / "bm25.json"
    main(["--model", "bm25", "--data", str(BEIR_TINY), "--output", str(output), "--no-progress-bar"])
    results = json.loads(output.read_text())
    assert list(results) == [
        "model",
        "dataset",
        "task",
        "max_seq_length",
        "prompts",
        "per_language",
        "macro",
        "per_query",
    ]
    assert (results["model"], results["dataset"], results["task"]) == ("bm25", "beir_tiny", "monolingual")
    assert results["max_seq_length"] is None
    assert set(results["per_language"]) == {"de", "en"}
    for scores in results["per_language"].values():
        assert set(scores) == {*METRICS, "num_queries", "num_documents"}
        assert (scores["num_queries"], scores["num_documents"]) == (4, 4)
    assert list(results["macro"]) == METRICS
    for name in METRICS:
        expected = (results["per_language"]["de"][name] + results["per_language"]["en"][name]) / 2
        assert results["macro"][name] == pytest.approx(expected)
    assert set(results["per_query"]["en"]) == {"q1", "q2", "q3", "q4"}
    assert set(results["per_query"]["en"]["q1"]) == set(METRICS)
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| language | " + " | ".join(METRICS) + " | queries | documents |"
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["de", "en", "**macro**"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "bm25", "--data", "data/no-such-set"], "is not a folder.*automlm-build-benchmark"),
        (["--model", "bm25", "--data", str(BEIR_TINY), "--languages", "xx"], r"No language folder \['xx'\]"),
        (["--model", "outputs/no-such-run/final", "--data", str(BEIR_TINY)], "not a model folder"),
        (["--model", "bm25", "--data", str(BEIR_TINY), "--k-values", "0"], "k_values must be positive"),
    ],
)
def test_cli_bad_input_is_one_line_naming_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("automlm-eval: ")
    assert len(error.strip().splitlines()) == 1, error
    assert "Traceback" not in error
    assert re.search(message, error), error


def test_bootstrap_command_compares_two_results_per_language(tmp_path, capsys):
    from evaluation.compare import main as bootstrap_main

    def result(model, scores):  # two languages, one query scoring 1.0 more for A in "en" only
        per_query = {lang: {f"q{i}": {"ndcg@10": s} for i, s in enumerate(values)} for lang, values in scores.items()}
        per_language = {lang: {"ndcg@10": sum(v) / len(v)} for lang, v in scores.items()}
        macro = {"ndcg@10": sum(p["ndcg@10"] for p in per_language.values()) / len(per_language)}
        return {"model": model, "per_query": per_query, "per_language": per_language, "macro": macro}

    a = result("A", {"en": [1.0] * 30, "de": [0.5] * 30})
    b = result("B", {"en": [0.0] * 30, "de": [0.5] * 30})
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    bootstrap_main([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    lines = {
        line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")
    }
    assert "A better" in lines["en"] and "+1.000" in lines["en"]
    assert "no significant difference" in lines["de"]
    assert "+0.500" in lines["macro"] and "A better" in lines["macro"]
    with pytest.raises(SystemExit):
        bootstrap_main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")])
    assert capsys.readouterr().err.count("\n") == 1
