"""`anchor_weight`: a term that keeps the adapted encoder near the one it started from (a control for the
adaptation study: how much of a gain is only moving less)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from modeling_automlm import AutoMLMForPreTraining, AutoMLMModel


def build_anchor(model: AutoMLMForPreTraining) -> AutoMLMModel:
    """A frozen copy of the encoder as it starts, for `anchor_weight`.

    Built from the freshly built model, before any step and before a checkpoint is loaded, so that a resumed run
    holds the encoder near the same starting point as an uninterrupted one. It is not saved: it is the backbone.
    """
    return copy.deepcopy(model.automlm).eval().requires_grad_(False)


def anchor_loss(anchor: AutoMLMModel, batch: dict[str, torch.Tensor], embeddings: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cosine` between each sentence's embedding and the starting encoder's embedding of it.

    A term that keeps the adapted space near the pretrained one (a control for the adaptation study: how much of a
    gain is only moving less, docs/results/history.md). `embeddings` are the first dropout view the model returned; the
    target has no dropout, so the term is above zero at step 0 (dropout noise: 0.011 on multilingual-e5-small) and
    also asks the encoder to be robust to dropout. Only the sentences are anchored, not explicit positives. It runs
    in the parameters' precision, outside autocast.
    """
    with torch.no_grad():
        target = anchor(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        ).sentence_embedding
    return (1.0 - F.cosine_similarity(embeddings.float(), target.float(), dim=-1)).mean()
