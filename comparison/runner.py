"""``automlm-compare``: train and evaluate every ablation variant over several seeds, then write the report.

Every variant shares the protocol file (backbone shape, data, steps, batch size); a variant file next to it
(``<variant>.yaml``) changes only the objective, and every ``*.yaml`` beside the protocol but the protocols
(``protocol*.yaml``) is a variant. Each run is ``python -m training.train --config PROTOCOL --config VARIANT --seed S``
in a subprocess (the peer methods ``tsdae``, ``tsdae_untied``... need no variant file: they run `comparison.tsdae`
with the protocol's backbone, text, steps, batch and learning rate), and the untrained baseline of every seed is
``python -m comparison.untrained --config PROTOCOL --seed S``; then `evaluation.evaluate.evaluate_model` runs on every
evaluation set at one maximum sequence length. Finished runs are reused, so an interrupted comparison continues
where it stopped. Paths are relative to the working folder: run it from the repository root.

CPU (what docs/RESULTS.md reports; 2 cores, about an hour)::

    automlm-compare --protocol configs/ablations/protocol-cpu.yaml --workers 2

GPU (XLM-R base on your own unlabelled text; needs the Hub)::

    automlm-compare --protocol configs/ablations/protocol-xlmr-gpu.yaml --workers 1 \\
        --runs-dir runs/comparison-gpu --report docs/RESULTS-gpu.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from evaluation.evaluate import evaluate_model
from evaluation.report import write_results
from training import cli
from training.arguments import PretrainingArguments, load_settings_file

from .report import HEALTH_KEYS, Results, render_report

logger = logging.getLogger(__name__)

PROG = "automlm-compare"
METHOD = "cl_automlm"  # the method: a variant file of that name is beside every protocol
PROTOCOL_PREFIX = "protocol"  # `protocol*.yaml` beside the variants are protocols, not variants
DEFAULT_LEARNING_RATE = PretrainingArguments.learning_rate  # automlm-train's default (configs/default.yaml)


def rate_tag(rate: float) -> str:
    """The digits of a learning rate as variant names spell it: 2.5e-6 -> ``25e7``, 5e-6 -> ``5e6``."""
    _, digits, exponent = Decimal(repr(rate)).normalize().as_tuple()
    return "".join(map(str, digits)) + f"e{-exponent}"


# Peer methods trained by their own module under the same protocol (no variant file): name -> extra arguments.
# `tsdae_lr5e6`: the tied TSDAE at the rate the method's dev split chose (docs/results/history.md, section 1.2);
# `tsdae_lr<default>` (`tsdae_lr25e7`): at automlm-train's default rate, the one both dev splits chose (section 1.5).
PEERS = {
    "tsdae": [],
    "tsdae_untied": ["--untied"],
    "tsdae_lr5e6": ["--learning_rate", "5e-6"],
    f"tsdae_lr{rate_tag(DEFAULT_LEARNING_RATE)}": ["--learning_rate", str(DEFAULT_LEARNING_RATE)],
}
# (name, folder under --data-dir, cross-lingual pivot or None)
EVAL_SETS = [
    ("debian-reference", "debian-reference", None),
    ("debian-reference-xling", "debian-reference", "en"),
    ("chatterbot-qa", "chatterbot-qa", None),
]


def variants(protocol: Path) -> list[str]:
    """The variant files beside `protocol`, by name: the method first, then the others sorted."""
    names = sorted(p.stem for p in protocol.parent.glob("*.yaml") if not p.stem.startswith(PROTOCOL_PREFIX))
    return sorted(names, key=lambda name: name != METHOD)


def _run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as handle:
        result = subprocess.run(command, check=False, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed (exit {result.returncode}); see {log}.")


def train_one(protocol: Path, variant: str, seed: int, runs_dir: Path) -> Path:
    """Train (unless already done) and return the run folder."""
    run_dir = runs_dir / variant / f"seed-{seed}"
    if (run_dir / "final" / "training_metrics.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    common = ["--seed", str(seed), "--output_dir", str(run_dir), "--num_threads", "1"]
    if variant in PEERS:
        command = [sys.executable, "-m", "comparison.tsdae", *PEERS[variant], "--config", str(protocol), *common]
    else:
        command = [
            sys.executable, "-m", "training.train", "--config", str(protocol),
            "--config", str(protocol.parent / f"{variant}.yaml"), *common, "--report_to", "none",
            "--save_steps", "0", "--export_plain", "false", "--eval_steps", "0",
        ]  # fmt: skip
    logger.info("train %s seed %d", variant, seed)
    _run(command, run_dir / "console.log")
    return run_dir


def untrained_one(protocol: Path, seed: int, runs_dir: Path) -> Path:
    """Export the untrained model of the protocol (unless already done): the floor every objective must beat.

    The same shape and tokenizer recipe with no training step (with a pretrained backbone: the untouched backbone,
    the system every adaptation has to beat), in a subprocess like the training runs, so that the global torch RNG
    is not shared with the other worker thread.
    """
    run_dir = runs_dir / "untrained" / f"seed-{seed}"
    if (run_dir / "final" / "config.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "comparison.untrained", "--config", str(protocol), "--seed", str(seed)]
    _run([*command, str(run_dir)], run_dir / "console.log")
    return run_dir


def evaluate_one(model: str, name: str, data: Path, pivot: str | None, out: Path, max_seq_length: int) -> dict:
    """Evaluate `model` on one set (unless `out` already holds the result) and write the result to `out`."""
    if out.is_file():
        return json.loads(out.read_text(encoding="utf-8"))
    results = evaluate_model(model, data, max_seq_length=max_seq_length, cross_lingual=pivot, show_progress_bar=False)
    results["dataset"] = name
    write_results(results, out)
    return results


def _read_health(
    run_dir: Path, variant: str, wall_times: dict[str, list[float]], health: dict[str, dict[str, list[float]]]
) -> None:
    """Add the run's training wall time and its health signals at the last logged step."""
    metrics_file = run_dir / "final" / "training_metrics.json"
    if metrics_file.is_file():
        summary = json.loads(metrics_file.read_text(encoding="utf-8"))
        wall_times.setdefault(variant, []).append(summary["wall_time_s"])
        last = {k: v for record in summary["history"] for k, v in record.items() if v is not None}
        for key in HEALTH_KEYS:
            if key in last:
                health.setdefault(variant, {}).setdefault(key, []).append(last[key])


def build_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-compare``."""
    parser = cli.ArgumentParser(
        prog=PROG,
        description="Train and evaluate every ablation variant over several seeds, then write the comparison report.",
        example=f"{PROG} --protocol configs/ablations/protocol-cpu.yaml --workers 2",
    )
    parser.add_argument("--protocol", type=Path, default=Path("configs/ablations/protocol-cpu.yaml"))
    parser.add_argument(
        "--variants",
        nargs="+",
        help="variant files next to the protocol (their names), or peer methods "
        f"{sorted(PEERS)} (default: every variant file next to the protocol)",
    )
    parser.add_argument("--method", default=METHOD, help="the variant compared with every other system")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="holds the sets built by `make data`")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/comparison"))
    parser.add_argument("--report", type=Path, default=Path("docs/results/comparison-cpu.md"))
    parser.add_argument("--figures-dir", type=Path, default=Path("docs/figures"))
    return parser


def reproduce_command(args: argparse.Namespace) -> str:
    """The ``automlm-compare`` command line that gives `args` back: the report names it, so it must be complete."""
    parts = ["automlm-compare", "--protocol", os.path.relpath(args.protocol), "--method", args.method, "--variants"]
    parts += [*args.variants, "--seeds", *map(str, args.seeds), "--workers", str(args.workers)]
    for option in ("max_seq_length", "data_dir", "runs_dir", "report", "figures_dir"):
        parts += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    return " ".join(parts)


def _check(args: argparse.Namespace) -> None:
    """Stop before any run on a missing or unreadable file, with the fix; fill in the default variants."""
    if args.protocol.is_dir():
        raise IsADirectoryError(f"{args.protocol} is a folder: pass --protocol configs/ablations/<protocol>.yaml.")
    if not args.protocol.is_file():
        raise FileNotFoundError(
            f"No protocol file {args.protocol}: run from the repository root (paths are relative to the working "
            "folder) or pass --protocol configs/ablations/<protocol>.yaml."
        )
    found = variants(args.protocol)
    if args.variants is None:
        args.variants = found
    missing = [v for v in args.variants if v not in PEERS and v not in found]
    if missing:
        raise FileNotFoundError(
            f"No variant file {missing} next to {args.protocol}: add it, or choose among {found} or the peer "
            f"methods {sorted(PEERS)}."
        )
    if args.method not in args.variants:
        raise ValueError(f"--method {args.method} is not among --variants {args.variants}.")
    for path in [args.protocol, *(args.protocol.parent / f"{v}.yaml" for v in args.variants if v not in PEERS)]:
        load_settings_file(path)  # a file that does not parse fails here, not in every run
    if args.data_dir.exists() and not args.data_dir.is_dir():
        raise NotADirectoryError(f"{args.data_dir} is a file: --data-dir is the folder `make data` builds.")
    for _, folder, _ in EVAL_SETS:
        if not (args.data_dir / folder).is_dir():
            raise FileNotFoundError(
                f"{args.data_dir / folder} is missing: build the evaluation sets first with `make data` (or "
                "`automlm-build-benchmark`, docs/DATASETS.md), or pass --data-dir."
            )
    cli.output_folder(args.runs_dir, "--runs-dir")
    cli.output_folder(args.figures_dir, "--figures-dir")
    cli.output_file(args.report, "--report")


@cli.entry_point(PROG)
def main(argv: list[str] | None = None) -> None:
    """Run ``automlm-compare``; bad input ends it with one line naming the problem and the fix (exit 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args)
    protocol = args.protocol.resolve()

    def job(item: tuple[str, int]) -> tuple[str, int, Path]:
        variant, seed = item
        if variant == "untrained":
            run_dir = untrained_one(protocol, seed, args.runs_dir)
        else:
            run_dir = train_one(protocol, variant, seed, args.runs_dir)
        for name, folder, pivot in EVAL_SETS:
            out = run_dir / f"eval-{name}-{args.max_seq_length}.json"
            evaluate_one(str(run_dir / "final"), name, args.data_dir / folder, pivot, out, args.max_seq_length)
        return variant, seed, run_dir

    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    jobs += [("untrained", seed) for seed in args.seeds]
    start = time.time()
    done: list[tuple[str, int, Path]] = []
    failed: list[str] = []
    with ThreadPoolExecutor(args.workers) as pool:
        # One future per run, waited for in order: a run that fails is reported once every other run has finished
        # (`pool.map` would cancel the runs still queued behind it).
        futures = [(item, pool.submit(job, item)) for item in jobs]
        for (variant, seed), future in futures:
            try:
                done.append(future.result())
            except Exception as error:  # reported below, with the run's log named in the message
                logger.error("%s seed %d failed: %s", variant, seed, error)
                failed.append(f"{variant} seed {seed}: {error}")
    logger.info("all runs done in %.0f s", time.time() - start)
    if failed:
        parser.exit(
            1,
            f"{PROG}: {len(failed)} of {len(jobs)} runs failed; the others are finished and the next "
            "call reuses them:\n  " + "\n  ".join(failed) + "\n",
        )

    all_results: Results = {name: {} for name, _, _ in EVAL_SETS}
    wall_times: dict[str, list[float]] = {}
    health: dict[str, dict[str, list[float]]] = {}
    for variant, _, run_dir in done:
        for name, _, _ in EVAL_SETS:
            result = json.loads((run_dir / f"eval-{name}-{args.max_seq_length}.json").read_text(encoding="utf-8"))
            all_results[name].setdefault(variant, []).append(result)
        _read_health(run_dir, variant, wall_times, health)
    for name, folder, pivot in EVAL_SETS:
        out = args.runs_dir / "bm25" / f"eval-{name}-{args.max_seq_length}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        all_results[name]["bm25"] = [
            evaluate_one("bm25", name, args.data_dir / folder, pivot, out, args.max_seq_length)
        ]
    protocol_name = os.path.relpath(protocol)
    report = render_report(
        all_results,
        wall_times,
        health,
        variants=args.variants,
        method=args.method,
        command=reproduce_command(args),
        header=f"Protocol `{protocol_name}`, seeds {args.seeds}, evaluation at max_seq_length {args.max_seq_length}.",
        report_path=args.report,
        figures=args.figures_dir,
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report + "\n", encoding="utf-8")
    logger.info("wrote %s", args.report)


if __name__ == "__main__":
    main()
