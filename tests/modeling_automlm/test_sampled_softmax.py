"""Sampled softmax of the masked-LM heads (`head_vocab_sample_size`) against the full softmax."""

import pytest
import torch

from modeling_automlm.modeling_automlm import AutoMLMPredictionHead, masked_lm_loss, sample_vocabulary


def head_inputs(vocab_size: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(states, labels, embedding_weight)`: 40 positions whose labels repeat, as a batch's targets do."""
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(40, hidden, generator=generator)
    labels = torch.randint(5, 30, (40,), generator=generator)  # (40,) at most 25 distinct targets
    weight = torch.randn(vocab_size, hidden, generator=generator)
    return states, labels, weight


def loss_and_gradients(
    predictor: AutoMLMPredictionHead, states: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of `masked_lm_loss` called alone (no encoder) and the gradients of its inputs and parameters, dense
    (the sampled head's gradient of the tied table is sparse: no encoder lookup here to add it to)."""
    states, weight = states.clone().requires_grad_(), weight.clone().requires_grad_()
    predictor.zero_grad(set_to_none=True)
    loss, _ = masked_lm_loss(predictor, states, labels, weight)
    loss.backward()
    grads = {"states": states.grad, "embedding_weight": weight.grad}
    grads.update((name, p.grad) for name, p in predictor.named_parameters())
    return loss.detach(), {name: g.to_dense() if g is not None and g.is_sparse else g for name, g in grads.items()}


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("extra", [0, 50])  # exactly the vocabulary, and more than it
def test_a_sample_covering_the_vocabulary_equals_the_full_softmax(make_config, tie, extra):
    config = make_config(tie_head_embeddings=tie)
    torch.manual_seed(0)
    full = AutoMLMPredictionHead(config).train()
    sampled_config = make_config(tie_head_embeddings=tie, head_vocab_sample_size=config.vocab_size + extra)
    sampled = AutoMLMPredictionHead(sampled_config).train()
    sampled.load_state_dict(full.state_dict())
    with torch.no_grad():
        full.bias.normal_()  # a zero bias would hide a bias gathered in the wrong order
        sampled.bias.copy_(full.bias)
    states, labels, weight = head_inputs(config.vocab_size, config.hidden_size)

    expected_loss, expected = loss_and_gradients(full, states, labels, weight)
    loss, grads = loss_and_gradients(sampled, states, labels, weight)

    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        if name == "embedding_weight" and not tie:
            assert grad is None and expected[name] is None  # the head's own decoder is used instead
            continue
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_a_covering_sample_equals_the_full_softmax_in_a_training_step(make_model, batch):
    """The whole model in train mode (dropout, masking), both heads: the same loss and the same gradients."""
    vocab_size = make_model().config.vocab_size
    losses, gradients = [], []
    for sample_size in (0, vocab_size):
        model = make_model(seed=0, mlm_weight=0.5, head_vocab_sample_size=sample_size).train()
        torch.manual_seed(1)  # the masks and the dropout; the sampling is the step's last draw
        out = model(**batch)
        out.loss.backward()
        losses.append(torch.stack([out.loss, out.cl_loss, out.auto_mlm_loss, out.mlm_loss]).detach())
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    assert not gradients[1]["automlm.encoder.embeddings.word_embeddings.weight"].is_sparse  # AdamW needs dense
    assert gradients[1].keys() == gradients[0].keys()
    for name, grad in gradients[1].items():
        torch.testing.assert_close(grad, gradients[0][name], atol=1e-5, rtol=1e-5, msg=name)


def test_only_candidate_rows_get_a_gradient_from_the_prediction_head(make_config):
    config = make_config(head_vocab_sample_size=60)
    torch.manual_seed(0)
    predictor = AutoMLMPredictionHead(config).train()
    states, labels, weight = head_inputs(config.vocab_size, config.hidden_size)

    torch.manual_seed(7)
    _, grads = loss_and_gradients(predictor, states, labels, weight)
    torch.manual_seed(7)  # replay the draw
    candidates, _ = sample_vocabulary(labels, config.vocab_size, 60)

    assert candidates.numel() == 60 and set(labels.tolist()) <= set(candidates.tolist())
    for name in ("embedding_weight", "bias"):
        rows = grads[name].reshape(config.vocab_size, -1).ne(0).any(dim=1).nonzero().squeeze(1)
        assert set(rows.tolist()) == set(candidates.tolist()), name


def test_only_candidate_rows_get_a_gradient_from_the_auto_mlm_head(make_model, batch):
    """The Auto-MLM head called alone: its token states come in detached, so the embedding matrix gets a gradient
    from the tied output projection only."""
    model = make_model(head_vocab_sample_size=50).train()
    masked, labels = model.mask(batch["input_ids"], batch["attention_mask"])
    embeddings = model.get_input_embeddings()
    weight = embeddings.weight.detach().clone().requires_grad_()
    sentence = model.automlm(**batch).pooler_output.detach()
    loss, _ = model.auto_mlm_head(embeddings(masked).detach(), sentence, batch["attention_mask"], labels, weight)
    loss.backward()
    rows = weight.grad.to_dense().ne(0).any(dim=1).nonzero().squeeze(1)
    targets = set(labels[labels >= 0].tolist())
    assert rows.numel() == 50 and targets <= set(rows.tolist())


def test_candidates_are_the_targets_then_distinct_negatives():
    labels = torch.tensor([7, 3, 7, 9, 3, 3])
    torch.manual_seed(0)
    candidates, candidate_labels = sample_vocabulary(labels, 100, 20)
    assert candidates[:3].tolist() == [3, 7, 9]
    assert torch.equal(candidates[candidate_labels], labels)
    negatives = candidates[3:].tolist()
    assert len(negatives) == 17 and len(set(negatives)) == 17 and not set(negatives) & {3, 7, 9}
    assert all(0 <= n < 100 for n in negatives)
    # Fewer wanted than there are targets: the targets alone. More than the vocabulary: every token.
    assert sample_vocabulary(labels, 100, 2)[0].tolist() == [3, 7, 9]
    assert sorted(sample_vocabulary(labels, 100, 500)[0].tolist()) == list(range(100))


def test_the_draw_follows_the_global_seed():
    labels = torch.tensor([7, 3, 9])
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(sample_vocabulary(labels, 10_000, 64)[0])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_a_sampled_run_is_reproducible_under_a_seed(make_model, batch):
    def run(seed: int) -> tuple[list[float], torch.Tensor]:
        model = make_model(seed=0, mlm_weight=0.5, head_vocab_sample_size=40).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.manual_seed(seed)
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses, model.get_input_embeddings().weight.detach().clone()

    first, again, other = run(1), run(1), run(2)
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert first[0] != other[0]


def test_eval_mode_scores_the_whole_vocabulary(make_model, batch):
    """The reported loss and accuracy of a sampled model in eval mode are those of the full softmax."""
    outputs = []
    for sample_size in (0, 20):
        model = make_model(seed=0, mlm_weight=0.5, head_vocab_sample_size=sample_size).eval()
        torch.manual_seed(1)  # the masks
        with torch.no_grad():
            outputs.append(model(**batch))
    for field in ("auto_mlm_loss", "mlm_loss", "auto_mlm_accuracy", "mlm_accuracy"):
        torch.testing.assert_close(getattr(outputs[1], field), getattr(outputs[0], field), msg=field)


@pytest.mark.parametrize(("tie", "freeze"), [(True, False), (True, True), (False, False)])
def test_a_sampled_step_leaves_dense_gradients_for_adamw(make_model, batch, tie, freeze):
    """The heads read the tied table with sparse gradients, which the encoder's dense one absorbs; an untied decoder
    (read by nothing else) and frozen embeddings keep their ordinary gradients."""
    model = make_model(mlm_weight=0.5, head_vocab_sample_size=40, tie_head_embeddings=tie).train()
    model.get_input_embeddings().weight.requires_grad_(not freeze)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**batch).loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert not any(grad.is_sparse for grad in grads.values())
    assert ("automlm.encoder.embeddings.word_embeddings.weight" in grads) is not freeze
    assert ("mlm_head.decoder.weight" in grads) is not tie
    optimizer.step()
