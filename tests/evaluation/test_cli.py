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
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("automlm-eval: error: ")
    assert len(error.strip().splitlines()) == 1, error
    assert "Traceback" not in error
    assert re.search(message, error), error
