"""What clusters and users do to a run: a damaged checkpoint, SIGTERM / SIGINT, a full disk."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import training.export as export_module
import training.train as loop
from tests.conftest import tiny_encoder_config
from tests.training.conftest import run_args as tiny_run_args
from training.arguments import parse_args
from training.checkpoints import DAMAGED_DIR, MANIFEST, complete_checkpoints, verify_checkpoint
from training.preemption import Preempted, StopSignals
from training.train import train


def run_args(corpus_file, output_dir, *extra):
    return tiny_run_args(corpus_file, output_dir, "--head_pretraining_steps", "0", *extra)  # a random head: faster


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":  # a node that died mid-copy
        path.write_bytes(data[: len(data) // 2])
    else:  # one flipped byte in the middle: same size, wrong content
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints that verify themselves
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_resume_sets_a_damaged_checkpoint_aside_and_falls_back_to_the_newest_intact_one(
    corpus_file, tmp_path, how, caplog
):
    output = tmp_path / "out"
    argv = run_args(corpus_file, output, "--max_steps", "4", "--save_steps", "2", "--keep_checkpoints")
    train(*parse_args(argv))
    newest = complete_checkpoints(output / "checkpoints")[-1]
    assert newest.name == "checkpoint-4" and verify_checkpoint(newest) is None
    damage(newest / "model.safetensors", how)
    expected = "has" if how == "truncate" else "does not match its checksum"
    assert expected in verify_checkpoint(newest)

    with caplog.at_level("INFO"):
        summary = train(*parse_args([*argv, "--resume"]))
    assert summary["steps"] == 4
    assert any("checkpoint-4 is damaged" in r.getMessage() for r in caplog.records)
    assert any("Resumed from" in r.getMessage() and r.getMessage().rstrip().endswith("at step 2")
               for r in caplog.records)  # fmt: skip
    kept = list((output / DAMAGED_DIR).iterdir())  # kept for inspection, never deleted
    assert len(kept) == 1 and kept[0].name.startswith("checkpoint-4")
    assert (kept[0] / MANIFEST).is_file()
    assert verify_checkpoint(complete_checkpoints(output / "checkpoints")[-1]) is None  # step 4, written anew


def test_resume_with_no_intact_checkpoint_stops_in_one_line(corpus_file, tmp_path):
    output = tmp_path / "out"
    argv = run_args(corpus_file, output, "--max_steps", "4", "--save_steps", "2", "--keep_checkpoints")
    train(*parse_args(argv))
    for checkpoint in complete_checkpoints(output / "checkpoints"):
        damage(checkpoint / "model.safetensors", "flip")
    before = sorted(p.name for p in (output / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=r"no intact checkpoint .*checkpoint-4: .*checkpoint-2: ") as error:
        train(*parse_args([*argv, "--resume"]))
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before  # nothing moved or deleted


# ----------------------------------------------------------------------------------------------------------------
# Preemption
# ----------------------------------------------------------------------------------------------------------------
def test_a_signal_sets_the_flag_and_a_second_one_aborts():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGTERM
    code = textwrap.dedent("""
        import os, signal, time
        from training.preemption import StopSignals
        with StopSignals():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        print("survived")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGINT and "survived" not in done.stdout


def test_a_signal_during_the_step_0_evaluation_is_honoured_when_it_ends(corpus_file, tmp_path, monkeypatch):
    evaluate = loop.evaluate

    def evaluate_and_get_signalled(run):
        os.kill(os.getpid(), signal.SIGTERM)
        evaluate(run)

    monkeypatch.setattr(loop, "evaluate", evaluate_and_get_signalled)
    dev = Path(__file__).parents[1] / "fixtures" / "beir_tiny"
    argv = run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps", "0", "--eval_steps", "2",
                    "--dev_data", str(dev))  # fmt: skip
    with pytest.raises(Preempted) as stop:
        train(*parse_args(argv))
    assert stop.value.exit_code == 143 and stop.value.step == 0
    assert [p.name for p in complete_checkpoints(tmp_path / "out" / "checkpoints")] == ["checkpoint-0"]
    monkeypatch.setattr(loop, "evaluate", evaluate)
    summary = train(*parse_args([*argv, "--resume"]))
    assert summary["steps"] == 4 and [r["step"] for r in summary["history"] if "dev_ndcg@10" in r] == [0, 2, 4]


def _backbone(tmp_path, tokenizer) -> Path:
    folder = tmp_path / "backbone"
    torch.manual_seed(0)
    AutoModel.from_config(tiny_encoder_config("bert", len(tokenizer), tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _read(process: subprocess.Popen, lines: list[str]) -> None:
    lines.extend(process.stderr)  # until the process closes it: a pipe that is not read would block the run


def _signal_after_step(process: subprocess.Popen, log: Path, step: int, signum: int) -> None:
    """Send `signum` once the run's log (`train.log`) has recorded optimizer step `step`."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if log.is_file() and f"training.progress: step {step}: " in log.read_text():
            process.send_signal(signum)
            return
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_checkpoints_exits_and_resumes_to_the_uninterrupted_weights(
    corpus_file, tokenizer, tmp_path, signum, exit_code
):
    backbone = _backbone(tmp_path, tokenizer)
    # No periodic checkpoint: the only one is written on the signal.
    steps = ["--backbone", str(backbone), "--max_steps", "40", "--save_steps", "0", "--num_threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "training.train"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, *run_args(corpus_file, interrupted, *steps)], env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=_read, args=(process, lines))
    reader.start()
    _signal_after_step(process, interrupted / "train.log", 6, signum)
    assert process.wait(timeout=600) == exit_code, "".join(lines[-5:])
    reader.join()
    assert not (interrupted / "final").exists(), "the run finished before the signal; the test proves nothing"
    checkpoints = complete_checkpoints(interrupted / "checkpoints")
    assert len(checkpoints) == 1 and verify_checkpoint(checkpoints[0]) is None
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 6 <= stopped_at < 40
    stopped = [line for line in lines if line.startswith("automlm-train: stopped by")]
    assert len(stopped) == 1, "".join(lines[-5:])
    assert f"stopped by {signal.Signals(signum).name} at step {stopped_at}; checkpoint " in stopped[0]
    assert stopped[0].rstrip().endswith("--resume"), stopped[0]
    if signum == signal.SIGINT:
        return  # the same path as SIGTERM from here on: resumed once, below, to keep the suite short
    subprocess.run([*command, *run_args(corpus_file, interrupted, *steps, "--resume")], env=env, check=True,
                   capture_output=True)  # fmt: skip

    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run([*command, *run_args(corpus_file, uninterrupted, *steps)], env=env, check=True, capture_output=True)
    resumed = load_file(interrupted / "final" / "model.safetensors")
    reference = load_file(uninterrupted / "final" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs after resuming from step {stopped_at}"


# ----------------------------------------------------------------------------------------------------------------
# A full disk
# ----------------------------------------------------------------------------------------------------------------
def test_a_full_disk_during_the_export_leaves_the_previous_export_intact(corpus_file, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out"
    argv = run_args(corpus_file, output, "--max_steps", "2", "--save_steps", "2", "--keep_checkpoints")
    train(*parse_args(argv))
    before = {p.relative_to(output).as_posix(): p.read_bytes() for p in (output / "final").rglob("*") if p.is_file()}
    assert before
    write = export_module.export_sentence_transformers

    def write_then_fill_the_disk(*args, **kwargs):
        write(*args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(args[2]))

    monkeypatch.setattr(export_module, "export_sentence_transformers", write_then_fill_the_disk)
    with pytest.raises(SystemExit) as stop:
        loop.main([*argv, "--resume"])  # at its last step already: straight to the export, which fails
    assert stop.value.code == 1
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith("automlm-train: no space left") and "intact" in message, message
    assert not list(output.glob(".final*")), "the partial export must be removed"
    assert complete_checkpoints(output / "checkpoints"), "the checkpoint must survive a failed export"
    after = {p.relative_to(output).as_posix(): p.read_bytes() for p in (output / "final").rglob("*") if p.is_file()}
    assert after == before


def test_a_failed_write_is_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    import shutil

    from training.train import disk_full

    torch_error = RuntimeError("[enforce fail at inline_container.cc:603] PytorchStreamWriter failed writing file")
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full(wrapped, tmp_path)
    assert not disk_full(torch_error, tmp_path) and not disk_full(ValueError("bad value"), tmp_path)
    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    assert disk_full(torch_error, tmp_path) and not disk_full(RuntimeError("CUDA out of memory"), tmp_path)


def test_a_full_disk_during_a_checkpoint_leaves_the_previous_checkpoint_intact(corpus_file, tmp_path, monkeypatch):
    from accelerate import Accelerator

    output = tmp_path / "out"
    argv = run_args(corpus_file, output, "--max_steps", "4", "--save_steps", "2", "--keep_checkpoints")
    save_state = Accelerator.save_state

    def save_until_step_4(self, output_dir, *args, **kwargs):
        if output_dir.endswith("checkpoint-4"):
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return save_state(self, output_dir, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_until_step_4)
    with pytest.raises(OSError, match="No space left"):
        train(*parse_args(argv))
    checkpoints = complete_checkpoints(output / "checkpoints")
    assert [p.name for p in checkpoints] == ["checkpoint-2"] and verify_checkpoint(checkpoints[0]) is None
    assert json.loads((checkpoints[0] / MANIFEST).read_text())["step"] == 2


def test_an_export_swap_interrupted_between_its_renames_is_put_back(tmp_path):
    from training.export import written_beside

    target = tmp_path / "final"
    (tmp_path / ".final.old").mkdir()
    (tmp_path / ".final.old" / "model.safetensors").write_text("the previous export")  # killed after the first rename
    with pytest.raises(OSError), written_beside(target) as scratch:
        (scratch / "model.safetensors").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (target / "model.safetensors").read_text() == "the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    with written_beside(target) as scratch:
        (scratch / "model.safetensors").write_text("the new export")
    assert (target / "model.safetensors").read_text() == "the new export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_checkpoint_from_before_manifests_is_used_unverified(tmp_path, caplog):
    from training.checkpoints import LEGACY_MARKER, newest_intact_checkpoint

    legacy = tmp_path / "checkpoint-10"
    legacy.mkdir()
    (legacy / LEGACY_MARKER).write_text("{}")
    assert complete_checkpoints(tmp_path) == [legacy]
    with caplog.at_level("WARNING"):
        assert newest_intact_checkpoint(tmp_path) == (legacy, {})
    assert "predates checkpoint manifests" in caplog.text
