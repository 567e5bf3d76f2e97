"""`auto_mlm_gradient_share`: the Auto-MLM term's gradient at the sentence vector capped at a share of CL's."""

from __future__ import annotations

import pytest
import torch

from modeling_automlm.modeling_automlm import cap_head_gradient
from training.gradcache import grad_cache_step
from training.gradients import encoder_layer_parameters, term_gradient_norms


def test_the_head_gradient_is_scaled_to_the_share_of_cls():
    vector = torch.randn(4, 6, requires_grad=True)
    g_cl, g_head = torch.randn(4, 6), 10 * torch.randn(4, 6)
    for_cl, for_head = cap_head_gradient(vector, 0.25)
    torch.testing.assert_close(for_cl, vector)
    torch.testing.assert_close(for_head, vector)
    ((for_cl * g_cl).sum() + (for_head * g_head).sum()).backward()
    scale = 0.25 * g_cl.norm() / g_head.norm()
    assert scale < 1
    torch.testing.assert_close(vector.grad, g_cl + scale * g_head)
    assert (vector.grad - g_cl).norm().item() == pytest.approx(0.25 * g_cl.norm().item(), rel=1e-5)

    vector.grad = None  # a head gradient under the cap passes unchanged
    for_cl, for_head = cap_head_gradient(vector, 0.25)
    ((for_cl * g_cl).sum() + (for_head * 0.01 * g_cl).sum()).backward()
    torch.testing.assert_close(vector.grad, 1.01 * g_cl)

    vector.grad = None  # the head's term alone: no CL gradient to share, so nothing reaches the vector
    _, for_head = cap_head_gradient(vector, 0.25)
    (for_head * g_head).sum().backward()
    assert vector.grad.abs().sum() == 0


def _layer_gradients(model, batch, masked, labels, loss_name="loss"):
    model.zero_grad(set_to_none=True)
    output = model(**batch, masked_input_ids=masked, mlm_labels=labels)
    getattr(output, loss_name).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in encoder_layer_parameters(model)]
    head = {
        n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("auto_mlm_head.") and p.grad is not None
    }
    return output, grads, head


def test_the_cap_bounds_only_the_path_through_the_sentence_vector(make_dropout_free_model, batch):
    masked, labels = make_dropout_free_model().mask(
        batch["input_ids"], batch["attention_mask"], generator=torch.Generator().manual_seed(2)
    )
    free = make_dropout_free_model(auto_mlm_weight=0.5)
    free_out, free_layers, free_head = _layer_gradients(free, batch, masked, labels)
    _, cl_layers, _ = _layer_gradients(free, batch, masked, labels, "cl_loss")

    # A cap far above the term's share changes nothing; the forward pass never changes.
    loose = make_dropout_free_model(auto_mlm_weight=0.5, auto_mlm_gradient_share=1e6)
    loose_out, loose_layers, _ = _layer_gradients(loose, batch, masked, labels)
    torch.testing.assert_close(loose_out.loss, free_out.loss)
    torch.testing.assert_close(loose_out.sentence_embedding, free_out.sentence_embedding)
    for actual, expected in zip(loose_layers, free_layers, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)

    # Share 0: the encoder's layers get CL's gradient alone, the head still learns the whole term.
    closed = make_dropout_free_model(auto_mlm_weight=0.5, auto_mlm_gradient_share=0.0)
    closed_out, closed_layers, closed_head = _layer_gradients(closed, batch, masked, labels)
    assert free_head and closed_head.keys() == free_head.keys()
    torch.testing.assert_close(closed_out.loss, free_out.loss)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(free_layers, cl_layers, strict=True))
    for actual, expected in zip(closed_layers, cl_layers, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    for name, grad in free_head.items():
        torch.testing.assert_close(closed_head[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_the_gradient_norms_measure_the_capped_term(make_model, batch):
    torch.manual_seed(0)
    model = make_model(auto_mlm_weight=0.5, auto_mlm_gradient_share=0.0)
    norms = term_gradient_norms(model, model(**batch))
    assert norms["grad_norm_cl"] > 0 and norms["grad_norm_auto_mlm"] == pytest.approx(0.0, abs=1e-6)
    model = make_model(auto_mlm_weight=0.5, auto_mlm_gradient_share=1e6)
    torch.manual_seed(0)
    capped = term_gradient_norms(model, model(**batch))
    model.config.auto_mlm_gradient_share = None
    torch.manual_seed(0)
    free = term_gradient_norms(model, model(**batch))
    assert capped["grad_norm_auto_mlm"] == pytest.approx(free["grad_norm_auto_mlm"], rel=1e-4)


def test_grad_cache_with_one_chunk_equals_the_uncached_step(make_dropout_free_model, batch):
    model = make_dropout_free_model(auto_mlm_gradient_share=0.1)
    masked, labels = model.mask(
        batch["input_ids"], batch["attention_mask"], generator=torch.Generator().manual_seed(1)
    )
    model(**batch, masked_input_ids=masked, mlm_labels=labels).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    grad_cache_step(model, {**batch, "masked_input_ids": masked, "mlm_labels": labels}, chunk_size=8)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"auto_mlm_gradient_share": -0.1}, r"`auto_mlm_gradient_share` must be a number in \[0.0, inf\]"),
        ({"auto_mlm_gradient_share": 0.25, "contrastive_weight": 0.0}, "set a positive `contrastive_weight`"),
    ],
)
def test_a_bad_share_is_refused(make_config, fields, message):
    with pytest.raises(ValueError, match=message):
        make_config(**fields)
