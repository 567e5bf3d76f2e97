"""Gradient caching against ordinary backpropagation of the same loss, with dropout off and on."""

from __future__ import annotations

import pytest
import torch

from modeling_automlm import contrastive_loss
from modeling_automlm.masking import IGNORE_INDEX
from training.gradcache import grad_cache_step

VARIANTS = {
    "cl": {"auto_mlm_weight": 0.0},
    "cl+auto_mlm": {},
    "cl+mlm": {"auto_mlm_weight": 0.0, "mlm_weight": 0.3},
    "cl+auto_mlm+mlm": {"mlm_weight": 0.3},
    "auto_mlm_alone": {"contrastive_weight": 0.0},
}


@pytest.fixture
def masked_batch(batch, make_model):
    """The fixture batch with its token masks drawn once, so that every run sees the same masks."""
    model = make_model()
    masked, labels = model.mask(
        batch["input_ids"], batch["attention_mask"], generator=torch.Generator().manual_seed(1)
    )
    return {**batch, "masked_input_ids": masked, "mlm_labels": labels}


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same_gradients(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert any(g.abs().sum() > 0 for g in expected.values())
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def uncached_chunked_step(model, batch, chunk_size: int):
    """Ordinary backpropagation of the full-batch loss, the forward run chunk by chunk (as the cache draws dropout).

    Every chunk's graph is kept until one backward of the full-batch loss: the memory gradient caching avoids.
    """
    config = model.config
    starts = range(0, len(batch["input_ids"]), chunk_size)
    outputs = [model(**{key: value[s : s + chunk_size] for key, value in batch.items()}) for s in starts]
    loss = torch.zeros(())
    if config.contrastive_weight > 0:
        anchors = torch.cat([o.sentence_embedding for o in outputs])
        positives = torch.cat([o.positive_embedding for o in outputs])
        loss = loss + config.contrastive_weight * contrastive_loss(anchors, positives, config.contrastive_temperature)
    # A mean over all masked tokens of the batch is the token-weighted mean of the chunks' means.
    counts = [int((batch["mlm_labels"][s : s + chunk_size] != IGNORE_INDEX).sum()) for s in starts]
    for name, weight in (("auto_mlm_loss", config.auto_mlm_weight), ("mlm_loss", config.mlm_weight)):
        if weight > 0:
            loss = loss + weight * sum(n * getattr(o, name) for n, o in zip(counts, outputs)) / sum(counts)
    loss.backward()
    return loss


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("chunk_size", [3, 8])
def test_equals_the_uncached_step_without_dropout(make_dropout_free_model, masked_batch, variant, chunk_size):
    """Without dropout the cached gradients equal `model(**batch).loss.backward()` on the whole batch."""
    model = make_dropout_free_model(**VARIANTS[variant])
    expected = model(**masked_batch)
    expected.loss.backward()
    expected_grads = gradients(model)

    output = grad_cache_step(model, masked_batch, chunk_size=chunk_size)
    assert_same_gradients(gradients(model), expected_grads)
    torch.testing.assert_close(output.loss, expected.loss.detach(), atol=1e-6, rtol=1e-5)
    for name in ("cl_loss", "auto_mlm_loss", "mlm_loss", "auto_mlm_accuracy", "mlm_accuracy"):
        if getattr(expected, name) is None:
            assert getattr(output, name) is None
        else:
            torch.testing.assert_close(getattr(output, name), getattr(expected, name).detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(output.sentence_embedding, expected.sentence_embedding.detach(), atol=1e-6, rtol=1e-5)


def test_explicit_positives(make_dropout_free_model, masked_batch, tokenizer, sentences):
    """Query-answer pairs: the positives are split into the same chunks as their queries."""
    positives = tokenizer(sentences[8:16], padding=True, return_tensors="pt")
    batch = {**masked_batch, "positive_input_ids": positives["input_ids"]}
    batch["positive_attention_mask"] = positives["attention_mask"]
    model = make_dropout_free_model()
    model(**batch).loss.backward()
    expected = gradients(model)
    grad_cache_step(model, batch, chunk_size=3)
    assert_same_gradients(gradients(model), expected)


@pytest.mark.parametrize("variant", ["cl", "cl+auto_mlm", "cl+mlm"])
def test_one_chunk_replays_the_dropout_of_the_uncached_step(make_model, masked_batch, variant):
    """Dropout on, one chunk: the second pass must draw the dropout masks of the first, i.e. of `model(**batch)`."""
    model = make_model(**VARIANTS[variant]).train()
    torch.manual_seed(7)
    expected = model(**masked_batch)
    expected.loss.backward()
    expected_grads = gradients(model)

    torch.manual_seed(7)
    output = grad_cache_step(model, masked_batch, chunk_size=8)
    assert_same_gradients(gradients(model), expected_grads)
    torch.testing.assert_close(output.loss, expected.loss.detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_equals_backpropagation_with_the_same_dropout_masks(make_model, masked_batch, variant, chunk_size):
    """Dropout on, several chunks: equal to ordinary backpropagation through the same stochastic forward."""
    model = make_model(**VARIANTS[variant]).train()
    torch.manual_seed(11)
    expected_loss = uncached_chunked_step(model, masked_batch, chunk_size)
    expected_grads = gradients(model)

    torch.manual_seed(11)
    output = grad_cache_step(model, masked_batch, chunk_size=chunk_size)
    assert_same_gradients(gradients(model), expected_grads)
    torch.testing.assert_close(output.loss, expected_loss.detach(), atol=1e-6, rtol=1e-5)


def test_dropout_masks_differ_between_steps(make_model, masked_batch):
    """The replay must not freeze the random state: two steps draw different dropout masks."""
    model = make_model().train()
    first = grad_cache_step(model, masked_batch, chunk_size=3)
    second = grad_cache_step(model, masked_batch, chunk_size=3)
    assert not torch.allclose(first.sentence_embedding, second.sentence_embedding)


def test_masks_the_batch_once_when_it_is_not_masked(make_model, batch):
    model = make_model().train()
    output = grad_cache_step(model, dict(batch), chunk_size=3)
    assert output.auto_mlm_loss is not None and torch.isfinite(output.loss)
    assert all(p.grad is not None for p in model.auto_mlm_head.parameters())


def test_rejects_a_bad_chunk_size(make_model, batch):
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache_step(make_model(), dict(batch), chunk_size=0)
