"""GPU table: bf16 matmul peak, training tokens/s and MFU (CL only, CL + Auto-MLM), encoding sentences/s.

Called by ``benchmarks/gpu.sh``. The model is XLM-R-base-sized (12 layers, hidden 768, 12 heads, feed-forward 3072,
vocabulary 250002), random weights, at sequence length 128, in bf16 autocast with fp32 weights and a fused AdamW.

- Peak: the best of a few large bf16 matrix products (random data), in TFLOP/s.
- Training: ``train_step.py``'s variants ``cl`` and ``cl+auto-mlm`` on one shared encoder, round-robin, medians;
  model FLOPs counted by ``train_step.train_flops`` (the encoder's and the heads' matmuls, attention scores and
  weighted sums, forward and backward; not embeddings lookups, norms, activations, the optimizer); MFU = model
  FLOPs / step time / measured peak. tokens/s counts input tokens (batch x seq_len; CL encodes each twice).
- Encoding: ``encode.py``'s comparison of our sentence-transformers export and a stock BERT of the same size, on
  texts of about ``seq_len`` tokens.

``--device cpu --tiny`` runs every path on a tiny model on the CPU, to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers

from evaluation.report import markdown_table

import encode  # sibling scripts: their folder is on sys.path
import train_step

TINY = ["--layers", "2", "--hidden", "64", "--heads", "4", "--intermediate", "128", "--vocab-size", "5000"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few steps (check the script on CPU)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256], help="training batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time with the encoder and head compiled")
    parser.add_argument("--encode-sentences", type=int, default=4096)
    parser.add_argument("--encode-batch-size", type=int, default=256)
    parser.add_argument("--encode-repeats", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=420.0, help="seconds; optional parts are skipped after")
    return parser.parse_args(argv)


def matmul_peak(device: torch.device, tiny: bool) -> float:
    """Best measured bf16 (fp32 on CPU) matmul rate over a few square sizes, in FLOP/s, on random data."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = [256, 512] if tiny else [4096, 8192, 12288]
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        iterations = 3 if tiny else max(10, int(2e13 / (2 * n**3)))
        for _ in range(2):
            a @ b
        train_step.synchronize(device)
        rates = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(iterations):
                a @ b
            train_step.synchronize(device)
            rates.append(2 * n**3 * iterations / (time.perf_counter() - start))
        best = max(best, statistics.median(rates))
        del a, b
    return best


def training_rows(args: argparse.Namespace, peak: float, compiled: bool) -> list[dict[str, object]]:
    """One row per (batch size, variant): step time, tokens/s, model TFLOP/s, MFU, peak memory."""
    rows = []
    device = torch.device(args.device)
    for batch_size in args.batch_sizes:
        step_argv = ["--shape", "xlmr-base", "--seq-len", str(args.seq_len), "--batch-size", str(batch_size)]
        step_argv += ["--device", args.device] + (["--bf16"] if device.type == "cuda" else [])
        step_args = train_step.parse_args(step_argv + (TINY if args.tiny else []))
        try:
            variants = train_step.build_variants(step_args, ["cl", "cl+auto-mlm"], device)
            if compiled:
                variants["cl"].model.automlm.encoder.compile()  # shared by both variants
                for layer in variants["cl+auto-mlm"].model.auto_mlm_head.layers:
                    layer.compile()
            optimizer = train_step.make_optimizer(variants)
            batch = train_step.make_batch(step_args, device)
            selected = train_step.count_selected(variants["cl+auto-mlm"].model, batch)
            times = train_step.time_variants(
                variants, optimizer, batch, repeats=args.repeats, warmup=args.warmup, bf16=step_args.bf16
            )
            for name, variant in variants.items():
                step = functools.partial(train_step.train_step, variant, optimizer, batch, step_args.bf16)
                memory = train_step.peak_memory(step, device)
                median = statistics.median(times[name])
                flops = train_step.variant_flops(variant, batch_size, args.seq_len, selected)
                rows.append(
                    {
                        "batch": str(batch_size),
                        "variant": name + (" (compiled)" if compiled else ""),
                        "step ms": f"{median * 1e3:.1f}",
                        "x cl": f"{median / statistics.median(times['cl']):.3f}",
                        "tokens/s": f"{batch_size * args.seq_len / median:,.0f}",
                        "model TFLOP/s": f"{flops / median / 1e12:.1f}",
                        "MFU": f"{flops / median / peak:.1%}",
                        "peak GiB": f"{memory['peak_mib'] / 1024:.1f}",
                    }
                )
        except torch.OutOfMemoryError:
            print(f"batch {batch_size}: out of memory, skipped")
        finally:
            variants = optimizer = batch = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def encoding_rows(args: argparse.Namespace) -> list[dict[str, object]]:
    """Sentences/s of our export and of a stock BERT of the same size, on short sentences and ~seq_len texts."""
    from sentence_transformers import SentenceTransformer

    encode_argv = ["--shape", "xlmr-base", "--device", args.device, "--max-seq-length", str(args.seq_len)]
    encode_argv += ["--batch-size", str(args.encode_batch_size)] + (["--bf16"] if args.device == "cuda" else [])
    encode_args = encode.parse_args(encode_argv + (TINY if args.tiny else []))
    try:
        texts = encode.corpus_sentences()
        source = "chatterbot-corpus"
    except FileNotFoundError:  # the GPU image lacks the corpus package: use this repository's own text
        root = Path(__file__).resolve().parent.parent
        texts = [
            line.strip()
            for path in sorted(root.glob("**/*.py")) + sorted(root.glob("**/*.md"))
            if ".venv" not in path.parts
            for line in path.read_text(encoding="utf-8").splitlines()
            if len(line.split()) >= 3
        ]
        source = "this repository's .py/.md lines (chatterbot-corpus not installed)"
    tokenizer = encode.train_wordpiece_tokenizer(texts, vocab_size=16000, model_max_length=args.seq_len)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        ours_dir, stock_dir = encode.build_exports(encode_args, tokenizer, Path(scratch))
        models = {
            "ours": SentenceTransformer(str(ours_dir), trust_remote_code=True, device=args.device).eval(),
            "stock": SentenceTransformer(str(stock_dir), device=args.device).eval(),
        }
        for label, min_words in (("short sentences", 0), (f"~{args.seq_len}-token texts", args.seq_len)):
            if source == "chatterbot-corpus":
                sentences = encode.corpus_sentences(args.encode_sentences, min_words)
            else:
                sentences = join_lines(texts, args.encode_sentences, min_words)
            lengths = tokenizer(sentences, truncation=True, max_length=args.seq_len).input_ids
            mean_tokens = sum(map(len, lengths)) / len(lengths)
            times, difference = encode.compare(
                models,
                sentences,
                batch_size=args.encode_batch_size,
                repeats=args.encode_repeats,
                warmup=1,
                bf16=encode_args.bf16,
            )
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, median in medians.items():
                rows.append(
                    {
                        "texts": f"{len(sentences)} {label} (mean {mean_tokens:.0f} tokens)",
                        "model": name,
                        "sentences/s": f"{len(sentences) / median:,.0f}",
                        "time / stock": f"{median / medians['stock']:.3f}",
                        "max abs diff": f"{difference:.1e}",
                    }
                )
    print(f"encoding texts: {source}")
    return rows


def join_lines(lines: list[str], count: int, min_words: int) -> list[str]:
    texts, current = [], []
    for line in lines * (1 + count * max(min_words, 1) // max(len(lines), 1)):
        current.append(line)
        if sum(len(part.split()) for part in current) >= min_words:
            texts.append(" ".join(current))
            current = []
        if len(texts) == count:
            break
    return texts


def markdown(rows: list[dict[str, object]]) -> str:
    """`markdown_table` of dict rows, one column per key (in order of first appearance)."""
    if not rows:
        return "(none)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return markdown_table([[row.get(column, "") for column in columns] for row in rows], columns)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    if args.tiny:
        args.batch_sizes, args.repeats, args.warmup, args.seq_len = [8], 2, 1, 32
        args.encode_sentences, args.encode_batch_size, args.encode_repeats = 64, 16, 1
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the loss's matmuls) on tensor cores
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU (fp32; MFU against the measured fp32 matmul rate)"
    print(
        f"device: {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"CUDA {torch.version.cuda}"
    )
    peak = matmul_peak(device, args.tiny)
    print(f"measured matmul peak: {peak / 1e12:.1f} TFLOP/s ({time.perf_counter() - started:.0f} s)")
    rows = training_rows(args, peak, compiled=False)
    print(f"training, eager ({time.perf_counter() - started:.0f} s):\n{markdown(rows)}")
    encoding = []
    try:
        encoding = encoding_rows(args)
    except Exception:  # the table must still print
        traceback.print_exc()
    print(f"encoding ({time.perf_counter() - started:.0f} s):\n{markdown(encoding)}")
    if args.compile:
        if time.perf_counter() - started > args.time_budget / 2:
            print("compiled training skipped: over half the time budget spent")
        else:
            args.batch_sizes = args.batch_sizes[:1]
            try:
                rows += training_rows(args, peak, compiled=True)
            except Exception:
                traceback.print_exc()
    print(f"\n## Summary ({name}, {time.perf_counter() - started:.0f} s)\n")
    print(f"measured matmul peak: {peak / 1e12:.1f} TFLOP/s; sequence length {args.seq_len}\n")
    print(markdown(rows))
    print()
    print(markdown(encoding))


if __name__ == "__main__":
    main()
