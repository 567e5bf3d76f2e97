"""Each loss against a naive reference written independently here: per example, unpadded, full-vocabulary logits."""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_automlm import contrastive_loss
from modeling_automlm.masking import IGNORE_INDEX


def naive_info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for i in range(len(anchors)):
        scores = [
            F.cosine_similarity(anchors[i], positives[j], dim=0).item() / temperature for j in range(len(positives))
        ]
        total += -scores[i] + math.log(sum(math.exp(s) for s in scores))
    return total / len(anchors)


def naive_cross_entropy(logits: torch.Tensor, target: int) -> float:
    return (-logits[target] + torch.logsumexp(logits, dim=0)).item()


def naive_auto_mlm(model, input_ids, attention_mask, masked_ids, labels) -> float:
    """Rebuild every token from (sentence vector, masked token embedding, position), one sentence at a time."""
    head, weight = model.auto_mlm_head, model.get_input_embeddings().weight
    losses = []
    for b in range(len(input_ids)):
        n = int(attention_mask[b].sum())
        sentence = model.automlm(input_ids=input_ids[b : b + 1, :n]).pooler_output  # (1, hidden)
        sentence = head.sentence_projection(sentence)
        tokens = weight[masked_ids[b, :n]] + head.position_embeddings.weight[:n]  # (n, hidden)
        if head.fusion == "prepend":
            states = torch.cat([sentence, tokens])[None]
        elif head.fusion == "add":
            states = (tokens + sentence)[None]
        else:
            states = head.fuse(torch.cat([tokens, sentence.expand(n, -1)], dim=-1))[None]
        states = head.LayerNorm(states)
        for layer in head.layers:
            states = layer(states, torch.ones(states.shape[:2]))
        states = states[0, 1:] if head.fusion == "prepend" else states[0]
        predictor = head.predictor
        logits = (
            F.layer_norm(
                F.gelu(states @ predictor.dense.weight.T + predictor.dense.bias),
                (states.shape[-1],),
                predictor.LayerNorm.weight,
                predictor.LayerNorm.bias,
                predictor.LayerNorm.eps,
            )
            @ weight.T
            + predictor.bias
        )  # (n, vocab): every position, not only the masked ones
        losses += [naive_cross_entropy(logits[i], int(labels[b, i])) for i in range(n) if labels[b, i] != IGNORE_INDEX]
    return sum(losses) / len(losses)


def naive_mlm(model, masked_ids, attention_mask, labels) -> float:
    weight = model.get_input_embeddings().weight
    losses = []
    for b in range(len(masked_ids)):
        n = int(attention_mask[b].sum())
        states = model.automlm(input_ids=masked_ids[b : b + 1, :n]).last_hidden_state[0]
        predictor = model.mlm_head
        hidden = predictor.LayerNorm(F.gelu(predictor.dense(states)))
        logits = hidden @ weight.T + predictor.bias
        losses += [naive_cross_entropy(logits[i], int(labels[b, i])) for i in range(n) if labels[b, i] != IGNORE_INDEX]
    return sum(losses) / len(losses)


@pytest.fixture
def masked_batch(batch, make_model):
    model = make_model()
    masked, labels = model.mask(
        batch["input_ids"], batch["attention_mask"], generator=torch.Generator().manual_seed(3)
    )
    return batch, masked, labels


def test_contrastive_loss_matches_naive():
    torch.manual_seed(0)
    anchors, positives = torch.randn(6, 16), torch.randn(6, 16)
    assert contrastive_loss(anchors, positives, 0.05).item() == pytest.approx(
        naive_info_nce(anchors, positives, 0.05), rel=1e-5
    )


def test_dropout_views_differ_and_cl_loss_is_infonce_over_them(make_model, batch):
    model = make_model(auto_mlm_weight=0.0).train()
    out = model(**batch)
    assert not torch.allclose(out.sentence_embedding, out.positive_embedding), "the two views must differ (dropout)"
    expected = naive_info_nce(out.sentence_embedding.detach(), out.positive_embedding.detach(), 0.05)
    assert out.cl_loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.cl_loss.item(), rel=1e-6)


@pytest.mark.parametrize(
    "head",
    [
        {"head_fusion": "prepend"},
        {"head_fusion": "add", "head_num_layers": 2},
        {"head_fusion": "concat"},
        {"head_fusion": "add", "head_num_layers": 0},
        {"head_fusion": "concat", "head_num_layers": 0},
    ],
)
def test_auto_mlm_loss_matches_naive(make_model, masked_batch, head):
    batch, masked, labels = masked_batch
    model = make_model(contrastive_weight=0.0, auto_mlm_weight=1.0, **head).eval()
    with torch.no_grad():
        out = model(**batch, masked_input_ids=masked, mlm_labels=labels)
        expected = naive_auto_mlm(model, batch["input_ids"], batch["attention_mask"], masked, labels)
    assert out.auto_mlm_loss.item() == pytest.approx(expected, rel=1e-4)
    assert out.cl_loss is None and out.mlm_loss is None
    assert 0.0 <= out.auto_mlm_accuracy.item() <= 1.0


def test_contextual_head_reads_the_masked_sentence_states(make_model, masked_batch):
    batch, masked, labels = masked_batch
    model = make_model(contrastive_weight=0.0, head_input="contextual").eval()
    captured = {}
    model.auto_mlm_head.register_forward_pre_hook(lambda module, args: captured.update(states=args[0]))
    with torch.no_grad():
        model(**batch, masked_input_ids=masked, mlm_labels=labels)
        expected = model.automlm(input_ids=masked, attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(captured["states"], expected, atol=1e-5, rtol=1e-5)


def test_mlm_loss_matches_naive_and_joint_loss_is_the_weighted_sum(make_model, masked_batch):
    batch, masked, labels = masked_batch
    model = make_model(contrastive_weight=0.7, auto_mlm_weight=0.3, mlm_weight=0.5).eval()
    with torch.no_grad():
        out = model(**batch, masked_input_ids=masked, mlm_labels=labels)
        expected_mlm = naive_mlm(model, masked, batch["attention_mask"], labels)
        expected_auto = naive_auto_mlm(model, batch["input_ids"], batch["attention_mask"], masked, labels)
    assert out.mlm_loss.item() == pytest.approx(expected_mlm, rel=1e-4)
    assert out.auto_mlm_loss.item() == pytest.approx(expected_auto, rel=1e-4)
    joint = 0.7 * out.cl_loss + 0.3 * out.auto_mlm_loss + 0.5 * out.mlm_loss
    assert out.loss.item() == pytest.approx(joint.item(), rel=1e-6)


def test_explicit_positives_replace_the_second_view(make_model, tokenizer, sentences):
    model = make_model(auto_mlm_weight=0.0).eval()
    queries = tokenizer(sentences[:4], padding=True, return_tensors="pt")
    answers = tokenizer([s + " thank you for asking" for s in sentences[4:8]], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(
            **queries, positive_input_ids=answers["input_ids"], positive_attention_mask=answers["attention_mask"]
        )
        expected = model.automlm(**answers).sentence_embedding
    torch.testing.assert_close(out.positive_embedding, expected, atol=1e-5, rtol=1e-5)
    assert out.cl_loss.item() == pytest.approx(naive_info_nce(out.sentence_embedding, expected, 0.05), rel=1e-5)


@pytest.mark.parametrize(
    ("options", "expected_rows"),
    [({}, 2), ({"mlm_weight": 0.5}, 3), ({"head_input": "contextual"}, 3), ({"contrastive_weight": 0.0}, 1)],
)
def test_one_batched_encoder_call(make_model, batch, options, expected_rows):
    """The CL views (and the masked sentence, when a variant needs it) share one encoder call; the default
    Auto-MLM head adds no encoder pass."""
    model = make_model(**options)
    calls = []
    model.automlm.encoder.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    model(**batch)
    assert calls == [expected_rows * batch["input_ids"].shape[0]]


def test_backward_reaches_encoder_and_heads(make_model, batch):
    model = make_model(mlm_weight=0.5)
    model(**batch).loss.backward()
    for name in (
        "automlm.encoder.embeddings.word_embeddings.weight",
        "auto_mlm_head.sentence_projection.weight",
        "auto_mlm_head.predictor.bias",
        "mlm_head.dense.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_auto_mlm_gradient_flows_through_the_sentence_vector(make_model, batch):
    """Without CL, the encoder layers are trained only through the sentence vector the head reads."""
    model = make_model(contrastive_weight=0.0)
    model(**batch).loss.backward()
    layer = model.automlm.encoder.encoder.layer[-1].output.dense.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0


def test_contrastive_term_left_to_the_caller(make_model, masked_batch):
    """`compute_contrastive_loss=False` (GradCache's chunks): both views are returned, the loss is the masked-LM
    terms only, and `joint_loss` adds the contrastive term back with its weight."""
    batch, masked, labels = masked_batch
    model = make_model(contrastive_weight=0.7, auto_mlm_weight=0.3, mlm_weight=0.5).eval()
    with torch.no_grad():
        full = model(**batch, masked_input_ids=masked, mlm_labels=labels)
        partial = model(**batch, masked_input_ids=masked, mlm_labels=labels, compute_contrastive_loss=False)
    assert partial.cl_loss is None and partial.positive_embedding is not None
    assert partial.loss.item() == pytest.approx(0.3 * full.auto_mlm_loss.item() + 0.5 * full.mlm_loss.item(), rel=1e-6)
    rebuilt = model.joint_loss(
        {"cl_loss": full.cl_loss, "auto_mlm_loss": partial.auto_mlm_loss, "mlm_loss": partial.mlm_loss}
    )
    assert rebuilt.item() == pytest.approx(full.loss.item(), rel=1e-6)
