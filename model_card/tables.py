"""The Markdown tables of the model card, built from the JSON files of an export folder."""

from __future__ import annotations

import json
import math
from typing import Any

from evaluation.report import markdown_table
from modeling_automlm.configuration_automlm import AutoMLMConfig

# Metric names whose usual spelling is not the capitalised key.
_METRIC_SPELLING = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP"}
COUNT_COLUMNS = {"num_queries": "Queries", "num_documents": "Documents"}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_display_name(key: str) -> str:
    """``ndcg@10`` -> ``NDCG@10``, ``recall@1`` -> ``Recall@1``, ``num_queries`` -> ``Queries``."""
    if key in COUNT_COLUMNS:
        return COUNT_COLUMNS[key]
    name, at, cutoff = key.partition("@")
    return _METRIC_SPELLING.get(name.lower(), name.replace("_", " ").capitalize()) + at + cutoff


def format_duration(seconds: float) -> str:
    """``3723.4`` -> ``1 h 02 min 03 s``; ``42`` -> ``42 s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def format_value(value: Any, max_items: int = 8) -> str:
    """Render a setting or a metric for a Markdown table cell (pipes escaped, long lists shortened)."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = str(value) if math.isfinite(value) else "n/a"
    elif isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(item) for item in value[:max_items])
        text = shown if len(value) <= max_items else f"{shown}, ... ({len(value)} items)"
        text = text or "[]"
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def format_metric(value: Any) -> str:
    """A metric in a results table: four decimals for scores, thousands separators for counts."""
    if not is_number(value):
        return "n/a" if value is None else format_value(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def task_label(entry: dict[str, Any]) -> str:
    """What an evaluation entry measured: ``monolingual``, ``cross-lingual, en corpus``..."""
    label = str(entry.get("task") or "retrieval")
    return label + (f", {entry['corpus_language']} corpus" if entry.get("corpus_language") else "")


# ----------------------------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------------------------
def objective_table(config: dict[str, Any]) -> str | None:
    """The objective fields of an Auto-MLM ``config.json``, with their defaults and what they mean."""
    rows = [
        [f"`{spec.name}`", format_value(config[spec.name]), format_value(spec.default), spec.summary]
        for spec in AutoMLMConfig.objective_fields()
        if spec.name in config
    ]
    return markdown_table(rows, ["Setting", "Value", "Default", "Meaning"]) if rows else None


def settings_tables(settings: dict[str, Any], *, skip: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """One table per section of ``training_config.json`` (and one for top-level keys that are not sections),
    leaving out the keys in `skip` (shown elsewhere)."""
    loose = {key: value for key, value in settings.items() if not isinstance(value, dict)}
    sections = [(key, value) for key, value in settings.items() if isinstance(value, dict)]
    if loose:
        sections.insert(0, ("settings", loose))
    tables = []
    for title, section in sections:
        rows = [[f"`{key}`", format_value(value)] for key, value in section.items() if key not in skip]
        if rows:
            tables.append({"title": title, "table": markdown_table(rows, ["Setting", "Value"])})
    return tables


def data_table(sentences_per_language: dict[str, int]) -> str | None:
    """Sentences per language, from ``data_stats.json``."""
    rows = [[str(language), format_metric(count)] for language, count in sentences_per_language.items()]
    return markdown_table(rows, ["Language", "Sentences"]) if rows else None


def training_table(metrics: dict[str, Any]) -> str | None:
    """Hardware, time, throughput and final losses from ``training_metrics.json``."""
    rows = []
    if metrics.get("hardware"):
        processes = metrics.get("num_processes")
        plural = "es" if processes != 1 else ""
        hardware = str(metrics["hardware"]) + (f", {processes} process{plural}" if is_number(processes) else "")
        rows.append(["Hardware", hardware])
    if is_number(metrics.get("wall_time_s")):
        rows.append(["Wall time", format_duration(metrics["wall_time_s"])])
    for key, label in (("steps", "Optimizer steps"), ("sentences_seen", "Sentences seen")):
        if is_number(metrics.get(key)):
            rows.append([label, format_metric(metrics[key])])
    if is_number(metrics.get("throughput_sentences_per_s")):
        rows.append(["Throughput", f"{metrics['throughput_sentences_per_s']:.1f} sentences/s"])
    for key, value in (metrics.get("final") or {}).items():
        if is_number(value):
            rows.append([f"Final `{key}`", format_metric(value)])
    rows = [[label, value.replace("|", "\\|")] for label, value in rows]
    return markdown_table(rows, ["Measure", "Value"]) if rows else None


def evaluation_tables(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table per evaluation entry: its metrics per language, then the macro average in bold."""
    show_model = len({entry.get("model") for entry in entries}) > 1
    tables = []
    for entry in entries:
        per_language = entry.get("per_language") or {}
        macro = entry.get("macro") or {}
        keys = list(dict.fromkeys(key for metrics in [*per_language.values(), macro] for key in metrics))
        keys = [key for key in keys if key not in COUNT_COLUMNS] + [key for key in keys if key in COUNT_COLUMNS]
        rows = [[language] + [format_metric(m.get(key)) for key in keys] for language, m in per_language.items()]
        if macro:
            rows.append(["**macro**"] + [f"**{format_metric(macro[k])}**" if k in macro else "" for k in keys])
        title = f"Retrieval on {entry.get('dataset') or 'unknown data'}: {task_label(entry)}"
        if show_model:
            title += f" ({entry.get('model')})"
        header = ["Language"] + [metric_display_name(key) for key in keys]
        tables.append(
            {"title": title, "max_seq_length": entry.get("max_seq_length"), "table": markdown_table(rows, header)}
        )
    return tables


def comparison_tables(entries: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Macro averages of every model evaluated on the same data and task, when there are several; the entries in
    `own` (this model's) are marked."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault((str(entry.get("dataset")), task_label(entry)), []).append(entry)
    own_ids = {id(entry) for entry in own}
    tables = []
    for (dataset, task), group in groups.items():
        if len({entry.get("model") for entry in group}) < 2:
            continue
        keys = list(dict.fromkeys(k for e in group for k in (e.get("macro") or {}) if k not in COUNT_COLUMNS))
        rows = []
        for entry in group:
            name = str(entry.get("model"))
            name = f"**{name} (this model)**" if id(entry) in own_ids else name
            rows.append([name] + [format_metric((entry.get("macro") or {}).get(key)) for key in keys])
        header = ["Model"] + [metric_display_name(key) for key in keys]
        title = f"retrieval on {dataset}: {task}, macro average over languages"
        tables.append({"title": title, "table": markdown_table(rows, header)})
    return tables
