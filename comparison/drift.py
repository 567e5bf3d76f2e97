"""How far each adapted encoder of a comparison moved from a reference encoder (usually the untouched backbone).

For a seeded sample of the protocol's own training sentences (its `train_files`, with its training prefix and
`max_seq_length`), every run's exported model and the reference encode the same sentences. Two numbers per run:

- ``cos_to_reference``: the mean cosine between a sentence's embedding and the reference's embedding of it (1: the
  run did not move; the same architecture started from the same weights, so the two spaces are comparable);
- ``uniformity``: ``log E exp(-2 |x - y|^2)`` over pairs of the run's normalised embeddings (Wang and Isola, 2020;
  lower is more spread out), the health signal the trainer logs on its batches.

    python -m comparison.drift --config configs/adaptation/protocol-e5-cpu.yaml --runs-dir runs/adaptation \\
        --reference untrained/seed-0 --runs cl_only/seed-0 cl_automlm/seed-0
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from evaluation.report import markdown_table
from evaluation.retrievers import DenseRetriever
from training.arguments import parse_args
from training.data import load_corpus
from training.health import uniformity
from training.model import fill_prompts_from_backbone, resolve_backbone

logger = logging.getLogger(__name__)

Encoder = Callable[[list[str]], torch.Tensor]


def drift(reference: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
    """``cos_to_reference`` and ``uniformity`` of `embeddings`, row i of both being the same sentence."""
    if reference.shape != embeddings.shape:
        raise ValueError(
            f"The reference and the run embedded different sentences: {tuple(reference.shape)} vs "
            f"{tuple(embeddings.shape)}; encode the same sample with both."
        )
    cosine = F.cosine_similarity(embeddings.float(), reference.float(), dim=-1).mean().item()
    return {"cos_to_reference": cosine, "uniformity": uniformity(embeddings)}


def load_encoder(model_dir: Path, max_seq_length: int) -> Encoder:
    """The exported model at `model_dir` as a function from texts to unit embeddings, loaded as the evaluation does."""
    return DenseRetriever.from_model(str(model_dir), max_seq_length=max_seq_length, device="cpu").embed


class TrainingSample(NamedTuple):
    """A seeded sample of a protocol's training sentences, the prefix training puts before each, and its length."""

    texts: list[str]
    prefix: str
    max_seq_length: int

    @property
    def prefixed(self) -> list[str]:
        """The sentences as the encoder saw them in training."""
        return [f"{self.prefix}{text}" for text in self.texts]


def sample_sentences(configs: Sequence[Path], count: int, seed: int) -> TrainingSample:
    """`count` training sentences of the settings files `configs` (later files override earlier ones)."""
    model_args, data_args, _ = parse_args([arg for config in configs for arg in ("--config", str(config))])
    fill_prompts_from_backbone(resolve_backbone(model_args.backbone), data_args)
    texts = load_corpus(data_args).texts
    chosen = random.Random(seed).sample(texts, min(count, len(texts)))
    return TrainingSample(chosen, data_args.text_prefix or "", data_args.max_seq_length)


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m comparison.drift``: a table on standard output, and the numbers as JSON with --output."""
    parser = argparse.ArgumentParser(prog="python -m comparison.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the comparison protocol (its training text)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/adaptation"))
    parser.add_argument("--reference", default="untrained/seed-0", help="run folder under --runs-dir")
    parser.add_argument("--runs", nargs="+", required=True, help="run folders under --runs-dir")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the numbers here (JSON)")
    args = parser.parse_args(argv)
    folders = {run: args.runs_dir / run / "final" for run in [args.reference, *args.runs]}
    missing = [str(folder) for folder in folders.values() if not folder.is_dir()]
    if missing:
        parser.error(f"no exported model in {', '.join(missing)}: train the runs first (automlm-compare).")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    sample = sample_sentences([args.config], args.sentences, args.seed)
    sentences, max_seq_length = sample.prefixed, sample.max_seq_length
    reference = load_encoder(folders[args.reference], max_seq_length)(sentences)
    results = {args.reference: drift(reference, reference)}
    for run in args.runs:
        results[run] = drift(reference, load_encoder(folders[run], max_seq_length)(sentences))
        logger.info("%s: %s", run, results[run])
    rows = [[run, f"{r['cos_to_reference']:.3f}", f"{r['uniformity']:.2f}"] for run, r in results.items()]
    print(markdown_table(rows, ["run", f"cosine to {args.reference}", "uniformity"]))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
