#!/usr/bin/env python
"""Train and evaluate every ablation variant over several seeds, then write the comparison to docs/RESULTS.md.

Every variant shares the protocol file (backbone shape, data, steps, batch size); a variant file changes only the
objective. Each run is `python -m training.train --config PROTOCOL --config VARIANT --seed S`, then
`automlm-eval` on every evaluation set at one maximum sequence length. Finished runs are reused, so an interrupted
comparison continues where it stopped.

CPU (what docs/RESULTS.md reports; 2 cores, about an hour):

    python scripts/run_comparison.py --protocol configs/ablations/protocol-cpu.yaml --workers 2

GPU (XLM-R base on your own unlabelled text; needs the Hub):

    python scripts/run_comparison.py --protocol configs/ablations/protocol-xlmr-gpu.yaml --workers 1 \\
        --runs-dir runs/comparison-gpu --report docs/RESULTS-gpu.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.evaluation import evaluate_model, paired_bootstrap, write_results  # noqa: E402

logger = logging.getLogger("run_comparison")

VARIANTS = [
    "cl_automlm",  # the method: lambda 0.1, prepend fusion, head reads token embeddings
    "cl_automlm_lambda1",
    "cl_only",  # SimCSE
    "cl_mlm",
    "auto_mlm_only",
    "cl_automlm_add",
    "cl_automlm_concat",
    "cl_automlm_contextual",
]
METRICS = ("ndcg@10", "mrr@10")
HEALTH_KEYS = ("alignment", "uniformity", "auto_mlm_accuracy", "mlm_accuracy")
# (name, data folder, cross-lingual pivot or None)
EVAL_SETS = [
    ("debian-reference", "data/debian-reference", None),
    ("debian-reference-xling", "data/debian-reference", "en"),
    ("chatterbot-qa", "data/chatterbot-qa", None),
]


def _run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def train_one(protocol: Path, variant: str, seed: int, runs_dir: Path) -> Path:
    """Train (unless already done) and return the run folder."""
    run_dir = runs_dir / variant / f"seed-{seed}"
    if (run_dir / "final" / "training_metrics.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "training.train", "--config", str(protocol),
        "--config", str(REPO / "configs" / "ablations" / f"{variant}.yaml"),
        "--seed", str(seed), "--output_dir", str(run_dir), "--num_threads", "1", "--report_to", "none",
        "--save_steps", "0", "--export_plain", "false",
    ]  # fmt: skip
    logger.info("train %s seed %d", variant, seed)
    _run(command, run_dir / "train.log")
    return run_dir


def untrained_one(protocol: Path, seed: int, runs_dir: Path) -> Path:
    """The same shape and tokenizer recipe with no training step: the floor every objective must beat."""
    run_dir = runs_dir / "untrained" / f"seed-{seed}"
    if (run_dir / "final" / "config.json").is_file():
        return run_dir
    # A subprocess, like the training runs: the global torch RNG is not shared with the other worker thread.
    code = (
        "import sys; from pathlib import Path\n"
        "from training.arguments import parse_args\n"
        "from training.train import export_untrained\n"
        "m, d, t = parse_args(sys.argv[1:]); out = Path(t.output_dir)\n"
        "export_untrained(m, d, t.seed, out / 'tokenizer', out / 'final', train_tokenizer=True)\n"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-c", code, "--config", str(protocol), "--seed", str(seed), "--output_dir", str(run_dir)],
         run_dir / "train.log")  # fmt: skip
    return run_dir


def evaluate_one(model: str, name: str, data: str, pivot: str | None, out: Path, max_seq_length: int) -> dict:
    if out.is_file():
        return json.loads(out.read_text())
    results = evaluate_model(
        model, REPO / data, max_seq_length=max_seq_length, cross_lingual=pivot, show_progress_bar=False
    )
    results["dataset"] = name
    write_results(results, out)
    return results


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _seed_mean_per_query(results: list[dict], metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per-query metric averaged over seeds, `{lang: {qid: {metric: v}}}`, for the paired bootstrap."""
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for language, queries in results[0]["per_query"].items():
        merged[language] = {
            qid: {metric: statistics.mean(r["per_query"][language][qid][metric] for r in results)} for qid in queries
        }
    return merged


def _chart(name: str, rows: dict[str, list[dict]], languages: list[str], figures: Path, method: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for language in [*languages, "macro"]:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        labels, means, errors = [], [], []
        for system, results in rows.items():
            values = [(r["macro"] if language == "macro" else r["per_language"][language])["ndcg@10"] for r in results]
            labels.append(system)
            means.append(statistics.mean(values))
            errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        colors = ["tab:red" if label == method else "tab:gray" if label in ("bm25", "untrained") else "tab:blue"
                  for label in labels]  # fmt: skip
        ax.bar(labels, means, yerr=errors, color=colors, capsize=3)
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{name} — {language} (mean ± std over seeds)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        fig.tight_layout()
        path = figures / f"{name}-{language}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def report(
    all_results: dict[str, dict[str, list[dict]]],
    wall_times: dict[str, list[float]],
    health: dict[str, dict[str, list[float]]],
    args: argparse.Namespace,
) -> str:
    """The generated part of docs/RESULTS.md."""
    figures = REPO / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Protocol `{args.protocol.relative_to(REPO)}`, seeds {args.seeds}, evaluation at max_seq_length "
        f"{args.max_seq_length}. Command: `python scripts/run_comparison.py --protocol "
        f"{args.protocol.relative_to(REPO)} --seeds {' '.join(map(str, args.seeds))} --workers {args.workers}`.",
        "",
        "Training wall time per run (1 CPU thread, two runs at a time) and the health signals at the last logged "
        "step (alignment and uniformity of the embeddings, lower is better for both; masked-token accuracy):",
        "",
        "| system | wall time (s) | alignment | uniformity | Auto-MLM acc. | MLM acc. |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for system in VARIANTS:
        if system not in wall_times:
            continue
        signals = health.get(system, {})
        cells = [_mean_std(signals[key]) if signals.get(key) else "-" for key in HEALTH_KEYS]
        lines.append(f"| {system} | {_mean_std(wall_times[system])} | " + " | ".join(cells) + " |")
    for name, rows in all_results.items():
        languages = list(next(iter(rows.values()))[0]["per_language"])
        lines += ["", f"### {name}", ""]
        for metric in METRICS:
            lines += [f"{metric} (mean ± std over seeds; BM25 is deterministic):", ""]
            lines.append("| system | " + " | ".join(languages) + " | **macro** |")
            lines.append("| --- " * (len(languages) + 2) + "|")
            for system, results in rows.items():
                cells = [_mean_std([r["per_language"][lang][metric] for r in results]) for lang in languages]
                macro = _mean_std([r["macro"][metric] for r in results])
                lines.append(f"| {system} | " + " | ".join(cells) + f" | **{macro}** |")
            lines.append("")
        lines += [f"Paired bootstrap (1000 resamples, per-query {METRICS[0]} averaged over seeds, macro over "
                  f"languages): {args.method} minus each system, 95% interval.", "",
                  "| comparison | difference | 95% CI | verdict |", "| --- | --- | --- | --- |"]  # fmt: skip
        method = _seed_mean_per_query(rows[args.method], METRICS[0])
        for system, results in rows.items():
            if system == args.method:
                continue
            diff, low, high = paired_bootstrap(method, _seed_mean_per_query(results, METRICS[0]), METRICS[0])
            verdict = "better" if low > 0 else "worse" if high < 0 else "no significant difference"
            lines.append(f"| {args.method} - {system} | {diff:+.3f} | [{low:+.3f}, {high:+.3f}] | {verdict} |")
        charts = _chart(name, rows, languages, figures, args.method)
        lines += ["", "Charts: " + ", ".join(f"[{p.stem}](../figures/{p.name})" for p in charts), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", type=Path, default=REPO / "configs" / "ablations" / "protocol-cpu.yaml")
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--method", default=VARIANTS[0], help="the variant compared with every other system")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "comparison")
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "results" / "comparison-cpu.md")
    args = parser.parse_args(argv)
    args.protocol = args.protocol.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for _, data, _ in EVAL_SETS:
        if not (REPO / data).is_dir():
            raise SystemExit(f"{data} is missing: build it with `python -m training.benchmark_data ...` first.")

    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]

    def job(item: tuple[str, int]) -> tuple[str, int, Path]:
        variant, seed = item
        if variant == "untrained":
            run_dir = untrained_one(args.protocol, seed, args.runs_dir)
        else:
            run_dir = train_one(args.protocol, variant, seed, args.runs_dir)
        for name, data, pivot in EVAL_SETS:
            out = run_dir / f"eval-{name}-{args.max_seq_length}.json"
            evaluate_one(str(run_dir / "final"), name, data, pivot, out, args.max_seq_length)
        return variant, seed, run_dir

    start = time.time()
    with ThreadPoolExecutor(args.workers) as pool:
        done = list(pool.map(job, [*jobs, *[("untrained", seed) for seed in args.seeds]]))
    logger.info("all runs done in %.0f s", time.time() - start)

    all_results: dict[str, dict[str, list[dict]]] = {name: {} for name, _, _ in EVAL_SETS}
    wall_times: dict[str, list[float]] = {}
    health: dict[str, dict[str, list[float]]] = {}
    for variant, _, run_dir in done:
        for name, _, _ in EVAL_SETS:
            result = json.loads((run_dir / f"eval-{name}-{args.max_seq_length}.json").read_text())
            all_results[name].setdefault(variant, []).append(result)
        metrics_file = run_dir / "final" / "training_metrics.json"
        if metrics_file.is_file():
            summary = json.loads(metrics_file.read_text())
            wall_times.setdefault(variant, []).append(summary["wall_time_s"])
            last = {k: v for record in summary["history"] for k, v in record.items() if v is not None}
            for key in HEALTH_KEYS:
                if key in last:
                    health.setdefault(variant, {}).setdefault(key, []).append(last[key])
    for name, data, pivot in EVAL_SETS:
        out = args.runs_dir / "bm25" / f"eval-{name}-{args.max_seq_length}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        all_results[name]["bm25"] = [evaluate_one("bm25", name, data, pivot, out, args.max_seq_length)]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(all_results, wall_times, health, args) + "\n")
    logger.info("wrote %s", args.report)


if __name__ == "__main__":
    main()
