"""How much each loss term moves the encoder: the norm of its gradient at the encoder's layers."""

from __future__ import annotations

import torch

from modeling_automlm import AutoMLMForPreTraining, AutoMLMForPreTrainingOutput
from modeling_automlm.modeling_automlm import AUTO_MLM_TERM, CL_TERM, LOSS_TERMS


def encoder_layer_parameters(model: AutoMLMForPreTraining) -> list[torch.nn.Parameter]:
    """The trainable parameters of the encoder that make the sentence vector, less the word-embedding table.

    The table is left out because the Auto-MLM head reads it directly (its tied output projection and the masked
    tokens' embeddings): a gradient there says nothing about whether the term moves the sentence vector.
    """
    table = model.get_input_embeddings().weight
    return [p for p in model.automlm.parameters() if p.requires_grad and p is not table]


def term_gradient_norms(model: AutoMLMForPreTraining, outputs: AutoMLMForPreTrainingOutput) -> dict[str, float]:
    """`{grad_norm_<term>: ...}`: the L2 norm over the encoder's layers of each weighted loss term's gradient, and
    `grad_ratio_auto_mlm`, the Auto-MLM term's norm over CL's.

    Each term is differentiated on its own (`torch.autograd.grad`, the graph kept for the step's own backward), so
    this costs one backward pass per term: a diagnostic for logging steps, not for every step. With
    `auto_mlm_gradient_share` the Auto-MLM term's gradient at the sentence vector depends on CL's in the same
    backward pass, so its part is measured as the gradient of CL + Auto-MLM less that of CL alone (one more pass).
    """
    parameters = encoder_layer_parameters(model)
    norms: dict[str, float] = {}
    cl_loss = outputs.cl_loss
    capped = model.config.auto_mlm_gradient_share is not None and cl_loss is not None and cl_loss.requires_grad
    for term in LOSS_TERMS:
        loss, weight, key = getattr(outputs, term.loss_key), term.weight(model.config), f"grad_norm_{term.name}"
        if loss is None or not weight or not loss.requires_grad:
            continue
        if capped and term is AUTO_MLM_TERM:
            weighted_cl = CL_TERM.weight(model.config) * cl_loss
            grads = _dense(
                torch.autograd.grad(weighted_cl + weight * loss, parameters, retain_graph=True, allow_unused=True)
            )
            cl_grads = _dense(torch.autograd.grad(weighted_cl, parameters, retain_graph=True, allow_unused=True))
            grads = [g if c is None else g - c for g, c in zip(grads, cl_grads, strict=True) if g is not None]
        else:
            grads = _dense(torch.autograd.grad(weight * loss, parameters, retain_graph=True, allow_unused=True))
        squares = [g.float().pow(2).sum() for g in grads if g is not None]
        norms[key] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    cl, auto_mlm = f"grad_norm_{CL_TERM.name}", f"grad_norm_{AUTO_MLM_TERM.name}"
    if norms.get(cl) and auto_mlm in norms:
        norms[f"grad_ratio_{AUTO_MLM_TERM.name}"] = norms[auto_mlm] / norms[cl]
    return norms


def _dense(grads: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor | None]:
    return [g.to_dense() if g is not None and g.is_sparse else g for g in grads]
