import pytest

from comparison.report import mean_std, render_report


def result(shift: float) -> dict:
    per_query = {
        lang: {f"q{i}": {"ndcg@10": 0.1 * i + shift, "mrr@10": 0.5} for i in range(4)} for lang in ("de", "en")
    }
    per_language = {lang: {"ndcg@10": 0.15 + shift, "mrr@10": 0.5} for lang in per_query}
    return {"per_query": per_query, "per_language": per_language, "macro": {"ndcg@10": 0.15 + shift, "mrr@10": 0.5}}


def test_report_tables_verdicts_and_chart_links(tmp_path):
    pytest.importorskip("matplotlib")
    results = {"tiny-set": {"cl_only": [result(0.2), result(0.2)], "bm25": [result(0.0)]}}
    report = render_report(
        results,
        {"cl_only": [100.0, 120.0]},
        {"cl_only": {"alignment": [0.3, 0.5]}},
        variants=["cl_only"],
        method="cl_only",
        command="automlm-compare --seeds 0 1",
        header="Protocol `p.yaml`.",
        report_path=tmp_path / "docs" / "results" / "report.md",
        figures=tmp_path / "docs" / "figures",
    )
    lines = report.splitlines()
    assert lines[0] == "Protocol `p.yaml`. Command: `automlm-compare --seeds 0 1`."
    assert "| cl_only | 110.000 ± 14.142 | 0.400 ± 0.141 | - | - | - |" in lines
    assert "| system | de | en | **macro** |" in lines
    assert "| cl_only | 0.350 ± 0.000 | 0.350 ± 0.000 | **0.350 ± 0.000** |" in lines
    assert "| bm25 | 0.150 | 0.150 | **0.150** |" in lines  # one seed: no spread
    assert "| cl_only - bm25 | +0.200 | [+0.200, +0.200] | better |" in lines
    assert "Charts: [tiny-set-de](../figures/tiny-set-de.png), " in report
    assert sorted(p.name for p in (tmp_path / "docs" / "figures").iterdir()) == [
        "tiny-set-de.png", "tiny-set-en.png", "tiny-set-macro.png",
    ]  # fmt: skip


def test_mean_std():
    assert mean_std([0.5]) == "0.500"
    assert mean_std([0.1, 0.3]) == "0.200 ± 0.141"
