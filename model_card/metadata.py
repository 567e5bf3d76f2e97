"""The Hub metadata of the model card: language codes, the base model, the `model-index` evaluation results."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .tables import COUNT_COLUMNS, is_number, metric_display_name, task_label

logger = logging.getLogger(__name__)

EVAL_TASK_TYPE = "information-retrieval"  # the task type sentence-transformers uses for retrieval results
_LANGUAGE_SUBTAG = re.compile(r"^[a-z]{2,3}$")


def hub_language_codes(codes: list[str]) -> list[str]:
    """Map language tags to the codes the Hub's `language` metadata accepts, in order and without duplicates.

    The Hub takes ISO 639-1/2/3 codes, so a BCP 47 tag keeps its primary subtag: ``zh-Hant`` and ``zh`` both become
    ``zh``, ``hi-Latn`` becomes ``hi``. A tag without a two- or three-letter primary subtag is dropped with a
    warning (it would make the metadata invalid).

    Args:
        codes: language tags such as ``["en", "zh", "zh-Hant"]``.

    Returns:
        Hub language codes, e.g. ``["en", "zh"]``.
    """
    hub_codes: list[str] = []
    for code in codes:
        primary = re.split(r"[-_]", str(code).strip())[0].lower()
        if not _LANGUAGE_SUBTAG.match(primary):
            logger.warning("Language %r is not an ISO 639 code; it is left out of the card's metadata.", code)
            continue
        if primary not in hub_codes:
            hub_codes.append(primary)
    return hub_codes


def is_hub_model_id(name: str | None) -> bool:
    """Whether `name` looks like a Hub model id (``xlm-roberta-base``, ``org/name``) rather than a local folder."""
    if not name or name == "scratch" or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_index_results(entries: list[dict[str, Any]]) -> list[EvalResult]:
    """One `EvalResult` per (task, language, metric) of the evaluation entries, plus the macro averages; counts
    excluded, and NaN (a metric that could not be computed)."""
    results = []
    for entry in entries:
        dataset = str(entry.get("dataset") or "unknown")
        task_name = f"Retrieval ({task_label(entry)})"
        rows = [(language, metrics) for language, metrics in (entry.get("per_language") or {}).items()]
        rows.append((None, entry.get("macro") or {}))
        for language, metrics in rows:
            for key, value in metrics.items():
                if key in COUNT_COLUMNS or not is_number(value) or not math.isfinite(value):
                    continue
                results.append(
                    EvalResult(
                        task_type=EVAL_TASK_TYPE,
                        task_name=task_name,
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_config=language,
                        dataset_split=entry.get("split"),
                        metric_type=key,
                        metric_value=value,
                        metric_name=metric_display_name(key) + (" (macro average)" if language is None else ""),
                    )
                )
    return results
