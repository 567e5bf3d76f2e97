"""Run by `accelerate launch` with 2 CPU processes (see test_multiprocess.py): each process takes its half of a
fixed global batch, computes the joint loss under DDP (or, given a chunk size as third argument, takes the step with
gradient caching), and rank 0 writes the losses and averaged gradients."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from training.gradcache import grad_cache_step


def main() -> None:
    setup = json.loads(Path(sys.argv[1]).read_text())
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(0)
    model = AutoMLMForPreTraining(AutoMLMConfig(**setup["config"]))
    model.load_state_dict({k: torch.tensor(v) for k, v in setup["state"].items()})
    model.eval()  # no dropout: both processes and the reference see the same views
    model = accelerator.prepare(model)
    rank, half = accelerator.process_index, len(setup["input_ids"]) // 2
    rows = slice(rank * half, (rank + 1) * half)
    batch = {
        key: torch.tensor(setup[key])[rows]
        for key in ("input_ids", "attention_mask", "masked_input_ids", "mlm_labels")
    }
    if len(sys.argv) > 3:  # the cached step: backward is done inside, DDP's all-reduce after the last chunk
        out = grad_cache_step(model, batch, chunk_size=int(sys.argv[3]))
    else:
        out = model(**batch)
        accelerator.backward(out.loss)
    losses = accelerator.gather(
        torch.stack([out.loss.detach(), out.cl_loss.detach(), out.auto_mlm_loss.detach()])[None]
    )
    if accelerator.is_main_process:
        grads = {
            name: p.grad.tolist()
            for name, p in accelerator.unwrap_model(model).named_parameters()
            if p.grad is not None
        }
        result = {"losses": losses.tolist(), "grads": grads, "world_size": accelerator.num_processes}
        Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
