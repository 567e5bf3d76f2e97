"""The whole-corpus study's tools: the dev sample and the dev curves."""

import json
from pathlib import Path

import pytest

from comparison.long_run import curves, main, sample_dev
from evaluation.data import load_beir

BEIR_TINY = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
PROMPTS = {"query": "query: ", "document": "passage: "}


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


def _finished_run(run_dir: Path, final_model, checkpoint_model, tokenizer, steps: int, checkpoint_step: int) -> None:
    """A run folder as `automlm-train` leaves it with keep_checkpoints: `final/` and the newest checkpoint."""
    import torch
    from safetensors.torch import save_model

    from training.checkpoints import write_manifest
    from training.export import export_sentence_transformers

    export_sentence_transformers(final_model, tokenizer, run_dir / "final", max_seq_length=16, prompts=PROMPTS)
    (run_dir / "final" / "training_metrics.json").write_text(json.dumps({"steps": steps, "exported_step": 1}))
    (run_dir / "final" / "training_config.json").write_text(json.dumps({"data": {"max_seq_length": 16}}))
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{checkpoint_step}"
    checkpoint.mkdir(parents=True)
    save_model(checkpoint_model, str(checkpoint / "model.safetensors"))
    torch.save({"step": checkpoint_step}, checkpoint / "custom_checkpoint_0.pkl")
    write_manifest(checkpoint, checkpoint_step)


def test_the_last_step_is_exported_from_the_newest_checkpoint_with_the_final_folder_s_settings(
    tmp_path, make_model, tokenizer
):
    import torch
    from sentence_transformers import SentenceTransformer

    from comparison.long_run import export_last
    from modeling_automlm import AutoMLMForPreTraining

    best, last_step = make_model(seed=0), make_model(seed=1)
    _finished_run(tmp_path / "run", best, last_step, tokenizer, steps=3, checkpoint_step=3)
    folder, step = export_last(tmp_path / "run")
    assert (folder, step) == (tmp_path / "run" / "last", 3)
    loaded = AutoMLMForPreTraining.from_pretrained(folder).state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in last_step.state_dict().items())
    assert not torch.equal(loaded["automlm.encoder.embeddings.word_embeddings.weight"],
                           best.state_dict()["automlm.encoder.embeddings.word_embeddings.weight"])  # fmt: skip
    final = SentenceTransformer(str(tmp_path / "run" / "final"), trust_remote_code=True)
    exported = SentenceTransformer(str(folder), trust_remote_code=True)
    assert (exported.max_seq_length, exported.prompts) == (final.max_seq_length, final.prompts) == (16, PROMPTS)

    _finished_run(tmp_path / "cut", best, last_step, tokenizer, steps=4, checkpoint_step=3)
    with pytest.raises(ValueError, match=r"newest checkpoint is step 3, the run ended at step 4.*keep_checkpoints"):
        export_last(tmp_path / "cut")
    assert not (tmp_path / "cut" / "last").exists()


def test_the_scores_compare_each_step_choice_with_the_untouched_encoder_and_the_other_system(tmp_path, monkeypatch):
    import torch

    import comparison.drift
    import comparison.long_run as long_run
    import comparison.runner

    runs = tmp_path / "runs"
    (runs / "untouched" / "final").mkdir(parents=True)
    (runs / "untouched" / "final" / "config.json").write_text("{}")
    for system, exported in (("cl_automlm", 100), ("cl_only", 300), ("cl_automlm_capped", 200)):
        (runs / f"{system}-lr1e-5" / "final").mkdir(parents=True)
        (runs / f"{system}-lr1e-5" / "final" / "training_metrics.json").write_text(
            json.dumps({"steps": 400, "exported_step": exported})
        )
    (runs / "cl_only-lr2.5e-6" / "checkpoints").mkdir(parents=True)  # not finished: not scored
    monkeypatch.setattr(long_run, "export_last", lambda run_dir: (run_dir / "last", 400))
    sample = comparison.drift.TrainingSample(["a", "b", "c"], "query: ", 32)
    monkeypatch.setattr(comparison.drift, "sample_sentences", lambda configs, count, seed: sample)
    measured = []

    def gradient_norms(folder, sample):
        measured.append(folder.relative_to(runs).as_posix())
        return {"grad_norm_cl": 2.0} if "cl_only" in str(folder) else {"grad_norm_cl": 0.5, "grad_norm_auto_mlm": 1.5}

    score_of = {"untouched": 0.5, "cl_automlm-lr1e-5": 0.6, "cl_only-lr1e-5": 0.7, "cl_automlm_capped-lr1e-5": 0.68}
    evaluated = []

    def evaluate_one(model, name, data, pivot, out, max_seq_length):
        evaluated.append((Path(model).relative_to(runs).as_posix(), out.name, max_seq_length))
        value = score_of[Path(model).parent.name] + (0.05 if Path(model).name == "last" else 0.0)
        per_query = {"en": {f"q{i}": {"ndcg@10": value} for i in range(20)}}
        return {"macro": {"ndcg@10": value}, "per_language": {"en": {"ndcg@10": value}}, "per_query": per_query}

    def load_encoder(folder, max_seq_length):
        sign = -1.0 if folder.name == "last" else 1.0

        def encode(texts):
            assert texts == ["query: a", "query: b", "query: c"]
            return sign * torch.eye(3)

        return encode

    monkeypatch.setattr(comparison.runner, "evaluate_one", evaluate_one)
    monkeypatch.setattr(comparison.drift, "load_encoder", load_encoder)
    monkeypatch.setattr(long_run, "gradient_norms", gradient_norms)
    report = long_run.score(runs, tmp_path / "test")

    assert sorted(evaluated) == sorted([
        ("untouched/final", "untouched.json", 32),
        ("cl_automlm-lr1e-5/final", "cl_automlm-lr1e-5-dev-best.json", 32),
        ("cl_automlm-lr1e-5/last", "cl_automlm-lr1e-5-last.json", 32),
        ("cl_only-lr1e-5/final", "cl_only-lr1e-5-dev-best.json", 32),
        ("cl_only-lr1e-5/last", "cl_only-lr1e-5-last.json", 32),
        ("cl_automlm_capped-lr1e-5/final", "cl_automlm_capped-lr1e-5-dev-best.json", 32),
        ("cl_automlm_capped-lr1e-5/last", "cl_automlm_capped-lr1e-5-last.json", 32),
    ])  # fmt: skip
    assert "| cl_automlm-lr1e-5 dev-best | 100 | 0.6000 | +0.100 [+0.100, +0.100] | 1.000 |" in report
    assert "| 0.5 | 1.5 | - |" in report  # the norms as measured (the ratio is the measurement's, mocked here)
    assert "| cl_only-lr1e-5 last | 400 | 0.7500 | +0.250 [+0.250, +0.250] | -1.000 | -4.00 | 2 | - | - |" in report
    assert "| untouched | 0 | 0.5000 | +0.000 [+0.000, +0.000] | 1.000 | -4.00 | - | - | - |" in report
    assert len(measured) == 6 and "untouched/final" not in measured  # a random head says nothing: not measured
    assert "| cl_automlm-lr1e-5 last minus cl_only-lr1e-5 last | -0.100 [-0.100, -0.100] |" in report
    assert "| cl_automlm_capped-lr1e-5 dev-best minus cl_only-lr1e-5 dev-best | -0.020 [-0.020, -0.020] |" in report
    assert "| cl_automlm_capped-lr1e-5 last minus cl_automlm-lr1e-5 last | +0.080 [+0.080, +0.080] |" in report
    assert report.count(" minus cl_") == 6  # three pairs, two step choices each
    numbers = json.loads((runs / "scores.json").read_text())
    assert numbers["cl_only-lr1e-5 dev-best"]["step"] == 300 and numbers["untouched"]["cos_to_reference"] == 1.0
    assert "cl_only-lr2.5e-6 dev-best" not in numbers
    assert long_run.score(runs, tmp_path / "test") == report and len(measured) == 6  # measured once per model


def test_the_gradient_norms_are_each_term_s_at_the_encoder_and_repeat_exactly(
    tmp_path, make_model, tokenizer, sentences
):
    from comparison.drift import TrainingSample
    from comparison.long_run import gradient_norms
    from training.export import export_sentence_transformers

    sample = TrainingSample(sentences[:8], "query: ", 16)
    export_sentence_transformers(make_model(auto_mlm_weight=0.1), tokenizer, tmp_path / "method")
    norms = gradient_norms(tmp_path / "method", sample, batches=2, batch_size=4)
    assert set(norms) == {"grad_norm_cl", "grad_norm_auto_mlm", "grad_ratio_auto_mlm"}
    assert norms["grad_norm_cl"] > 0 and norms["grad_norm_auto_mlm"] > 0
    assert gradient_norms(tmp_path / "method", sample, batches=2, batch_size=4) == norms  # masks and dropout seeded
    export_sentence_transformers(make_model(auto_mlm_weight=0.0), tokenizer, tmp_path / "cl")
    assert set(gradient_norms(tmp_path / "cl", sample, batches=2, batch_size=4)) == {"grad_norm_cl"}
    with pytest.raises(ValueError, match="need 40 sentences, not 8"):
        gradient_norms(tmp_path / "cl", sample, batches=10, batch_size=4)


def test_another_seed_runs_in_its_own_folder_and_charts_beside_the_first(tmp_path, monkeypatch):
    import comparison.long_run as long_run

    assert long_run.parse_run_name("cl_automlm-lr2.5e-6") == ("cl_automlm", "2.5e-6", None)
    assert long_run.parse_run_name("cl_only-lr2.5e-6-seed1") == ("cl_only", "2.5e-6", 1)
    assert long_run.parse_run_name("untouched") is None and long_run.parse_run_name("test") is None
    runs, launched = tmp_path / "runs", []
    monkeypatch.setattr(long_run.subprocess, "run", lambda command, **kwargs: launched.append(command))
    long_run.train("cl_only", runs, tmp_path / "dev", seed=1)
    assert [c[c.index("--output_dir") + 1] for c in launched] == [
        str(runs / "cl_only-lr1e-5-seed1"), str(runs / "cl_only-lr2.5e-6-seed1")
    ]  # fmt: skip
    assert all(c[c.index("--seed") + 1] == "1" for c in launched)
    launched.clear()
    long_run.main(
        ["train", "cl_only", "--seed", "2", "--rate", "1e-5", "--runs_dir", str(runs), "--dev_data", str(tmp_path)]
    )
    assert [c[c.index("--output_dir") + 1] for c in launched] == [str(runs / "cl_only-lr1e-5-seed2")]

    history = [{"step": 0, "dev_ndcg@10": 0.5}, {"step": 100, "dev_ndcg@10": 0.6}]
    for name in ("cl_only-lr1e-5", "cl_only-lr1e-5-seed1"):
        (runs / name / "final").mkdir(parents=True)
        (runs / name / "final" / "training_metrics.json").write_text(json.dumps({"history": history}))
    (runs / "untouched" / "final").mkdir(parents=True)  # not a run: left out
    charted = []
    monkeypatch.setattr(long_run, "_plot", lambda systems, title, path: charted.append((sorted(systems), path.name)))
    table = long_run.curves(runs, tmp_path / "figures")
    assert "| cl_only-lr1e-5-seed1 | finished | 0.5000 | 0.6000 (100) | 0.6000 (100) |" in table
    assert "untouched" not in table
    assert charted == [(["cl_only", "cl_only seed 1"], "dev-ndcg-lr1e-5.png")]


def test_table_or_layers_swaps_only_the_embedding_table_both_ways(
    tmp_path, make_model, tokenizer, monkeypatch, capsys
):
    import torch

    import training.dev
    from comparison.long_run import main, table_or_layers
    from training.export import export_sentence_transformers

    runs, trained, untouched = tmp_path / "runs", make_model(seed=1), make_model(seed=2)
    _finished_run(runs / "cl_automlm-lr1e-5", make_model(seed=0), trained, tokenizer, steps=3, checkpoint_step=3)
    export_sentence_transformers(untouched, tokenizer, runs / "untouched" / "final")

    def parts(model):
        encoder = model.automlm.encoder
        return encoder.get_input_embeddings().weight, encoder.encoder.layer[0].attention.self.query.weight

    seen = []

    def dev_evaluate(model, tokenizer, data, max_length, query_prompt, document_prompt):
        table, layer = parts(model)
        seen.append((table.detach().clone(), layer.detach().clone(), max_length, query_prompt, document_prompt))
        return {"macro": {"ndcg@10": len(seen) / 10}}

    monkeypatch.setattr(training.dev, "dev_evaluate", dev_evaluate)
    scores = table_or_layers(runs / "cl_automlm-lr1e-5", runs / "untouched" / "final", BEIR_TINY)
    names = ["untouched", "as trained", "untouched table", "untouched layers, trained table"]
    assert scores == {name: (i + 1) / 10 for i, name in enumerate(names)}  # in the order evaluated
    (new_table, new_layer), (old_table, old_layer) = parts(trained), parts(untouched)
    assert not torch.equal(new_table, old_table) and not torch.equal(new_layer, old_layer)
    expected = [(old_table, old_layer), (new_table, new_layer), (old_table, new_layer), (new_table, old_layer)]
    for (table, layer, *settings), (want_table, want_layer) in zip(seen, expected, strict=True):
        assert torch.equal(table, want_table) and torch.equal(layer, want_layer)
        assert settings == [16, "query: ", "passage: "]  # the run's length and prompts

    monkeypatch.undo()  # the command line, with the real dev evaluation on a tiny model
    command = ["table-or-layers", "cl_automlm-lr1e-5", "--runs_dir", str(runs), "--dev_data", str(BEIR_TINY)]
    main(command)
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "| cl_automlm-lr1e-5, last step | dev nDCG@10 |"
    assert [row.split(" | ")[0] for row in rows[2:]] == [f"| {name}" for name in names]
    with pytest.raises(SystemExit) as exit_info:
        main([*command[:1], "cl_only-lr1e-5", *command[2:]])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cl_only-lr1e-5/final holds no model: train it first" in line
