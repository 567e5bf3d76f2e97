"""The accelerate loop end to end: export, resume after a kill, checkpoint safety, two processes."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from tests.conftest import SENTENCES, tiny_encoder_config
from tests.training.conftest import TINY, run_args
from training.arguments import parse_args
from training.checkpoints import MANIFEST, complete_checkpoints
from training.train import train


@pytest.mark.slow
def test_training_exports_a_complete_folder_that_loads(corpus_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    summary = train(*parse_args(run_args(corpus_file, tmp_path / "out", "--max_steps", "6", "--save_steps", "0")))
    final = tmp_path / "out" / "final"
    for name in ("config.json", "model.safetensors", "modeling_automlm.py", "tokenizer.json", "modules.json",
                 "training_config.json", "training_metrics.json", "data_stats.json"):  # fmt: skip
        assert (final / name).is_file(), name
    metrics = json.loads((final / "training_metrics.json").read_text())
    assert metrics["steps"] == summary["steps"] == 6
    assert {"loss", "cl_loss", "auto_mlm_loss", "learning_rate", "sentences_per_s", "uniformity", "alignment"} <= set(
        metrics["history"][-1]
    )
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics["history"])
    stats = json.loads((final / "data_stats.json").read_text())
    assert stats["sentences_per_language"] == {"mixed": len(set(SENTENCES)) + 3 * len(SENTENCES)}
    embeddings = SentenceTransformer(str(final), trust_remote_code=True).encode(["where is my order"])
    assert embeddings.shape == (1, 32)


@pytest.mark.slow
def test_the_defaults_log_to_tensorboard_and_export_a_plain_copy(corpus_file, tmp_path):
    """What a user gets without `--report_to` and `--export_plain` (every other test turns both off)."""
    from sentence_transformers import SentenceTransformer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    defaults = {"--report_to", "--export_plain"}
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0")
    argv = [a for i, a in enumerate(argv) if a not in defaults and (i == 0 or argv[i - 1] not in defaults)]
    summary = train(*parse_args(argv))

    (events,) = (tmp_path / "out" / "logs" / "automlm").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events))
    scalars.Reload()
    history = {record["step"]: record for record in summary["history"]}
    assert sorted(history) == [2, 4]
    for key in ("loss", "cl_loss", "auto_mlm_loss", "learning_rate", "uniformity"):
        logged = {event.step: event.value for event in scalars.Scalars(key)}
        assert logged == pytest.approx({step: record[key] for step, record in history.items()}, rel=1e-6), key

    final, plain = tmp_path / "out" / "final", tmp_path / "out" / "final-plain"
    config = json.loads((plain / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config and not list(plain.glob("*.py"))
    expected = SentenceTransformer(str(final), trust_remote_code=True, device="cpu").encode(SENTENCES)
    embeddings = SentenceTransformer(str(plain), device="cpu").encode(SENTENCES)
    torch.testing.assert_close(torch.as_tensor(embeddings), torch.as_tensor(expected), atol=1e-5, rtol=1e-4)


def test_an_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(corpus_file, tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        train(*parse_args(run_args(corpus_file, tmp_path / "out", "--resume")))
    (tmp_path / "out" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "checkpoint-5" / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(*parse_args(run_args(corpus_file, tmp_path / "out")))


@pytest.mark.parametrize("kind", ["missing folder", "folder without a model", "Hub id not in the cache"])
def test_a_backbone_that_cannot_be_loaded_ends_the_command_with_one_line(corpus_file, tmp_path, kind, capsys):
    from training.train import main

    backbone = {
        "missing folder": str(tmp_path / "no" / "such-encoder"),
        "folder without a model": str(tmp_path),
        "Hub id not in the cache": "automlm-tests/not-in-any-cache",  # HF_HUB_OFFLINE=1 (tests/conftest.py)
    }[kind]
    with pytest.raises(SystemExit) as stopped:
        main(run_args(corpus_file, tmp_path / "out", "--backbone", backbone))
    assert stopped.value.code == 1
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith(f"automlm-train: --backbone {backbone}: ") and "\n" not in message
    assert "'scratch'" in message  # the fix is named
    if kind == "Hub id not in the cache":
        assert "HF_HUB_OFFLINE=1" in message


@pytest.mark.parametrize("case", ["output_dir is a file", "config not YAML", "config not JSON", "batch of one"])
def test_bad_input_ends_the_command_with_one_line_and_touches_nothing(corpus_file, tmp_path, case, capsys):
    from training.train import main

    existing = tmp_path / "out"  # a finished run's folder: must be left exactly as it is
    existing.mkdir()
    (existing / "model.safetensors").write_bytes(b"weights")
    extra, expected = {
        "output_dir is a file": (["--output_dir", str(corpus_file)], "is a file, not a folder"),
        "config not YAML": (["--config", str(_write(tmp_path / "bad.yaml", "model: [unclosed\n"))], "not valid YAML"),
        "config not JSON": (["--config", str(_write(tmp_path / "bad.json", '{"model": '))], "not valid JSON"),
        "batch of one": (["--per_device_train_batch_size", "1"], "InfoNCE has no negative"),
    }[case]
    before = corpus_file.read_bytes()
    with pytest.raises(SystemExit) as stopped:
        main([*run_args(corpus_file, existing), *extra])
    assert stopped.value.code == 1
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith("automlm-train: ") and expected in message and "\n" not in message
    assert sorted(p.name for p in existing.iterdir()) == ["model.safetensors"]
    assert (existing / "model.safetensors").read_bytes() == b"weights" and corpus_file.read_bytes() == before


def test_a_disk_without_room_for_a_checkpoint_ends_the_command_with_one_line(
    corpus_file, tmp_path, monkeypatch, capsys
):
    import shutil

    from training.train import main

    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    with pytest.raises(SystemExit) as stopped:
        main(run_args(corpus_file, tmp_path / "out"))
    assert stopped.value.code == 1
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith("automlm-train: --output_dir ") and "GB free" in message and "\n" not in message
    # Stopped before any step: at most the tokenizer a run from scratch trains first.
    assert not {"checkpoints", "final"} & {p.name for p in (tmp_path / "out").glob("*")}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.slow
def test_the_console_shows_one_line_per_dev_evaluation(corpus_file, tmp_path):
    dev = Path(__file__).parents[1] / "fixtures" / "beir_tiny"  # two languages
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0", "--eval_steps", "2",
                    "--dev_data", str(dev))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "training.train", *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)  # fmt: skip
    lines = done.stderr.splitlines()
    dev_lines = [line for line in lines if ": dev ndcg@10 " in line]
    assert [line.split("step ")[1].split(":")[0] for line in dev_lines] == ["0", "2", "4"]
    assert all("best" in line and "Auto-MLM head rebuilds" in line for line in dev_lines)
    assert not [line for line in lines if "evaluation.evaluate" in line and ("en: {" in line or "de: {" in line)]
    assert not [line for line in lines if "training.progress" in line]  # the lines per logging step: in the log file
    log = (tmp_path / "out" / "train.log").read_text()
    assert "training.progress: step 2: " in log and "evaluation.evaluate" in log and ": dev ndcg@10 " in log
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(results[0]["per_language"]) == {"de", "en"}  # the per-language numbers are kept, off the console


@pytest.mark.slow
def test_a_complete_run_leaves_the_exports_not_its_training_state(corpus_file, tmp_path):
    dev = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
                    "--dev_data", str(dev))  # fmt: skip
    train(*parse_args(argv))
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "checkpoints" not in left and "best" not in left and "final" in left
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_only_complete_checkpoints_count(tmp_path):
    for name, complete in [("checkpoint-10", True), ("checkpoint-20", False), ("tmp-checkpoint-30", True),
                           ("checkpoint-5", True)]:  # fmt: skip
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / MANIFEST).write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10"]


def _weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "final" / "model.safetensors")


@pytest.mark.slow
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_weights(corpus_file, tokenizer, tmp_path):
    # A pretrained backbone folder: a tokenizer trained from scratch differs between processes (the tokenizers
    # trainer breaks ties in hash order), which would make the two runs differ before any resuming.
    backbone = tmp_path / "backbone"
    torch.manual_seed(0)
    AutoModel.from_config(tiny_encoder_config("bert", len(tokenizer), tokenizer.pad_token_id)).save_pretrained(
        backbone
    )
    tokenizer.save_pretrained(backbone)
    # With the anchor: a resumed run must anchor to the starting encoder, not to the checkpoint it resumed from.
    steps = ["--backbone", str(backbone), "--max_steps", "60", "--save_steps", "10", "--save_total_limit", "2",
             "--num_threads", "1", "--anchor_weight", "0.5"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "training.train"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, *run_args(corpus_file, interrupted, *steps)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not complete_checkpoints(interrupted / "checkpoints") and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "final").exists(), "the run finished before it was killed; the test proves nothing"
    killed_at = complete_checkpoints(interrupted / "checkpoints")[-1].name
    subprocess.run([*command, *run_args(corpus_file, interrupted, *steps, "--resume")], env=env, check=True,
                   capture_output=True)  # fmt: skip

    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run([*command, *run_args(corpus_file, uninterrupted, *steps)], env=env, check=True, capture_output=True)
    resumed, reference = _weights(interrupted), _weights(uninterrupted)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs after resuming from {killed_at}"
    history = json.loads((interrupted / "final" / "training_metrics.json").read_text())["history"]
    assert history[-1]["step"] == 60


@pytest.mark.slow
def test_streaming_a_dataset_larger_than_memory(tmp_path):
    folder = tmp_path / "stream"
    folder.mkdir()
    rows = [{"question": f"{s} {i}"} for i, s in enumerate(SENTENCES * 5)] + [{"question": "  "}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    argv = [*TINY, "--dataset_name", str(folder), "--streaming", "--text_column", "question",
            "--output_dir", str(tmp_path / "out"), "--max_steps", "14", "--save_steps", "0"]  # fmt: skip
    summary = train(*parse_args(argv))
    assert summary["steps"] == 14  # more than one pass over the 80-sentence stream (10 batches of 8)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_resuming_from_scratch_reuses_the_run_tokenizer(corpus_file, tmp_path):
    from training.model import build_tokenizer

    model_args, data_args, _ = parse_args(run_args(corpus_file, tmp_path / "out"))
    folder = tmp_path / "out" / "tokenizer"
    with pytest.raises(ValueError, match="holds no tokenizer"):
        build_tokenizer(model_args, data_args, SENTENCES, folder, train_new=False)
    trained = build_tokenizer(model_args, data_args, SENTENCES, folder, train_new=True)
    assert (
        build_tokenizer(model_args, data_args, ["other text"], folder, train_new=False).get_vocab()
        == trained.get_vocab()
    )


@pytest.mark.slow
def test_dev_evaluation_tracks_the_best_step_and_exports_it(corpus_file, tmp_path):
    dev = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "6", "--save_steps", "2", "--eval_steps", "2",
                    "--dev_data", str(dev), "--save_total_limit", "1", "--keep_checkpoints")  # fmt: skip
    summary = train(*parse_args(argv))
    dev_records = [r for r in summary["history"] if "dev_ndcg@10" in r]
    assert [r["step"] for r in dev_records] == [0, 2, 4, 6]  # step 0: the model it started from is a candidate
    best = max(dev_records, key=lambda r: r["dev_ndcg@10"])
    assert summary["best_step"] == best["step"]
    results = json.loads((tmp_path / "out" / "final" / "eval_results.json").read_text())
    assert results[0]["split"] == "dev"
    assert results[0]["macro"]["ndcg@10"] == pytest.approx(best["dev_ndcg@10"])
    checkpoints = [p.name for p in complete_checkpoints(tmp_path / "out" / "checkpoints")]
    assert "checkpoint-6" in checkpoints
    if best["step"]:
        assert f"checkpoint-{best['step']}" in checkpoints  # the best is kept
    card = (tmp_path / "out" / "final" / "README.md").read_text()
    assert "automlm" in card
    # The Auto-MLM head is probed on held-out sentences at every dev evaluation; the export's figure is the best
    # step's, and the card states it with the head's provenance.
    probe_keys = (
        "auto_mlm_heldout_accuracy",
        "auto_mlm_heldout_accuracy_other_vector",
        "auto_mlm_heldout_vector_share",
    )
    assert all(all(key in r for key in probe_keys) for r in dev_records)
    assert summary["exported_step"] == best["step"]
    assert summary["auto_mlm_head"] == {key: best[key] for key in probe_keys}
    assert "Its Auto-MLM head rebuilds" in card and "auto_mlm_head_source.json" in card
    assert (tmp_path / "out" / "final" / "auto_mlm_head_source.json").is_file()


def trace_the_loop(monkeypatch) -> list[dict[str, Any]]:
    """Hooks on the model and the optimizer that `train` sets up (after the Auto-MLM head is pretrained).

    Returns one record per optimizer step: the rows of each model forward, the calls of a linear layer inside the
    encoder's first layer (checkpointing runs it again in the backward), the dtypes of the encoder's linear outputs,
    the masks drawn (word ids and labels), and, for each backward, the gradient it added to the word embeddings and
    their `.grad` after it."""
    import training.build as build

    steps: list[dict[str, Any]] = []

    def fresh() -> dict[str, Any]:
        return {"rows": [], "layer_calls": 0, "dtypes": set(), "masks": [], "added": [], "grads": []}

    trace = fresh()
    build_optimizer = build.build_optimizer

    def traced_build_optimizer(model, args):
        optimizer = build_optimizer(model, args)

        def on_forward(module, args, kwargs):
            trace["rows"].append(kwargs["input_ids"].shape[0])

        def on_layer(module, args, output):
            trace["layer_calls"] += 1

        def on_step(optimizer, args, kwargs):
            nonlocal trace
            steps.append(trace)
            trace = fresh()

        mask = model.mask

        def traced_mask(input_ids, attention_mask, word_ids=None, special_tokens_mask=None, generator=None):
            masked, labels = mask(input_ids, attention_mask, word_ids, special_tokens_mask, generator)
            trace["masks"].append((word_ids, labels))
            return masked, labels

        model.register_forward_pre_hook(on_forward, with_kwargs=True)
        first_layer = model.automlm.encoder.encoder.layer[0]  # checkpointed as a whole: what is inside it runs again
        next(m for m in first_layer.modules() if isinstance(m, torch.nn.Linear)).register_forward_hook(on_layer)
        for module in model.automlm.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda module, args, output: trace["dtypes"].add(output.dtype))
        model.mask = traced_mask
        weight = model.get_input_embeddings().weight
        weight.register_hook(lambda grad: trace["added"].append(grad.detach().clone()))
        weight.register_post_accumulate_grad_hook(lambda p: trace["grads"].append(p.grad.detach().clone()))
        optimizer.register_step_pre_hook(on_step)
        return optimizer

    monkeypatch.setattr(build, "build_optimizer", traced_build_optimizer)
    return steps


def assert_whole_words_masked(word_ids: torch.Tensor, labels: torch.Tensor) -> int:
    """Each word's tokens are all masked or none; returns how many masked words have more than one token."""
    multi_token = 0
    for row_words, row_labels in zip(word_ids.tolist(), labels.tolist()):
        for word in set(row_words) - {-1}:
            masked = {label != -100 for w, label in zip(row_words, row_labels) if w == word}
            assert len(masked) == 1, f"word {word} of {row_words} is partly masked: {row_labels}"
            multi_token += masked == {True} and row_words.count(word) > 1
    return multi_token


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ["--gradient_checkpointing", "--gradient_accumulation_steps", "2"],
        ["--mixed_precision", "bf16", "--lr_scheduler_type", "cosine", "--logging_steps", "1"],
        ["--masking_scheme", "whole_word", "--mlm_weight", "0.1", "--head_fusion", "concat"],
        ["--gradient_cache_chunk_size", "3"],
    ],
    ids=["checkpointing+accumulation", "bf16+cosine", "whole words", "gradient cache"],
)
def test_loop_options(corpus_file, tmp_path, monkeypatch, options):
    """Each option does what it says, seen from hooks on the model and the optimizer, not only finite losses."""
    steps = trace_the_loop(monkeypatch)
    summary = train(*parse_args(run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0",
                                         *options)))  # fmt: skip
    assert summary["steps"] == 4 and summary["nonfinite_steps"] == 0
    assert all(math.isfinite(record["loss"]) for record in summary["history"])
    assert len(steps) == 4  # optimizer steps
    accumulation = 2 if "--gradient_accumulation_steps" in options else 1
    assert summary["sentences_seen"] == 4 * 8 * accumulation
    for step in steps:
        if "--gradient_cache_chunk_size" in options:  # chunks of 3 of the batch of 8, without then with a graph
            assert step["rows"] == [3, 3, 2, 3, 3, 2]
        else:  # every micro-batch of the step, whole
            assert step["rows"] == [8] * accumulation
        # Gradients add up over the backwards of a step (micro-batches, chunks) before the update.
        backwards = 3 if "--gradient_cache_chunk_size" in options else accumulation
        assert len(step["added"]) == len(step["grads"]) == backwards
        torch.testing.assert_close(torch.stack(step["grads"]), torch.stack(step["added"]).cumsum(0))
        # Checkpointed layers run again in the backward.
        assert step["layer_calls"] == len(step["rows"]) * (2 if "--gradient_checkpointing" in options else 1)
        # bf16: the encoder's matrix products run under autocast.
        assert step["dtypes"] == {torch.bfloat16 if "bf16" in options else torch.float32}
    rates = {record["step"]: record["learning_rate"] for record in summary["history"]}
    if "cosine" in options:  # no warmup in 4 steps (warmup_ratio 0.1)
        assert rates == pytest.approx({s: 1e-3 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in (1, 2, 3, 4)})
    else:
        assert rates == pytest.approx({s: 1e-3 * (1 - s / 4) for s in (2, 4)})
    masks = [mask for step in steps for mask in step["masks"]]
    assert len(masks) == 4 * accumulation
    if "whole_word" in options:
        assert sum(assert_whole_words_masked(word_ids, labels) for word_ids, labels in masks) > 0
        assert "mlm_loss" in summary["history"][-1]
        assert json.loads((tmp_path / "out" / "final" / "config.json").read_text())["head_fusion"] == "concat"
    else:
        assert all(word_ids is None for word_ids, _ in masks)


def test_the_log_shows_a_small_learning_rate_instead_of_zero(corpus_file, tmp_path, caplog):
    # A pretrained encoder trains at 5e-6; four decimal places printed it as 0.0.
    with caplog.at_level(logging.INFO, logger="training.progress"):
        train(*parse_args(run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0",
                                   "--learning_rate", "5e-6", "--warmup_ratio", "0")))  # fmt: skip
    steps = [record.args[1] for record in caplog.records if record.msg == "step %d: %s"]
    assert steps and steps[0]["learning_rate"] == pytest.approx(2.5e-6)  # step 2 of 4, linear decay


def test_nonfinite_losses_are_skipped_then_stop_the_run(corpus_file, tmp_path, monkeypatch):
    from modeling_automlm import AutoMLMForPreTraining

    original = AutoMLMForPreTraining.forward

    def poisoned(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(AutoMLMForPreTraining, "forward", poisoned)
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "10", "--save_steps", "0",
                    "--max_nonfinite_steps", "2")  # fmt: skip
    with pytest.raises(RuntimeError, match="3 steps had a non-finite loss"):
        train(*parse_args(argv))
    assert not (tmp_path / "out" / "final").exists()


def test_untrained_export_reuses_a_run_tokenizer_and_is_seeded(corpus_file, tmp_path):
    from training.export import export_untrained

    model_args, data_args, _ = parse_args(run_args(corpus_file, tmp_path / "out"))
    first = export_untrained(model_args, data_args, 7, tmp_path / "tok", tmp_path / "a", train_tokenizer=True)
    again = export_untrained(model_args, data_args, 7, tmp_path / "tok", tmp_path / "b", train_tokenizer=False)
    other = export_untrained(model_args, data_args, 8, tmp_path / "tok", tmp_path / "c", train_tokenizer=False)
    a, b, c = (load_file(folder / "model.safetensors") for folder in (first, again, other))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)
    assert (first / "modules.json").is_file()


@pytest.mark.parametrize("option", ["--freeze_word_embeddings", "--head_warmup_steps"])
def test_frozen_word_embeddings_and_head_warmup_leave_the_encoder_as_it_was(corpus_file, tmp_path, option):
    from training.export import export_untrained

    value = "true" if option == "--freeze_word_embeddings" else "3"
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "3", "--save_steps", "0", option, value)
    train(*parse_args(argv))
    model_args, data_args, _ = parse_args(argv)
    start = export_untrained(model_args, data_args, 42, tmp_path / "out" / "tokenizer", tmp_path / "start",
                             train_tokenizer=False)  # fmt: skip
    before, after = load_file(start / "model.safetensors"), load_file(tmp_path / "out" / "final" / "model.safetensors")
    word_embeddings = "automlm.encoder.embeddings.word_embeddings.weight"
    torch.testing.assert_close(after[word_embeddings], before[word_embeddings], rtol=0, atol=0)
    encoder = [name for name in before if name.startswith("automlm.") and name != word_embeddings]
    heads = [name for name in before if not name.startswith("automlm.")]
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= set(heads + encoder)
    if option == "--head_warmup_steps":  # only the heads moved
        assert changed <= set(heads)
    else:  # everything else trains
        assert changed & set(encoder)


def test_the_anchor_holds_the_embeddings_near_the_starting_encoder(corpus_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    from training.export import export_untrained

    drift, history = {}, {}
    for weight in ("0", "50"):
        argv = run_args(corpus_file, tmp_path / weight, "--max_steps", "10", "--save_steps", "0", "--learning_rate",
                        "3e-3", "--anchor_weight", weight)  # fmt: skip
        history[weight] = train(*parse_args(argv))["history"]
        model_args, data_args, _ = parse_args(argv)
        tokenizer_dir, start = tmp_path / weight / "tokenizer", tmp_path / f"start-{weight}"
        start = export_untrained(model_args, data_args, 42, tokenizer_dir, start, train_tokenizer=False)
        before, after = (SentenceTransformer(str(folder), trust_remote_code=True, device="cpu") for folder in
                         (start, tmp_path / weight / "final"))  # fmt: skip
        cosine = torch.nn.functional.cosine_similarity(
            torch.as_tensor(before.encode(SENTENCES)), torch.as_tensor(after.encode(SENTENCES))
        )
        drift[weight] = 1 - cosine.mean().item()
    assert "anchor_loss" not in history["0"][-1]
    for record in history["50"]:  # the logged loss is the objective the step minimised, anchor included
        expected = record["cl_loss"] + 0.1 * record["auto_mlm_loss"] + 50 * record["anchor_loss"]
        assert record["loss"] == pytest.approx(expected, rel=1e-4)
    assert drift["0"] > 0.01, "without the anchor the encoder did not move: the test proves nothing"
    assert drift["50"] < drift["0"] / 2, drift


@pytest.mark.parametrize("head_learning_rate", [None, 1e-2])
def test_the_heads_get_their_own_learning_rate(make_model, head_learning_rate):
    from training.arguments import PretrainingArguments
    from training.build import build_optimizer

    model = make_model(auto_mlm_weight=0.1, mlm_weight=0.1)
    args = PretrainingArguments(learning_rate=1e-5, head_learning_rate=head_learning_rate)
    optimizer = build_optimizer(model, args)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    names = dict(model.named_parameters())
    heads = [n for n in names if n.startswith(("auto_mlm_head.", "mlm_head."))]
    assert heads and len(rate) == len(names)  # every parameter once, the heads included
    for name, parameter in names.items():
        expected = head_learning_rate if name in heads and head_learning_rate else 1e-5
        assert rate[id(parameter)] == expected, name
        assert decay[id(parameter)] == (0.0 if parameter.ndim < 2 or "norm" in name.lower() else 0.01), name
    assert len(optimizer.param_groups) == (4 if head_learning_rate else 2)


def test_when_step_0_is_best_on_dev_the_untouched_model_is_exported(corpus_file, tmp_path, monkeypatch):
    import training.dev as dev
    from training.export import export_untrained

    scores = iter([0.9, 0.5, 0.4])  # dev nDCG@10 at steps 0, 2, 4: training only made it worse

    def fake_dev_evaluate(*args, **kwargs):
        return {"macro": {"ndcg@10": next(scores)}, "split": "dev"}

    monkeypatch.setattr(dev, "dev_evaluate", fake_dev_evaluate)
    dev = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
    # A random head: `export_untrained`, the reference, does not pretrain one.
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0", "--eval_steps", "2",
                    "--dev_data", str(dev), "--head_pretraining_steps", "0")  # fmt: skip
    summary = train(*parse_args(argv))
    assert summary["best_step"] == 0
    model_args, data_args, _ = parse_args(argv)
    start = export_untrained(model_args, data_args, 42, tmp_path / "out" / "tokenizer", tmp_path / "start",
                             train_tokenizer=False)  # fmt: skip
    before, after = load_file(start / "model.safetensors"), load_file(tmp_path / "out" / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
