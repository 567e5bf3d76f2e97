"""Run by `accelerate launch --config_file configs/accelerate/fsdp.yaml` with 2 processes (see test_fsdp.py).

    fsdp_worker.py loss SETUP.json RESULT.json   # the joint loss and its gradients on halves of a fixed global batch
    fsdp_worker.py train [automlm-train arguments]   # the training loop, `training.train.main`

accelerate 1.15 turns the launcher's FSDP settings into FSDP only on accelerator devices: with `Accelerator(cpu=True)`
the state is MULTI_CPU (plain DDP over gloo) and the FSDP settings are ignored, without it each process trains alone.
torch's FSDP2 (`fully_shard`) itself runs on CPU over gloo, so on a machine without GPUs this worker switches the
accelerator's state to FSDP right after it is built, with the plugin the launcher's settings describe; from
`prepare` on, everything is accelerate's own FSDP2 code. On GPUs (benchmarks/gpu.sh) nothing is switched.

Rank 0 writes `fsdp.json` in the output folder (the loop) or RESULT.json (the loss): the distributed type, whether
the prepared model is an FSDP module and which of its parameters are sharded.

For the test that launches it: each process writes its process id to `<AUTOMLM_TEST_PIDS>/<rank>` (the launcher
starts each worker in a session of its own, out of the launcher's process group); with `AUTOMLM_TEST_HALT_AT_STEP=N`
the loop's processes stop before their optimizer step N + 1, write `halted/<rank>` in the output folder and wait to
be killed, a fixed point to kill the run at.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin, PartialState
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

REPORT = "fsdp.json"
PIDS = "AUTOMLM_TEST_PIDS"
HALT_AT_STEP = "AUTOMLM_TEST_HALT_AT_STEP"
SIGNAL_AT_STEP = "AUTOMLM_TEST_SIGNAL_AT_STEP"
HALTED = "halted"


def rank() -> str:
    return os.environ.get("RANK", "0")


def write_atomically(path: Path, text: str) -> None:
    """A reader sees the whole file or none: the test reads it while this process runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    scratch.write_text(text)
    os.replace(scratch, path)


def fsdp_on_cpu(accelerator: Accelerator) -> Accelerator:
    """Switch an accelerator that runs MULTI_CPU under an FSDP launch to FSDP (see the module docstring)."""
    state = accelerator.state
    fsdp_launch = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_launch and state.distributed_type == DistributedType.MULTI_CPU:
        state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables the launcher set
        state.distributed_type = DistributedType.FSDP
        # As accelerate does on GPUs: every later `AcceleratorState()` copies the distributed type from here.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return accelerator


def describe(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Any]:
    return {
        "distributed_type": str(accelerator.distributed_type),
        "num_processes": accelerator.num_processes,
        "fsdp_version": accelerator.state.fsdp_plugin.fsdp_version if accelerator.is_fsdp2 else None,
        "fsdp_module": isinstance(model, FSDPModule),
        "sharded": sorted(name for name, p in model.named_parameters() if isinstance(p, DTensor)),
        "not_sharded": sorted(name for name, p in model.named_parameters() if not isinstance(p, DTensor)),
    }


def record_preparation(accelerator: Accelerator, path: Path) -> None:
    """Make `accelerator.prepare` write what it made of the model to `path` (rank 0)."""
    prepare = accelerator.prepare

    def prepare_and_record(*objects: Any) -> Any:
        prepared = prepare(*objects)
        if accelerator.is_main_process:
            path.write_text(json.dumps(describe(accelerator, prepared[0]), indent=2))
        return prepared

    accelerator.prepare = prepare_and_record


def run_loop(argv: list[str]) -> None:
    import training.build as build
    import training.train as loop

    build_accelerator = build.build_accelerator
    output_dir = Path(argv[argv.index("--output_dir") + 1])

    def build_fsdp_accelerator(args: Any) -> Accelerator:
        accelerator = fsdp_on_cpu(build_accelerator(args))
        output_dir.mkdir(parents=True, exist_ok=True)
        record_preparation(accelerator, output_dir / REPORT)
        return accelerator

    build.build_accelerator = build_fsdp_accelerator
    if os.environ.get(HALT_AT_STEP):
        halt_at_step(loop, int(os.environ[HALT_AT_STEP]), output_dir / HALTED)
    if os.environ.get(SIGNAL_AT_STEP):
        signal_rank_1_at_step(loop, int(os.environ[SIGNAL_AT_STEP]))
    sys.exit(loop.main(argv))


def signal_rank_1_at_step(loop: Any, step: int) -> None:
    """Send SIGTERM to the process of rank 1 alone, once, as it starts optimizer step `step + 1`: a scheduler that
    signals one node of a job. Every process must still stop at the same step."""
    training_step = loop.training_step

    def signalling_step(run: Any, batch: dict[str, torch.Tensor], skip_update: bool) -> Any:
        if run.state.step == step and rank() == "1" and not getattr(signalling_step, "sent", False):
            signalling_step.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return training_step(run, batch, skip_update)

    loop.training_step = signalling_step


def halt_at_step(loop: Any, step: int, halted: Path) -> None:
    """Make the loop's processes stop before their optimizer step `step + 1` (steps up to `step` done), write
    `halted/<rank>` and sleep until killed. No process is inside a collective then: each stops before its forward."""
    training_step = loop.training_step

    def halting_step(run: Any, batch: dict[str, torch.Tensor], skip_update: bool) -> Any:
        if run.state.step == step:
            write_atomically(halted / rank(), str(os.getpid()))
            while True:
                time.sleep(1)
        return training_step(run, batch, skip_update)

    loop.training_step = halting_step


def run_loss(setup_file: Path, result_file: Path) -> None:
    """Each process takes its half of a fixed global batch; rank 0 writes the losses and the full gradients."""
    from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining

    setup = json.loads(setup_file.read_text())
    accelerator = fsdp_on_cpu(Accelerator(cpu=os.environ.get("AUTOMLM_TEST_FSDP_DEVICE", "cpu") == "cpu"))
    torch.manual_seed(0)
    model = AutoMLMForPreTraining(AutoMLMConfig(**setup["config"]))
    model.load_state_dict({k: torch.tensor(v) for k, v in setup["state"].items()})
    model.eval()  # no dropout: both processes and the reference see the same views
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # FSDP2 prepares a model only with its optimizer
    model, optimizer = accelerator.prepare(model, optimizer)
    rank, half = accelerator.process_index, len(setup["input_ids"]) // 2
    rows = slice(rank * half, (rank + 1) * half)
    batch = {
        key: torch.tensor(setup[key])[rows].to(accelerator.device)
        for key in ("input_ids", "attention_mask", "masked_input_ids", "mlm_labels")
    }
    out = model(**batch)
    accelerator.backward(out.loss)
    losses = accelerator.gather(
        torch.stack([out.loss.detach(), out.cl_loss.detach(), out.auto_mlm_loss.detach()])[None]
    ).cpu()
    # Sharded gradients are gathered on every process (a collective), then written by rank 0.
    grads = {
        name: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).cpu().tolist()
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    if accelerator.is_main_process:
        result = {**describe(accelerator, model), "losses": losses.tolist(), "grads": grads}
        result_file.write_text(json.dumps(result))
    accelerator.end_training()


if __name__ == "__main__":
    if os.environ.get(PIDS):
        write_atomically(Path(os.environ[PIDS]) / rank(), str(os.getpid()))
    if sys.argv[1] == "loss":
        run_loss(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "train":
        run_loop(sys.argv[2:])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} loss SETUP RESULT | train [automlm-train arguments]")
