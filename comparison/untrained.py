"""``automlm-untrained-twin``: export the untrained twin of a finished run (same settings, tokenizer and seed), or
the untrained model of settings files (what ``automlm-train`` would start from: `automlm-compare` runs this).

Usage::

    automlm-untrained-twin outputs/automlm-default outputs/automlm-default-untrained
    automlm-eval --model outputs/automlm-default-untrained/final --data data/chatterbot-qa --max-seq-length 64
    automlm-untrained-twin --config configs/ablations/protocol-cpu.yaml --seed 0 runs/comparison/untrained/seed-0

A model trained from scratch has to beat this floor: with mean pooling, even random weights give a
bag-of-subwords matcher (docs/RESULTS.md).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from training import cli

PROG = "automlm-untrained-twin"


def _export(argv: list[str], output_dir: Path, tokenizer_dir: Path | None, settings: dict | None = None) -> Path:
    """Export the untrained model of the settings `argv` (``automlm-train`` arguments) to ``output_dir/final``.

    With `tokenizer_dir` (a finished run's), its tokenizer is reused; else one is trained as ``automlm-train`` would
    (into ``output_dir/tokenizer``). `settings` (the run's, flat) are kept in ``output_dir/settings.json``.
    """
    from training.arguments import parse_args
    from training.export import export_untrained

    model_args, data_args, training_args = parse_args(argv)  # every setting checked before the output is touched
    output_dir.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        (output_dir / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    train_tokenizer = tokenizer_dir is None
    tokenizer_dir = output_dir / "tokenizer" if tokenizer_dir is None else tokenizer_dir
    final = output_dir / "final"
    seed = training_args.seed
    export_untrained(model_args, data_args, seed, tokenizer_dir, final, train_tokenizer=train_tokenizer)
    return final


def export_twin(run_dir: Path, output_dir: Path) -> Path:
    """Export the untrained twin of the run in `run_dir` to ``output_dir/final``; returns that folder.

    Raises:
        FileNotFoundError: when `run_dir` is not the output folder of a finished ``automlm-train`` run.
        ValueError: when its ``training_config.json`` is not valid.
    """
    settings_file = run_dir / "training_config.json"
    if not settings_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not the output folder of a finished automlm-train run (no training_config.json): pass "
            "the --output_dir of the run."
        )
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{settings_file}: not valid JSON ({error.msg}, line {error.lineno}); automlm-train writes it: restore it "
            "or train the run again."
        ) from None
    if not isinstance(settings, dict) or not all(isinstance(section, dict) for section in settings.values()):
        raise ValueError(
            f"{settings_file}: expected the sections model, data and training, as automlm-train writes them."
        )
    flat = {key: value for section in settings.values() for key, value in section.items()}
    with tempfile.TemporaryDirectory() as scratch:
        config_file = Path(scratch) / "settings.json"
        config_file.write_text(json.dumps(flat), encoding="utf-8")
        return _export(["--config", str(config_file)], output_dir, run_dir / "tokenizer", settings=flat)


def export_from_settings(config_files: list[Path], seed: int | None, output_dir: Path) -> Path:
    """Export the untrained model of settings files (a protocol, a variant...) to ``output_dir/final``.

    Raises:
        FileNotFoundError, ValueError: a settings file is missing or not valid.
    """
    argv = [arg for path in config_files for arg in ("--config", str(path))]
    argv += ["--output_dir", str(output_dir)] + (["--seed", str(seed)] if seed is not None else [])
    return _export(argv, output_dir, tokenizer_dir=None)


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-untrained-twin``."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description="Export the untrained twin of a finished run (same settings, same tokenizer, same seed), or "
        "with --config the untrained model of settings files (a tokenizer is trained for a model from scratch).",
        example=f"{PROG} outputs/automlm-default outputs/automlm-default-untrained",
    )
    parser.add_argument("run_dir", type=Path, nargs="?", help="output_dir of a finished automlm-train run")
    parser.add_argument("output_dir", type=Path, help="the export goes to OUTPUT_DIR/final")
    parser.add_argument(
        "--config", type=Path, action="append", help="settings file of automlm-train instead of RUN_DIR (repeatable)"
    )
    parser.add_argument("--seed", type=int, help="with --config: the seed (default: the settings')")
    return parser


@cli.entry_point(PROG)
def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-untrained-twin``; bad input ends it with one line naming the problem and the fix (exit 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.config is None):
        parser.error("pass either RUN_DIR or --config (not both)")
    if args.seed is not None and args.config is None:
        parser.error("--seed goes with --config (a twin has its run's seed)")
    cli.output_folder(args.output_dir, "OUTPUT_DIR")
    if args.config is None:
        final = export_twin(args.run_dir, args.output_dir)
        print(f"Untrained twin of {args.run_dir} written to {final}")
    else:
        final = export_from_settings(args.config, args.seed, args.output_dir)
        print(f"Untrained model of {' + '.join(map(str, args.config))} written to {final}")


if __name__ == "__main__":
    main()
