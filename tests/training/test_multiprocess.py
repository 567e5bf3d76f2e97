"""Two CPU processes with cross-process negatives give the single-process loss and gradients of the global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_automlm import AutoMLMForPreTraining


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch_setup(make_config, tokenizer, sentences, folder: Path) -> tuple[AutoMLMForPreTraining, dict]:
    """A model and a global batch of 8 different sentences, also written to `folder/setup.json` for the worker
    processes (each takes its half).

    Each sentence has two masked tokens, so that both halves mask as many tokens: the mean of the halves' Auto-MLM
    losses (token means) is then the global batch's. The halves hold different sentences, so each process's gradient
    differs from the global one: only their average, DDP's all-reduce, equals it.
    """
    config = make_config(auto_mlm_weight=0.5)
    torch.manual_seed(0)
    model = AutoMLMForPreTraining(config).eval()
    batch = tokenizer(sentences[:8], padding=True, return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    content = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(config.special_token_ids))
    assert (content.sum(dim=1) >= 2).all()
    scores = torch.rand(input_ids.shape, generator=torch.Generator().manual_seed(0)).masked_fill(~content, -1.0)
    masked = torch.zeros_like(content).scatter_(1, scores.topk(2, dim=1).indices, True)  # (8, seq_len)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "masked_input_ids": input_ids.masked_fill(masked, config.mask_token_id),
        "mlm_labels": input_ids.masked_fill(~masked, -100),
    }
    setup = {"config": config.to_dict(), "state": {k: v.tolist() for k, v in model.state_dict().items()},
             **{key: value.tolist() for key, value in inputs.items()}}  # fmt: skip
    setup["config"].pop("model_type", None)
    (folder / "setup.json").write_text(json.dumps(setup))
    return model, inputs


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, 3], ids=["uncached", "gradient caching in chunks of 3"])
def test_two_processes_match_one_process_on_the_global_batch(make_config, tokenizer, sentences, tmp_path, chunk_size):
    """Cross-process negatives: two processes on half the batch each give the one-process loss and gradients, with
    the ordinary step and with the cached step. The halves hold different sentences, so this checks both the
    gathered negatives and DDP's gradient all-reduce (without it, rank 0's gradients are its half's)."""
    model, inputs = global_batch_setup(make_config, tokenizer, sentences, tmp_path)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(Path(__file__).with_name("ddp_worker.py")),
        str(tmp_path / "setup.json"), str(tmp_path / "result.json"), *([str(chunk_size)] if chunk_size else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads((tmp_path / "result.json").read_text())
    assert outcome["world_size"] == 2

    reference = model(**inputs)
    reference.loss.backward()
    losses = torch.tensor(outcome["losses"])  # (2 processes, [loss, cl, auto_mlm])
    # Each process's InfoNCE ranks its anchors against all 8 candidates: the mean equals the global one.
    assert losses[:, 1].mean().item() == pytest.approx(reference.cl_loss.item(), rel=1e-5)
    assert losses[:, 0].mean().item() == pytest.approx(reference.loss.item(), rel=1e-5)
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            continue
        torch.testing.assert_close(torch.tensor(outcome["grads"][name]), parameter.grad, atol=1e-6, rtol=1e-4,
                                   msg=name)  # fmt: skip
