"""The training-curves picture of the model card: one panel per quantity, against the optimizer step."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeling_automlm import modeling_automlm as modeling

from .tables import is_number, metric_display_name

logger = logging.getLogger(__name__)

# What the trainer logs beside the loss terms (`LOSS_TERMS` names those), as a reader would name it.
LABELS = {
    "loss": "joint loss",
    "auto_mlm_heldout_accuracy": "Auto-MLM head, held-out (own vector)",
    "auto_mlm_heldout_accuracy_other_vector": "Auto-MLM head, held-out (another sentence's vector)",
    "auto_mlm_heldout_vector_share": "Auto-MLM head, held-out: from the vector",
    "learning_rate": "learning rate",
    "sentences_per_s": "sentences/s",
    "tokens_per_s": "tokens/s (right axis)",
}


@dataclass(frozen=True)
class Panel:
    """How a panel's y axis reads."""

    ylabel: str
    ylim: tuple[float, float] | None = None


# The panels, in drawing order, by title.
PANELS = {
    "Losses": Panel("loss"),
    "Masked-token accuracy": Panel("share of masked tokens predicted", ylim=(0.0, 1.0)),
    "Learning rate": Panel("learning rate"),
    "Alignment and uniformity": Panel("lower is better"),
    "Throughput": Panel("sentences/s"),
    "Dev evaluation": Panel("score"),
}


def _panel_of(key: str) -> str | None:
    """The panel title of a history key; None for what no panel shows (the ETA, unknown keys)."""
    if key.startswith(("dev_", "eval_")):
        return "Dev evaluation"
    if key.endswith("loss"):
        return "Losses"
    if key.endswith("accuracy") or key.startswith("auto_mlm_heldout"):
        return "Masked-token accuracy"
    if key in ("learning_rate", "lr"):
        return "Learning rate"
    if key in ("alignment", "uniformity"):
        return "Alignment and uniformity"
    if key in ("sentences_per_s", "tokens_per_s"):
        return "Throughput"
    return None


def _label(key: str) -> str:
    """A term's loss key -> its label (``CL``); its accuracy key -> ``<label> head (training batch)``;
    ``dev_ndcg@10`` -> ``NDCG@10 (dev)``."""
    if key.startswith(("dev_", "eval_")):
        split, _, metric = key.partition("_")
        return f"{metric_display_name(metric)} ({split})"
    for term in modeling.LOSS_TERMS:
        if key == term.loss_key:
            return term.label
        if key == term.accuracy_key:
            return f"{term.label} head (training batch)"
    return LABELS.get(key, key)


def curve_panels(history: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """``{panel title: {key: (steps, values)}}``: the finite numbers of the history, in the panels that draw them.

    Entries may lack keys or hold None. Panels without data are left out; keys no panel shows (the ETA) too.
    """
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {title: {} for title in PANELS}
    for entry in history:
        step = entry.get("step")
        if not is_number(step):
            continue
        for key, value in entry.items():
            title = _panel_of(key)
            if title and is_number(value) and math.isfinite(value):
                xs, ys = panels[title].setdefault(key, ([], []))
                xs.append(step)
                ys.append(value)
    return {title: series for title, series in panels.items() if series}


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Plot the training history against the step, one panel per quantity (losses, masked-token accuracy, learning
    rate, alignment and uniformity, throughput, dev metrics); panels without data are left out.

    Needs matplotlib; without it, or without any series, nothing is written.

    Args:
        history: ``training_metrics.json``'s ``history``: dicts with a ``step`` and values.
        path: the PNG to write.

    Returns:
        The path written, or None.
    """
    panels = curve_panels(history)
    if not panels:
        return None
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        logger.warning("matplotlib is not installed: the card has no training curves (pip install matplotlib).")
        return None
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5.5 * columns, 3.4 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).flatten()
    for axes in grid[len(panels) :]:
        axes.set_visible(False)
    for axes, (title, series) in zip(grid, panels.items()):
        panel, lines = PANELS[title], []
        for key, (xs, ys) in series.items():
            # Tokens/s is about 20 times sentences/s: it gets an axis of its own, on the right.
            target = axes.twinx() if key == "tokens_per_s" else axes
            marker = "o" if len(xs) < 20 else None
            lines += target.plot(xs, ys, marker=marker, markersize=3, color=f"C{len(lines)}", label=_label(key))
            if target is not axes:
                target.set_ylabel("tokens/s")
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.set_ylabel(panel.ylabel)
        if panel.ylim:
            axes.set_ylim(*panel.ylim)
        if title == "Learning rate":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axes.grid(alpha=0.3)
        axes.legend(handles=lines, fontsize="small")
    path = Path(path)
    figure.savefig(path, dpi=100, metadata={"Software": None})
    logger.info("Wrote the training curves to %s", path)
    return path
