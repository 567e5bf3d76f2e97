"""``automlm-untrained-twin``: export the untrained twin of a finished run (same settings, tokenizer and seed).

Usage::

    automlm-untrained-twin outputs/automlm-default outputs/automlm-default-untrained
    automlm-eval --model outputs/automlm-default-untrained/final --data data/chatterbot-qa --max-seq-length 64

A model trained from scratch has to beat this floor: with mean pooling, even random weights give a
bag-of-subwords matcher (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.arguments import parse_args
from training.train import export_untrained


def export_twin(run_dir: Path, output_dir: Path) -> Path:
    """Export the untrained twin of the run in `run_dir` to ``output_dir/final``; returns that folder.

    Raises:
        FileNotFoundError: when `run_dir` is not the output folder of a finished ``automlm-train`` run.
    """
    settings_file = run_dir / "training_config.json"
    if not settings_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not the output folder of a finished automlm-train run (no training_config.json): pass "
            "the --output_dir of the run."
        )
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    flat = {key: value for section in settings.values() for key, value in section.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "settings.json"
    config_file.write_text(json.dumps(flat), encoding="utf-8")
    model_args, data_args, training_args = parse_args(["--config", str(config_file)])
    final = output_dir / "final"
    export_untrained(model_args, data_args, training_args.seed, run_dir / "tokenizer", final, train_tokenizer=False)
    return final


def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-untrained-twin``; a bad run folder ends it with one line naming the problem and the fix."""
    parser = argparse.ArgumentParser(
        prog="automlm-untrained-twin",
        description="Export the untrained twin of a finished run: same settings, same tokenizer, same seed.",
    )
    parser.add_argument("run_dir", type=Path, help="output_dir of a finished automlm-train run")
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        final = export_twin(args.run_dir, args.output_dir)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"Untrained twin of {args.run_dir} written to {final}")


if __name__ == "__main__":
    main()
