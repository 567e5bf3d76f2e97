#!/usr/bin/env python
"""Export the untrained twin of a finished run: same settings, same tokenizer, same seed, no training step.

    python scripts/untrained_baseline.py outputs/automlm-default outputs/automlm-default-untrained
    automlm-eval --model outputs/automlm-default-untrained/final --data data/chatterbot-qa --max-seq-length 64

A model trained from scratch has to beat this floor: with mean pooling, even random weights give a
bag-of-subwords matcher (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.arguments import parse_args  # noqa: E402
from training.train import export_untrained  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="output_dir of a finished automlm-train run")
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    settings = json.loads((args.run_dir / "training_config.json").read_text())
    flat = {key: value for section in settings.values() for key, value in section.items()}
    config_file = args.output_dir / "settings.json"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(flat))
    model_args, data_args, training_args = parse_args(["--config", str(config_file)])
    export_untrained(
        model_args, data_args, training_args.seed, args.run_dir / "tokenizer", args.output_dir / "final",
        train_tokenizer=False,
    )  # fmt: skip
    print(f"Untrained twin of {args.run_dir} written to {args.output_dir / 'final'}")


if __name__ == "__main__":
    main()
