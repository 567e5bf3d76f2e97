"""Health signals of a run: an embedding space's alignment and uniformity (Wang and Isola, 2020), and the step where
CL has solved its in-batch task."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def alignment(anchors: torch.Tensor, positives: torch.Tensor, alpha: float = 2.0) -> float:
    """`E ||f(x) - f(x+)||^alpha` over positive pairs of normalised embeddings (lower is better)."""
    anchors, positives = F.normalize(anchors.float(), dim=-1), F.normalize(positives.float(), dim=-1)
    return (anchors - positives).norm(dim=-1).pow(alpha).mean().item()


def uniformity(embeddings: torch.Tensor, t: float = 2.0) -> float:
    """`log E exp(-t ||f(x) - f(y)||^2)` over distinct pairs of normalised embeddings (lower is better)."""
    embeddings = F.normalize(embeddings.float(), dim=-1)
    if len(embeddings) < 2:
        return float("nan")
    return torch.pdist(embeddings, p=2).pow(2).mul(-t).exp().mean().log().item()


def embedding_health(anchors: torch.Tensor, positives: torch.Tensor | None = None) -> dict[str, float]:
    """``{"alignment": ..., "uniformity": ...}`` of a batch's embeddings (alignment only with positives)."""
    health = {} if positives is None else {"alignment": alignment(anchors.detach(), positives.detach())}
    health["uniformity"] = uniformity(anchors.detach())
    return health


CL_SOLVED_LOSS = 0.01
"""A mean contrastive loss below this means CL has solved its in-batch task: on the whole-corpus study it fell below
it at step 100 (1e-5) and step 200 (2.5e-6), where the default's dev score had just peaked and from where the Auto-MLM
term's gradient at the encoder was 8 to 77 times CL's (docs/RESULTS.md, "The whole-corpus study")."""


def contrastive_task_solved(history: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    """True for the first logged `record` whose ``cl_loss`` is below `CL_SOLVED_LOSS`, given the run's `history`
    before it; False before that record, after it (a resumed run keeps its history) and without a CL term."""
    if record.get("cl_loss", math.inf) >= CL_SOLVED_LOSS:
        return False
    return all(earlier.get("cl_loss", math.inf) >= CL_SOLVED_LOSS for earlier in history)
