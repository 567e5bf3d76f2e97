"""The whole-corpus study (issue 21, point 3): the method and CL alone trained for 1,500 steps on all of LibreOffice
help's unlabelled text, at two rates, the dev split evaluated every 100 steps.

Three commands:

- ``python -m comparison.long_run sample-dev``: the dev split the runs evaluate on. libreoffice-help's own dev split
  has 32 languages with about 1,800 queries and 2,000 pages each (some 120,000 texts an evaluation, over ten minutes on
  one core): sixteen evaluations a run would cost more than the training. The sample keeps 8 languages, 250 queries
  each and, per language, their pages plus other pages up to 1,000, drawn with a fixed seed.
- ``python -m comparison.long_run train SYSTEM``: train ``cl_automlm`` (the default) or ``cl_only`` at 1e-5, then
  2.5e-6; a run with a checkpoint continues from it (``--resume``), a finished one is skipped.
- ``python -m comparison.long_run curves``: dev nDCG@10 against the step, both systems, one chart per rate, from each
  run's history (its export when finished, else its newest checkpoint), and a table of where each run stands.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.data import find_languages, load_beir, write_beir
from training import cli

logger = logging.getLogger(__name__)

PROG = "python -m comparison.long_run"
SYSTEMS = {"cl_automlm": [], "cl_only": ["--auto_mlm_weight", "0"]}  # the default, and CL alone
RATES = ("1e-5", "2.5e-6")
LANGUAGES = ("en", "de", "es", "fr", "ja", "pt-BR", "ru", "zh-Hans")
METRIC = "dev_ndcg@10"


def sample_dev(
    source: Path,
    output: Path,
    languages: Sequence[str] = LANGUAGES,
    queries_per_language: int = 250,
    documents_per_language: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Write a sample of the BEIR folders under `source` (one per language) to `output`; returns the counts.

    Each language keeps `queries_per_language` queries drawn with `seed`, every page relevant to one of them, and
    other pages up to `documents_per_language`: the distractors of a full-size corpus, fewer of them.
    """
    folders = find_languages(source)
    missing = [lang for lang in languages if lang not in folders]
    if missing:
        raise ValueError(f"{source} has no folder for {missing}; build it with automlm-build-benchmark first.")
    counts = {}
    for lang in languages:
        queries, corpus, qrels = load_beir(folders[lang])
        rng = random.Random(f"{seed}-{lang}")
        chosen = sorted(rng.sample(sorted(qrels), min(queries_per_language, len(qrels))))
        relevant = {doc for qid in chosen for doc in qrels[qid]}
        others = sorted(set(corpus) - relevant)
        extra = rng.sample(others, max(0, min(len(others), documents_per_language - len(relevant))))
        documents = sorted(relevant | set(extra))
        write_beir(
            output / lang,
            {qid: queries[qid] for qid in chosen},
            {doc: corpus[doc] for doc in documents},
            {qid: qrels[qid] for qid in chosen},
        )
        counts[lang] = {"queries": len(chosen), "documents": len(documents)}
    return counts


def train_command(system: str, rate: str, runs_dir: Path, dev_data: Path) -> list[str]:
    """The `automlm-train` command of one run; with `--resume` when the run has a checkpoint (it continues there)."""
    from training.checkpoints import complete_checkpoints

    output_dir = runs_dir / f"{system}-lr{rate}"
    command = [
        sys.executable, "-m", "training.train", "--config", "configs/default.yaml",
        "--config", "configs/long-run/libreoffice.yaml", "--dev_data", str(dev_data), "--learning_rate", rate,
        *SYSTEMS[system], "--output_dir", str(output_dir),
    ]  # fmt: skip
    return [*command, "--resume"] if complete_checkpoints(output_dir / "checkpoints") else command


def train(system: str, runs_dir: Path, dev_data: Path) -> None:
    """Train (or continue) `system` at each rate in turn, skipping finished runs; each run's console goes to
    `<run>.log` beside it."""
    for rate in RATES:
        output_dir = runs_dir / f"{system}-lr{rate}"
        if (output_dir / "final" / "training_metrics.json").is_file():
            continue
        runs_dir.mkdir(parents=True, exist_ok=True)
        command = train_command(system, rate, runs_dir, dev_data)
        logger.info("%s", " ".join(command))
        with output_dir.with_suffix(".log").open("a") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def run_history(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The history of a run and where it was read: its export's summary when it finished, else the progress saved in
    its newest checkpoint (what `--resume` would continue from)."""
    summary = run_dir / "final" / "training_metrics.json"
    if summary.is_file():
        return json.loads(summary.read_text())["history"], "finished"
    import torch

    from training.checkpoints import complete_checkpoints, newest_intact_checkpoint

    if not complete_checkpoints(run_dir / "checkpoints"):
        return [], "no checkpoint yet"
    newest, _ = newest_intact_checkpoint(run_dir / "checkpoints")
    state = torch.load(newest / "custom_checkpoint_0.pkl", weights_only=False)
    return state["history"], f"at step {state['step']}"


def dev_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``[(step, dev nDCG@10)]`` of every dev evaluation in `history`."""
    return [(record["step"], record[METRIC]) for record in history if METRIC in record]


def curves(runs_dir: Path, figures_dir: Path | None) -> str:
    """A markdown table of the runs under `runs_dir` (``<system>-lr<rate>``) and, with `figures_dir`, one chart per
    rate; returns the table."""
    rows = ["| run | status | dev nDCG@10 at step 0 | best (step) | last (step) |", "| --- | --- | --- | --- | --- |"]
    by_rate: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and "-lr" in p.name):
        history, status = run_history(run_dir)
        curve = dev_curve(history)
        system, rate = run_dir.name.rsplit("-lr", 1)
        by_rate.setdefault(rate, {})[system] = curve
        if not curve:
            rows.append(f"| {run_dir.name} | {status} | - | - | - |")
            continue
        best = max(curve, key=lambda point: point[1])
        start = dict(curve).get(0)
        rows.append(
            f"| {run_dir.name} | {status} | {'-' if start is None else f'{start:.4f}'} | {best[1]:.4f} ({best[0]}) "
            f"| {curve[-1][1]:.4f} ({curve[-1][0]}) |"
        )
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        for rate, systems in by_rate.items():
            _plot(systems, f"learning rate {rate}", figures_dir / f"dev-ndcg-lr{rate}.png")
    return "\n".join(rows)


def _plot(systems: dict[str, list[tuple[int, float]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for system, curve in sorted(systems.items()):
        if curve:
            steps, values = zip(*curve, strict=True)
            axis.plot(steps, values, marker="o", markersize=3, label=system)
    axis.set(xlabel="optimizer step (32 sentences)", ylabel="dev nDCG@10 (macro, 8 languages)", title=title)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    logger.info("Wrote %s", path)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=PROG,
        description="The whole-corpus study: sample its dev split, or chart its runs' dev curves.",
        example=f"{PROG} curves --runs_dir runs/long-run --figures_dir docs/figures/long-run",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "train",
        help="train (or continue) one system at both rates",
        example=f"{PROG} train cl_only --runs_dir runs/long-run",
    )
    run.add_argument("system", choices=sorted(SYSTEMS))
    run.add_argument("--runs_dir", type=Path, default=Path("runs/long-run"))
    run.add_argument("--dev_data", type=Path, default=Path("data/libreoffice-help-dev-sample"))
    sample = commands.add_parser(
        "sample-dev", help="sample the dev split the runs evaluate on", example=f"{PROG} sample-dev"
    )
    sample.add_argument("--source", type=Path, default=Path("data/libreoffice-help/dev"))
    sample.add_argument("--output", type=Path, default=Path("data/libreoffice-help-dev-sample"))
    chart = commands.add_parser(
        "curves",
        help="dev nDCG@10 against the step, one chart per rate",
        example=f"{PROG} curves --runs_dir runs/long-run --figures_dir docs/figures/long-run",
    )
    chart.add_argument("--runs_dir", type=Path, required=True, help="the folder of the <system>-lr<rate> runs")
    chart.add_argument("--figures_dir", type=Path, help="where the charts go (none without it)")
    return parser


@cli.entry_point(PROG)
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "sample-dev":
        print(json.dumps(sample_dev(cli.existing_folder(args.source, "--source"), args.output), indent=1))
    elif args.command == "train":
        train(
            args.system,
            cli.output_folder(args.runs_dir, "--runs_dir"),
            cli.existing_folder(args.dev_data, "--dev_data"),
        )
    else:
        print(curves(cli.existing_folder(args.runs_dir, "--runs_dir"), args.figures_dir))


if __name__ == "__main__":
    raise SystemExit(main())
