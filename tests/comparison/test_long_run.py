"""The whole-corpus study's tools: the dev sample and the dev curves."""

import json
from pathlib import Path

import pytest

from comparison.long_run import curves, main, sample_dev
from evaluation.data import load_beir

BEIR_TINY = Path(__file__).parents[1] / "fixtures" / "beir_tiny"


def test_the_dev_sample_keeps_each_query_with_its_pages_and_fewer_distractors(tmp_path):
    counts = sample_dev(BEIR_TINY, tmp_path / "sample", languages=["en", "de"], queries_per_language=2,
                        documents_per_language=3)  # fmt: skip
    assert counts == {"en": {"queries": 2, "documents": 3}, "de": {"queries": 2, "documents": 3}}
    for lang in ("en", "de"):
        queries, corpus, qrels = load_beir(tmp_path / "sample" / lang)
        _, full_corpus, full_qrels = load_beir(BEIR_TINY / lang)
        assert set(qrels) == set(queries) and all(qrels[q] == full_qrels[q] for q in qrels)
        assert {doc for q in qrels for doc in qrels[q]} <= set(corpus) <= set(full_corpus)
        assert all(corpus[doc] == full_corpus[doc] for doc in corpus)
    sample_dev(BEIR_TINY, tmp_path / "again", languages=["en"], queries_per_language=2,
                documents_per_language=3)  # fmt: skip
    assert load_beir(tmp_path / "again" / "en") == load_beir(tmp_path / "sample" / "en")  # a fixed seed
    with pytest.raises(ValueError, match=r"no folder for \['ja'\]"):
        sample_dev(BEIR_TINY, tmp_path / "x", languages=["ja"])


def test_the_curves_read_each_run_and_chart_each_rate(tmp_path):
    history = [{"step": 0, "dev_ndcg@10": 0.5}, {"step": 50, "loss": 1.0}, {"step": 100, "dev_ndcg@10": 0.6},
               {"step": 200, "dev_ndcg@10": 0.55}]  # fmt: skip
    for name in ("cl_automlm-lr1e-5", "cl_only-lr1e-5"):
        (tmp_path / "runs" / name / "final").mkdir(parents=True)
        (tmp_path / "runs" / name / "final" / "training_metrics.json").write_text(json.dumps({"history": history}))
    (tmp_path / "runs" / "cl_only-lr2.5e-6").mkdir()
    table = curves(tmp_path / "runs", tmp_path / "figures")
    assert "| cl_automlm-lr1e-5 | finished | 0.5000 | 0.6000 (100) | 0.5500 (200) |" in table
    assert "| cl_only-lr2.5e-6 | no checkpoint yet | - | - | - |" in table
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["dev-ndcg-lr1e-5.png", "dev-ndcg-lr2.5e-6.png"]


def test_a_missing_runs_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["curves", "--runs_dir", str(tmp_path / "missing")])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m comparison.long_run: ") and "missing" in line


def test_a_run_with_a_checkpoint_continues_and_a_finished_one_is_skipped(tmp_path, monkeypatch):
    import comparison.long_run as long_run
    from training.checkpoints import MANIFEST

    runs, dev = tmp_path / "runs", tmp_path / "dev"
    command = long_run.train_command("cl_only", "1e-5", runs, dev)
    assert command[-2:] == ["--output_dir", str(runs / "cl_only-lr1e-5")] and "--auto_mlm_weight" in command
    (runs / "cl_only-lr1e-5" / "checkpoints" / "checkpoint-100").mkdir(parents=True)
    (runs / "cl_only-lr1e-5" / "checkpoints" / "checkpoint-100" / MANIFEST).write_text("{}")
    assert long_run.train_command("cl_only", "1e-5", runs, dev)[-1] == "--resume"

    (runs / "cl_automlm-lr1e-5" / "final").mkdir(parents=True)
    (runs / "cl_automlm-lr1e-5" / "final" / "training_metrics.json").write_text("{}")
    launched = []
    monkeypatch.setattr(long_run.subprocess, "run", lambda command, **kwargs: launched.append(command))
    long_run.train("cl_automlm", runs, dev)
    assert [c[c.index("--learning_rate") + 1] for c in launched] == ["2.5e-6"]  # 1e-5 is finished
    assert "--auto_mlm_weight" not in launched[0] and "--resume" not in launched[0]
