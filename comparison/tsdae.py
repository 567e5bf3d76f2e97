"""The TSDAE peer (Wang et al., 2021) under a comparison protocol: the same backbone, text, steps, batch and
learning rate as the Auto-MLM runs, trained with sentence-transformers' `DenoisingAutoEncoderLoss`.

TSDAE encodes a damaged sentence (60% of its words deleted) into one vector and trains a decoder to rebuild the
original sentence from that vector alone. In the GPL study (Wang et al., 2022) it was the strongest of the
self-supervised pre-training methods for adapting a dense retriever to a new domain. The decoder is the backbone's
own architecture with cross-attention: ``tied`` shares its weights with the encoder (the library's default and
the paper's choice), ``untied`` trains a separate copy.

Words are whitespace-separated tokens; a text without spaces (Chinese, Japanese, Thai) is damaged character by
character instead, so that every language of a multilingual corpus gets the same noise rate.

    python -m comparison.tsdae --config configs/adaptation/protocol-e5-cpu.yaml --seed 0 --output_dir runs/x
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch
from transformers import get_scheduler

from training.arguments import parse_args
from training.data import balance_languages, load_corpus
from training.export import sentence_transformers_prompts
from training.model import fill_prompts_from_backbone, resolve_backbone

logger = logging.getLogger(__name__)

DELETION_RATIO = 0.6  # TSDAE's default and best setting


def delete_words(text: str, rng: random.Random, ratio: float = DELETION_RATIO) -> str:
    """TSDAE's noise: drop each word with probability `ratio`, keeping at least one.

    A text without whitespace (e.g. Chinese) is treated as a sequence of characters.
    """
    words = text.split()
    units, joiner = (words, " ") if len(words) > 1 else (list(text), "")
    kept = [unit for unit in units if rng.random() >= ratio]
    return joiner.join(kept) if kept else rng.choice(units)


def train_tsdae(argv: list[str], *, tied: bool) -> Path:
    """Train TSDAE with the protocol settings in `argv` (``--config`` files and overrides); returns the export."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

    model_args, data_args, args = parse_args(argv)
    if model_args.backbone == "scratch":
        raise ValueError("TSDAE adapts a pretrained backbone: set `backbone` in the protocol (not `scratch`).")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    corpus = load_corpus(data_args)
    order = balance_languages(corpus, data_args.language_sampling_alpha, args.seed)
    rng.shuffle(order)
    backbone = resolve_backbone(model_args.backbone)
    fill_prompts_from_backbone(backbone, data_args)
    prefix = data_args.text_prefix

    model = SentenceTransformer(backbone, device="cpu")
    model.max_seq_length = data_args.max_seq_length
    loss = DenoisingAutoEncoderLoss(model, decoder_name_or_path=None if tied else backbone, tie_encoder_decoder=tied)
    parameters = [p for p in loss.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * args.max_steps),
        num_training_steps=args.max_steps,
    )
    batch_size = args.per_device_train_batch_size
    history: list[dict[str, float]] = []
    loss.train()
    start = time.perf_counter()
    for step in range(args.max_steps):
        begin = (step * batch_size) % max(1, len(order) - batch_size)
        texts = [prefix + corpus.texts[i] for i in order[begin : begin + batch_size]]
        damaged = [delete_words(text, rng) for text in texts]
        value = loss([model.tokenize(damaged), model.tokenize(texts)], None)
        value.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.logging_steps == 0 or step + 1 == args.max_steps:
            history.append({"step": step + 1, "tsdae_loss": value.item(), "learning_rate": scheduler.get_last_lr()[0]})
            logger.info("step %d: tsdae_loss %.4f", step + 1, value.item())
    wall_time = time.perf_counter() - start

    export = Path(args.output_dir) / "final"
    model.eval()
    model.prompts = sentence_transformers_prompts(data_args.query_prompt, data_args.document_prompt) or {}
    model.save(str(export), create_model_card=False)
    summary = {"method": "tsdae", "tied_decoder": tied, "wall_time_s": wall_time, "history": history}
    (export / "training_metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return export


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m comparison.tsdae", description=__doc__.split("\n\n")[0])
    parser.add_argument("--untied", action="store_true", help="train a separate decoder instead of the tied one")
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        print(train_tsdae(rest, tied=not known.untied))
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
