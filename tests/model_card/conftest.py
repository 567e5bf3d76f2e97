"""Export folders for the model-card tests: a real export of a tiny model plus the JSON files the trainer writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LANGUAGES = ["en", "fr", "zh", "zh-Hant"]
METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def eval_entry(model: str, offset: float, task: str = "monolingual") -> dict:
    """One evaluation result with awkward (non-round) numbers, so a rounded copy would not compare equal."""
    per_language = {
        language: {
            **{metric: round(0.123456789 + offset + 0.0713 * i + 0.011 * j, 9) for j, metric in enumerate(METRICS)},
            "num_queries": 40 + i,
            "num_documents": 200,
        }
        for i, language in enumerate(LANGUAGES)
    }
    macro = {metric: sum(m[metric] for m in per_language.values()) / len(LANGUAGES) for metric in METRICS}
    return {
        "model": model,
        "dataset": "chatterbot-qa",
        "task": task,
        "max_seq_length": 64,
        "per_language": per_language,
        "macro": macro,
        "per_query": {"en": {"q1": 0.5}},
    }


def write_training_files(folder: Path, *, backbone: str = "scratch", history: bool = False, evaluation: bool = True):
    """The JSON files the trainer and the evaluation write next to the model.

    The training history is off by default: drawing the curves takes a second or two on a busy CPU.
    """
    write_json(
        folder / "training_config.json",
        {
            "model": {"backbone": backbone, "hidden_size": 32, "num_hidden_layers": 2},
            "data": {"train_files": ["chatterbot-corpus"], "languages": LANGUAGES, "max_seq_length": 64},
            "training": {"max_steps": 30, "per_device_train_batch_size": 16, "learning_rate": 3e-4, "seed": 42},
        },
    )
    steps = [
        {"step": 10, "loss": 5.5, "cl_loss": 2.1, "auto_mlm_loss": 6.0, "mlm_loss": None, "learning_rate": 3e-4},
        {"step": 20, "loss": 4.25, "cl_loss": 1.5, "auto_mlm_loss": 5.5, "learning_rate": 2e-4, "dev_ndcg@10": 0.31},
        {"step": 30, "loss": 3.75, "cl_loss": 1.0, "auto_mlm_loss": 5.0, "alignment": 0.4, "uniformity": -2.5},
    ]
    write_json(
        folder / "training_metrics.json",
        {
            "wall_time_s": 3723.4,
            "hardware": "CPU (2 cores)",
            "num_processes": 1,
            "steps": 30,
            "sentences_seen": 480,
            "throughput_sentences_per_s": 0.129,
            "final": {"loss": 3.75, "cl_loss": 1.0, "auto_mlm_loss": 5.0, "mlm_loss": None, "auto_mlm_accuracy": 0.02},
            "history": steps if history else [],
        },
    )
    write_json(
        folder / "data_stats.json",
        {
            "sentences_per_language": {"en": 1200, "fr": 800, "zh": 500, "zh-Hant": 450},
            "total_sentences": 2950,
            "skipped_blank_lines": 7,
            "sources": [
                {
                    "name": "chatterbot-corpus",
                    "license": "BSD-3-Clause",
                    "url": "https://github.com/gunthercox/chatterbot-corpus",
                },
                {"name": "org/faq-queries", "hub_id": "org/faq-queries"},
                {"name": "local.txt"},
            ],
        },
    )
    if evaluation:
        write_json(folder / "eval_results.json", [eval_entry(folder.name, 0.0), eval_entry("bm25", 0.05)])


@pytest.fixture
def export_dir(make_model, tokenizer, tmp_path) -> Path:
    """A real custom-code export (weights, code, tokenizer, sentence-transformers files) with the training JSONs."""
    from training.export import export_sentence_transformers

    folder = tmp_path / "automlm-tiny"
    export_sentence_transformers(make_model(), tokenizer, folder, max_seq_length=64)
    write_training_files(folder)
    return folder
