"""Health signals of an embedding space (Wang and Isola, 2020): alignment and uniformity."""

from __future__ import annotations

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
