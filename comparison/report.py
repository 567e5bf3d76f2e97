"""The report of a comparison: training cost and health, metrics per language (mean ± std over seeds), paired
bootstrap verdicts against the method, and one bar chart per language."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from evaluation.bootstrap import paired_bootstrap
from evaluation.report import markdown_table
from modeling_automlm.modeling_automlm import LOSS_TERMS

METRICS = ("ndcg@10", "mrr@10")
HEALTH_KEYS = ("alignment", "uniformity", *(term.accuracy_key for term in LOSS_TERMS if term.has_accuracy))
# Systems that are not trained variants: drawn in grey in the charts.
BASELINES = ("bm25", "untrained")

Results = dict[str, dict[str, list[dict]]]  # eval set -> system -> one result per seed


def mean_std(values: list[float]) -> str:
    """``"0.123 ± 0.004"`` over seeds, or the value alone for a single seed."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def seed_mean_per_query(results: list[dict], metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per-query metric averaged over seeds, ``{lang: {qid: {metric: v}}}``, for the paired bootstrap."""
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for language, queries in results[0]["per_query"].items():
        merged[language] = {
            qid: {metric: statistics.mean(r["per_query"][language][qid][metric] for r in results)} for qid in queries
        }
    return merged


def chart(name: str, rows: dict[str, list[dict]], languages: list[str], figures: Path, method: str) -> list[Path]:
    """One bar chart of nDCG@10 (mean ± std over seeds) per language and for the macro average; returns the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    for language in [*languages, "macro"]:
        fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * (len(rows) + 1)), 3.6))  # room for every label
        labels, means, errors = [], [], []
        for system, results in rows.items():
            values = [(r["macro"] if language == "macro" else r["per_language"][language])["ndcg@10"] for r in results]
            labels.append(system)
            means.append(statistics.mean(values))
            errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        colors = ["tab:red" if label == method else "tab:gray" if label in BASELINES else "tab:blue"
                  for label in labels]  # fmt: skip
        bars = ax.bar(labels, means, yerr=errors, color=colors, capsize=3)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)  # differences of 0.01 do not show in the bars
        ax.set_ylabel("nDCG@10")
        ax.set_ylim(0, min(1.0, max(means) * 1.15) if max(means) > 0 else 1.0)
        ax.set_title(f"{name} — {language} (mean ± std over seeds)")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
        fig.tight_layout()
        path = figures / f"{name}-{language}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def render_report(
    all_results: Results,
    wall_times: dict[str, list[float]],
    health: dict[str, dict[str, list[float]]],
    *,
    variants: Sequence[str],
    method: str,
    command: str,
    header: str,
    report_path: Path,
    figures: Path,
) -> str:
    """The markdown report; writes the charts into `figures` and links them relative to `report_path`.

    Args:
        all_results: eval set -> system -> one `evaluation` result per seed.
        wall_times: variant -> training wall time per seed, in seconds.
        health: variant -> health signal -> its value at the last logged step, per seed.
        variants: the trained variants, in table order.
        method: the variant every other system is compared with.
        command: the command that produced the runs, quoted in the report.
        header: what the protocol was (file, seeds, max_seq_length).
        report_path: where the report will be written (for the chart links).
        figures: where the charts go.
    """
    lines = [
        f"{header} Command: `{command}`.",
        "",
        "Training wall time per run (as recorded by the run: a reused run keeps the time it took then, on a machine "
        "that other runs may have shared, so times compare only between runs made together) and the health "
        "signals at the last logged step (alignment and uniformity of the embeddings, lower is better for both; "
        "masked-token accuracy):",
        "",
    ]
    rows = []
    for system in variants:
        if system in wall_times:
            signals = health.get(system, {})
            cells = [mean_std(signals[key]) if signals.get(key) else "-" for key in HEALTH_KEYS]
            rows.append([system, mean_std(wall_times[system]), *cells])
    headers = ["system", "wall time (s)", "alignment", "uniformity", "Auto-MLM acc.", "MLM acc."]
    lines.append(markdown_table(rows, headers))
    for name, systems in all_results.items():
        languages = list(next(iter(systems.values()))[0]["per_language"])
        lines += ["", f"### {name}", ""]
        for metric in METRICS:
            lines += [f"{metric} (mean ± std over seeds; BM25 is deterministic):", ""]
            rows = [
                [
                    system,
                    *(mean_std([r["per_language"][lang][metric] for r in results]) for lang in languages),
                    f"**{mean_std([r['macro'][metric] for r in results])}**",
                ]
                for system, results in systems.items()
            ]
            lines += [markdown_table(rows, ["system", *languages, "**macro**"]), ""]
        lines += [f"Paired bootstrap (1000 resamples, per-query {METRICS[0]} averaged over seeds, macro over "
                  f"languages): {method} minus each system, 95% interval.", ""]  # fmt: skip
        reference = seed_mean_per_query(systems[method], METRICS[0])
        rows = []
        for system, results in systems.items():
            if system != method:
                diff, low, high = paired_bootstrap(reference, seed_mean_per_query(results, METRICS[0]), METRICS[0])
                verdict = "better" if low > 0 else "worse" if high < 0 else "no significant difference"
                rows.append([f"{method} - {system}", f"{diff:+.3f}", f"[{low:+.3f}, {high:+.3f}]", verdict])
        lines.append(markdown_table(rows, ["comparison", "difference", "95% CI", "verdict"]))
        charts = chart(name, systems, languages, figures, method)
        links = [f"[{p.stem}]({Path(os.path.relpath(p, report_path.parent)).as_posix()})" for p in charts]
        lines += ["", "Charts: " + ", ".join(links), ""]
    return "\n".join(lines)
