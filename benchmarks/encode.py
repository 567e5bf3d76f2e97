"""Encoding speed of our sentence-transformers export against a stock BERT of the same size, measured in one run.

Both models hold the same (random) weights: ``ours`` is the folder written by
``training.export.export_sentence_transformers`` (custom code: the `Transformer` module calls `AutoMLMModel`, which
pools and normalises), ``stock`` the one written by ``training.export.export_plain`` (a stock `BertModel`, then
sentence-transformers' own `Pooling` and `Normalize`). The two encode the same sentences, round-robin, the order
alternating every round; the medians are reported, so that a noisy machine slows both alike. The embeddings are
compared too, as a check that both do the same work.

Sentences: the dialogues of the `chatterbot-corpus` package (28 languages), optionally joined into longer texts.

Example:
    OMP_NUM_THREADS=1 python benchmarks/encode.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers
from transformers import BertConfig, PreTrainedTokenizerBase

from corpora.chatterbot import chatterbot_languages, read_chatterbot_language
from evaluation.report import markdown_table
from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from modeling_automlm.modeling_automlm import special_token_ids_of
from training.export import export_plain, export_sentence_transformers
from training.tokenization import train_wordpiece_tokenizer

from train_step import add_shape_arguments, shape_of  # a sibling script: its folder is on sys.path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)  # always built as BERT: the layout does not change the cost
    parser.add_argument(
        "--tokenizer-vocab", type=int, default=16000, help="WordPiece vocabulary trained on the corpus"
    )
    parser.add_argument("--num-sentences", type=int, default=1024)
    parser.add_argument("--min-words", type=int, default=0, help="join consecutive corpus lines up to this many words")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each encodes all sentences with both)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="encode under bf16 autocast (GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def corpus_sentences(limit: int | None = None, min_words: int = 0) -> list[str]:
    """Lines of the chatterbot-corpus dialogues, all languages interleaved; joined up to `min_words` words if set."""
    per_language = [read_chatterbot_language(folder).utterances for folder in chatterbot_languages().values()]
    lines = [line for group in zip(*per_language) for line in group]  # round-robin over languages
    if min_words:
        texts, current = [], []
        for line in lines:
            current.append(line)
            if sum(len(part.split()) for part in current) >= min_words:
                texts.append(" ".join(current))
                current = []
        lines = texts
    if limit is not None:
        if len(lines) < limit:
            lines = (lines * (limit // max(len(lines), 1) + 1))[:limit]
        lines = lines[:limit]
    return lines


def build_exports(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, directory: Path) -> tuple[Path, Path]:
    """Write `ours` (custom code) and `stock` (plain BERT + pooling) folders holding the same random weights."""
    shape = shape_of(args)
    encoder_config = BertConfig(
        vocab_size=max(shape["vocab"], len(tokenizer)),  # rows beyond the tokenizer's are never looked up
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=max(512, args.max_seq_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    config = AutoMLMConfig(
        encoder_config=encoder_config,
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=special_token_ids_of(tokenizer),
    )
    model = AutoMLMForPreTraining(config)
    ours = export_sentence_transformers(model, tokenizer, directory / "ours", max_seq_length=args.max_seq_length)
    stock = export_plain(model, tokenizer, directory / "stock", max_seq_length=args.max_seq_length)
    return ours, stock


def encode_seconds(model, sentences: list[str], batch_size: int, bf16: bool) -> tuple[float, torch.Tensor]:
    """Wall time of one `encode` of all sentences, and the embeddings."""
    device = model.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        embeddings = model.encode(sentences, batch_size=batch_size, convert_to_tensor=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start, embeddings


def compare(
    models: dict[str, object], sentences: list[str], *, batch_size: int, repeats: int, warmup: int, bf16: bool
) -> tuple[dict[str, list[float]], float]:
    """Seconds per full encode for each model, round-robin; and the largest embedding difference between them."""
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    embeddings: dict[str, torch.Tensor] = {}
    for round_index in range(warmup + repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            seconds, embeddings[name] = encode_seconds(models[name], sentences, batch_size, bf16)
            if round_index >= warmup:
                times[name].append(seconds)
    first, *others = (embeddings[name].float() for name in names)
    difference = max(((other - first).abs().max().item() for other in others), default=0.0)
    return times, difference


def main(argv: list[str] | None = None) -> None:
    from sentence_transformers import SentenceTransformer

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    texts = corpus_sentences()
    sentences = corpus_sentences(args.num_sentences, args.min_words)
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=args.tokenizer_vocab, model_max_length=args.max_seq_length)
    with tempfile.TemporaryDirectory() as scratch:
        ours_dir, stock_dir = build_exports(args, tokenizer, Path(scratch))
        models = {
            "ours": SentenceTransformer(str(ours_dir), trust_remote_code=True, device=args.device).eval(),
            "stock": SentenceTransformer(str(stock_dir), device=args.device).eval(),
        }
        lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=args.max_seq_length).input_ids]
        print(
            f"shape {args.shape} {shape_of(args)} (BERT layout), {len(sentences)} sentences, mean "
            f"{sum(lengths) / len(lengths):.1f} tokens (max {max(lengths)}), batch {args.batch_size}, device "
            f"{args.device}, threads {torch.get_num_threads()}, bf16 {args.bf16}, repeats {args.repeats} "
            f"(+{args.warmup} warm-up)"
        )
        times, difference = compare(
            models, sentences, batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, bf16=args.bf16
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        [name, f"{median:.3f}", f"{min(times[name]):.3f}", f"{len(sentences) / median:.1f}"]
        for name, median in medians.items()
    ]
    print(markdown_table(rows, ["model", "median s", "min s", "sentences/s"]))
    ratios = sorted(ours / stock for ours, stock in zip(times["ours"], times["stock"]))
    print(
        f"wrapper cost (ours / stock - 1, medians): {medians['ours'] / medians['stock'] - 1:+.2%}; per-round ratios "
        f"{' '.join(f'{r:.3f}' for r in ratios)}; largest embedding difference {difference:.2e}"
    )


if __name__ == "__main__":
    main()
