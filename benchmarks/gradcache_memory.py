"""Peak memory of a large-batch step with gradient caching against the ordinary step, measured in one run.

The same model, batch and token masks go through ``model(**batch).loss.backward()`` ("uncached") and
``training.gradcache.grad_cache_step(model, batch, chunk_size)`` ("cached"), each in a fresh subprocess. Memory is
the step's peak over the memory just before it, with the parameters and their gradients already allocated
(``benchmarks/train_step.py``'s `peak_memory`: the resident set on CPU, `torch.cuda.max_memory_allocated` on CUDA).
The step time is that of the same single step: indicative only.

Example:
    OMP_NUM_THREADS=1 python benchmarks/gradcache_memory.py --batch-size 256 --chunk-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from evaluation.report import markdown_table
from modeling_automlm import AutoMLMForPreTraining
from training.gradcache import grad_cache_step

import train_step  # a sibling script: its folder is on sys.path

MODES = ("uncached", "cached")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    train_step.add_shape_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--variant", choices=["cl", "cl+auto-mlm"], default="cl+auto-mlm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--probe", choices=MODES, help=argparse.SUPPRESS)  # internal: one mode, print its memory
    return parser.parse_args(argv)


def probe(args: argparse.Namespace) -> dict[str, float]:
    """One step of one mode; its peak memory (MiB) and wall time (s)."""
    device = torch.device(args.device)
    step_args = argparse.Namespace(**{**vars(train_step.parse_args([])), **vars(args)})  # shape, batch, seq_len
    torch.manual_seed(0)
    fields = {"auto_mlm_weight": 0.0} if args.variant == "cl" else {}
    model = AutoMLMForPreTraining(train_step.automlm_config(step_args, **fields)).to(device).train()
    batch = train_step.make_batch(step_args, device)
    if model.config.uses_masking:
        generator = torch.Generator(device=device).manual_seed(0)
        batch["masked_input_ids"], batch["mlm_labels"] = model.mask(**batch, generator=generator)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            if args.probe == "cached":
                grad_cache_step(model, batch, chunk_size=args.chunk_size)
            else:
                model(**batch).loss.backward()

    start = time.perf_counter()
    memory = train_step.peak_memory(step, device)
    return {**memory, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args)))
        return
    results = train_step.run_probes(__file__, argv, "--probe", list(MODES), args.threads)
    print(
        f"shape {args.shape}, variant {args.variant}, batch {args.batch_size} x seq {args.seq_len}, chunk "
        f"{args.chunk_size}, device {args.device}, threads {args.threads}, bf16 {args.bf16}"
    )
    rows = [
        [mode, f"{result['step_mib']:.0f}", f"{result['peak_mib']:.0f}", f"{result['seconds']:.1f}"]
        for mode, result in results.items()
    ]
    print(markdown_table(rows, ["mode", "step MiB", "peak MiB", "step s"]))
    ratio = results["uncached"]["step_mib"] / max(results["cached"]["step_mib"], 1e-9)
    print(
        f"uncached / cached step memory: {ratio:.1f}x; step MiB: peak over the memory before the step (parameters "
        "and gradients allocated); step s: one step, indicative only."
    )


if __name__ == "__main__":
    main()
