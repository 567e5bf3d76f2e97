"""Auto-MLM sentence encoder: contrastive learning plus a sentence-vector-conditioned masked-LM head.

Xu et al., 2022, "Auto-MLM: Improved Contrastive Learning for Self-supervised Multi-lingual Knowledge Retrieval".

This file ships next to the weights for ``trust_remote_code``: it may import only the standard library, ``torch``
and the public API of ``transformers``.
"""

from __future__ import annotations

import inspect
import logging
import os
import typing
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    MODEL_FOR_MASKED_LM_MAPPING,
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_automlm import AutoMLMConfig, PoolingMode
from .masking import IGNORE_INDEX, mask_tokens

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# The loss terms
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossTerm:
    """One term of the joint objective, declared once: the trainer's metrics, the curves, the card and the
    gradient-norm probe all enumerate `LOSS_TERMS`.

    Args:
        name: the term's short name; its loss is logged as ``{name}_loss`` and, with `has_accuracy`, its accuracy
            as ``{name}_accuracy`` (the fields of [`AutoMLMForPreTrainingOutput`]).
        weight_field: the [`AutoMLMConfig`] field that weighs it in the joint loss (0 turns it off).
        label: how people call it, in logs, curves and the model card.
        has_accuracy: whether the term predicts tokens, and so has a masked-token accuracy.
    """

    name: str
    weight_field: str
    label: str
    has_accuracy: bool = False

    @property
    def loss_key(self) -> str:
        return f"{self.name}_loss"

    @property
    def accuracy_key(self) -> str | None:
        return f"{self.name}_accuracy" if self.has_accuracy else None

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics the term logs: its loss, then its accuracy if it has one."""
        return (self.loss_key,) if self.accuracy_key is None else (self.loss_key, self.accuracy_key)

    def weight(self, config: AutoMLMConfig) -> float:
        return getattr(config, self.weight_field)


LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm("cl", "contrastive_weight", "CL"),
    LossTerm("auto_mlm", "auto_mlm_weight", "Auto-MLM", has_accuracy=True),
    LossTerm("mlm", "mlm_weight", "MLM", has_accuracy=True),
)
"""The terms of the joint loss `sum(weight * loss)`, in the order they are logged."""
CL_TERM, AUTO_MLM_TERM, MLM_TERM = LOSS_TERMS


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class AutoMLMModelOutput(ModelOutput):
    """Output of [`AutoMLMModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The encoder's contextual token states.
        sentence_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The pooled sentence vector, L2-normalised when `config.normalize_embeddings` is set.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The pooled sentence vector before normalisation (what the Auto-MLM head reads).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's hidden states, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's attention weights, when `output_attentions=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AutoMLMForPreTrainingOutput(ModelOutput):
    """Output of [`AutoMLMForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `contrastive_weight * cl_loss + auto_mlm_weight * auto_mlm_loss + mlm_weight * mlm_loss`.
        cl_loss (`torch.FloatTensor` of shape `()`, *optional*):
            InfoNCE loss; `None` when `contrastive_weight` is 0.
        auto_mlm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the Auto-MLM head at masked positions; `None` when `auto_mlm_weight` is 0.
        mlm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the plain MLM head at masked positions; `None` when `mlm_weight` is 0.
        auto_mlm_accuracy (`torch.FloatTensor` of shape `()`, *optional*):
            Share of masked tokens the Auto-MLM head predicts correctly (no gradient). In training with
            `head_vocab_sample_size` set, among the sampled candidates (at least the whole-vocabulary accuracy).
        mlm_accuracy (`torch.FloatTensor` of shape `()`, *optional*):
            Share of masked tokens the plain MLM head predicts correctly (no gradient); sampled as above.
        sentence_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Embeddings of the (first dropout view of the) input sentences.
        positive_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
            Embeddings of the positives (the second dropout view, or the explicit positives).
    """

    loss: torch.FloatTensor | None = None
    cl_loss: torch.FloatTensor | None = None
    auto_mlm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    auto_mlm_accuracy: torch.FloatTensor | None = None
    mlm_accuracy: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    positive_embedding: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Functional pieces
# ----------------------------------------------------------------------------------------------------------------
def pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool `(batch, seq_len, hidden)` token states into `(batch, hidden)` sentence vectors, ignoring padding."""
    if mode == "cls":
        return last_hidden_state[:, 0]
    mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)  # (batch, seq_len, 1)
    if mode == "mean":
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if mode == "max":
        fill = torch.finfo(last_hidden_state.dtype).min
        return last_hidden_state.masked_fill(mask == 0, fill).max(dim=1).values
    raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {list(typing.get_args(PoolingMode))}.")


def _distributed_world() -> tuple[int, int]:
    """`(rank, world_size)` of the initialised default process group, or `(0, 1)`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    gather_across_processes: bool = True,
) -> torch.Tensor:
    """InfoNCE over cosine similarities with in-batch negatives (SimCSE, Gao et al., 2021).

    Args:
        anchors: `(batch, hidden)` embeddings of this process's sentences.
        positives: `(batch, hidden)` embeddings of their positives; row `i` is the positive of anchor `i` and a
            negative of every other anchor.
        temperature: softmax temperature.
        gather_across_processes: in a multi-process run, use every process's positives as candidates. The gather
            keeps gradients (`torch.distributed.nn.functional.all_gather`), so with data-parallel gradient
            averaging the update equals that of one process holding the whole global batch.

    Returns:
        The mean cross-entropy over this process's anchors, a scalar.
    """
    anchors = F.normalize(anchors.float(), dim=-1)
    candidates = F.normalize(positives.float(), dim=-1)
    offset = 0
    rank, world_size = _distributed_world()
    if gather_across_processes and world_size > 1:
        from torch.distributed.nn.functional import all_gather

        candidates = torch.cat(all_gather(candidates), dim=0)  # (world_size * batch, hidden)
        offset = rank * anchors.shape[0]
    scores = anchors @ candidates.T / temperature  # (batch, world_size * batch)
    labels = torch.arange(anchors.shape[0], device=anchors.device) + offset
    return F.cross_entropy(scores, labels)


class _CappedHeadGradient(torch.autograd.Function):
    """Two copies of the sentence vector, one for CL and one for the Auto-MLM head. Backward receives both
    gradients at once and scales the head's so that its norm is at most `share` times CL's; a copy that no loss used
    has a gradient of zero (so a backward of the Auto-MLM term alone sends nothing through the vector)."""

    @staticmethod
    def forward(ctx: Any, vector: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.share = share
        ctx.set_materialize_grads(False)
        return vector.clone(), vector.clone()

    @staticmethod
    def backward(
        ctx: Any, grad_cl: torch.Tensor | None, grad_head: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None]:
        if grad_head is None:
            return grad_cl, None
        if grad_cl is None:
            return torch.zeros_like(grad_head), None
        limit = ctx.share * grad_cl.float().norm()
        scale = torch.clamp(limit / grad_head.float().norm().clamp_min(1e-12), max=1.0)
        return grad_cl + scale.to(grad_head.dtype) * grad_head, None


def cap_head_gradient(vector: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`(for_cl, for_head)`: `vector` twice, equal in the forward pass; in the backward pass the gradient that
    reaches `vector` through `for_head` is scaled down to at most `share` times the one through `for_cl` (L2 norms
    over the whole tensor). Both must be differentiated in one backward pass (one loss, or GradCache's surrogate)."""
    return _CappedHeadGradient.apply(vector, share)


def _encoder_accepts(encoder: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(encoder.forward).parameters


def check_encoder_config(encoder_config: PreTrainedConfig) -> None:
    """Raise a `ValueError` unless `encoder_config` describes a bidirectional (masked-LM style) text encoder."""
    if getattr(encoder_config, "is_decoder", False) or type(encoder_config) not in MODEL_FOR_MASKED_LM_MAPPING:
        raise ValueError(
            f"The backbone ({encoder_config.model_type}) is not a bidirectional encoder: Auto-MLM needs an "
            "encoder with a masked-LM objective such as BERT, XLM-R, DistilBERT or ModernBERT, not a decoder-only "
            "model."
        )


# ----------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------
def _dropout_of(config: AutoMLMConfig) -> float:
    encoder = config.encoder_config
    for name in ("hidden_dropout_prob", "dropout", "hidden_dropout", "embedding_dropout"):
        value = getattr(encoder, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.1


def _layer_norm_eps_of(config: AutoMLMConfig) -> float:
    encoder = config.encoder_config
    return float(getattr(encoder, "layer_norm_eps", None) or getattr(encoder, "norm_eps", None) or 1e-12)


class AutoMLMPredictionHead(nn.Module):
    """Vocabulary logits for selected positions: dense, GELU, LayerNorm, then the (tied) output projection."""

    def __init__(self, config: AutoMLMConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=_layer_norm_eps_of(config))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = None if config.tie_head_embeddings else nn.Linear(hidden, config.vocab_size, bias=False)
        self.vocab_sample_size = config.head_vocab_sample_size

    def forward(
        self, states: torch.Tensor, embedding_weight: torch.Tensor, candidates: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map `(num_selected, hidden)` states to `(num_selected, vocab_size)` logits, or with `candidates`
        (`(num_candidates,)` token ids) to `(num_selected, num_candidates)` logits against those rows alone."""
        states = self.LayerNorm(F.gelu(self.dense(states)))
        if candidates is None:
            weight, bias = embedding_weight if self.decoder is None else self.decoder.weight, self.bias
        else:
            # Gathered rows: the output projection's gradient reaches the candidate rows only.
            if self.decoder is None:
                weight = lookup_rows(embedding_weight, candidates)  # (num_candidates, hidden)
            else:
                weight = self.decoder.weight[candidates]  # read by nothing else: a dense gradient for AdamW
            bias = self.bias[candidates]  # (num_candidates,)
        return F.linear(states, weight, bias)


def lookup_rows(weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """`weight[ids]`, whose gradient reaches `weight`, a parameter, as a sparse tensor of the rows read.

    For the tied input embeddings, which the encoder also reads in the same step: the autograd engine adds the
    sparse gradient in place to the encoder's dense one, instead of filling and adding another vocabulary-sized
    gradient (about 0.2 s each on one CPU core at 250k x 384). A table nothing else reads would be left with a sparse
    gradient, which AdamW rejects, and a table that is not a leaf (e.g. a view into a sharded flat parameter) gets
    the ordinary dense gradient.
    """
    return F.embedding(ids, weight, padding_idx=padding_idx, sparse=weight.is_leaf and weight.requires_grad)


def sample_vocabulary(labels: torch.Tensor, vocab_size: int, sample_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate tokens of a sampled softmax: the distinct `labels`, then uniform negatives up to `sample_size`.

    The negatives are drawn without replacement from the tokens that are not labels, with torch's global random
    generator on the labels' device (so seeds and restored random states replay them). When the distinct labels
    alone reach `sample_size`, they are the only candidates; a `sample_size` of at least `vocab_size` gives every
    token (in another order).

    Args:
        labels: `(num_selected,)` target token ids.
        vocab_size: size of the vocabulary the negatives come from.
        sample_size: number of candidates wanted.

    Returns:
        `(candidates, candidate_labels)`: `(num_candidates,)` token ids, and `(num_selected,)` the index of each
        label in `candidates`.
    """
    targets, candidate_labels = torch.unique(labels, return_inverse=True)  # (num_targets,), (num_selected,)
    num_negatives = min(sample_size, vocab_size) - targets.numel()
    if num_negatives <= 0:
        return targets, candidate_labels
    is_other = torch.ones(vocab_size, dtype=torch.bool, device=labels.device)
    is_other[targets] = False
    others = is_other.nonzero().squeeze(1)  # (vocab_size - num_targets,)
    negatives = others[torch.randperm(others.numel(), device=labels.device)[:num_negatives]]
    return torch.cat([targets, negatives]), candidate_labels


def masked_lm_loss(
    predictor: AutoMLMPredictionHead,
    states: torch.Tensor,
    labels: torch.Tensor,
    embedding_weight: torch.Tensor,
    vocabulary: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy over the positions where `labels != -100`; logits only at those positions.

    `states` is `(batch, seq_len, hidden)` or already `(num_selected, hidden)` with `labels` `(num_selected,)`. In
    training with `predictor.vocab_sample_size` set, the softmax runs over the sampled candidates of
    `sample_vocabulary` (and the accuracy is among them); in eval mode over the whole vocabulary. A `vocabulary`
    (`(num_tokens,)` sorted token ids holding every label, e.g. the tokens of a corpus) restricts the softmax to
    those tokens instead, in either mode.
    """
    if states.dim() == 3:
        selected = labels != IGNORE_INDEX  # (batch, seq_len)
        states, labels = states[selected], labels[selected]  # (num_selected, hidden), (num_selected,)
    if labels.numel() == 0:
        zero = states.sum() * 0.0  # keeps the graph connected so that every parameter gets a gradient
        return zero, zero.detach()
    candidates = None
    if vocabulary is not None:
        candidates, labels = vocabulary, torch.searchsorted(vocabulary, labels)
    elif predictor.training and predictor.vocab_sample_size > 0:
        candidates, labels = sample_vocabulary(labels, predictor.bias.numel(), predictor.vocab_sample_size)
    logits = predictor(states, embedding_weight, candidates)  # (num_selected, vocab_size or num_candidates)
    loss = F.cross_entropy(logits.float(), labels)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy


class AutoMLMHeadLayer(nn.Module):
    """A post-LayerNorm transformer layer (BERT style) using scaled-dot-product attention."""

    def __init__(self, hidden: int, num_heads: int, intermediate: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor, output_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`x`: `(batch, seq_len, hidden)`; `attention_mask`: `(batch, seq_len)`, 1 for real positions.

        With `output_positions` (`(batch, seq_len)` booleans) the output is computed at those positions only, as
        `(num_kept, hidden)` in row-major order; every position still serves as key and value.
        """
        batch, seq_len, hidden = x.shape
        qkv = self.qkv(x).view(batch, seq_len, 3, self.num_heads, hidden // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, seq_len, head_dim)
        keep = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, seq_len)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=keep, dropout_p=self.dropout_p if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, seq_len, hidden)
        if output_positions is not None:
            x, attended = x[output_positions], attended[output_positions]  # (num_kept, hidden)
        x = self.attention_LayerNorm(x + self.dropout(self.attention_output(attended)))
        return self.output_LayerNorm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))


class AutoMLMHead(nn.Module):
    """Rebuilds each token from the sentence vector and the masked sentence's token states, then predicts it.

    The token states are the encoder's input embeddings of the masked sentence (default) or, as an ablation, its
    contextual states. The head never sees the encoder's states of the unmasked sentence, so whatever it needs
    about the masked tokens has to come through the sentence vector.
    """

    def __init__(self, config: AutoMLMConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        eps = _layer_norm_eps_of(config)
        dropout = _dropout_of(config)
        self.fusion = config.head_fusion
        self.sentence_projection = nn.Linear(hidden, hidden)
        max_positions = int(getattr(config.encoder_config, "max_position_embeddings", 512) or 512)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.fuse = nn.Linear(2 * hidden, hidden) if self.fusion == "concat" else None
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        heads = config.head_num_attention_heads or config.encoder_config.num_attention_heads
        intermediate = config.head_intermediate_size or 4 * hidden
        self.layers = nn.ModuleList(
            AutoMLMHeadLayer(hidden, heads, intermediate, dropout, eps) for _ in range(config.head_num_layers)
        )
        self.predictor = AutoMLMPredictionHead(config)

    def _combine(self, tokens: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """Fuse token states `(..., hidden)` with sentence vectors broadcastable to them ("add"/"concat")."""
        if self.fusion == "add":
            return tokens + sentence
        return self.fuse(torch.cat([tokens, sentence.expand_as(tokens)], dim=-1))

    def forward(
        self,
        token_states: torch.Tensor,
        sentence_vector: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        embedding_weight: torch.Tensor,
        vocabulary: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(loss, accuracy)` over masked positions.

        Args:
            token_states: `(batch, seq_len, hidden)` states of the masked sentence.
            sentence_vector: `(batch, hidden)` pooled vector of the unmasked sentence.
            attention_mask: `(batch, seq_len)`.
            labels: `(batch, seq_len)` original ids at masked positions, -100 elsewhere.
            embedding_weight: `(vocab_size, hidden)` input embedding matrix for the tied output projection.
            vocabulary: `(num_tokens,)` sorted token ids to score instead of the whole vocabulary (see
                `masked_lm_loss`).
        """
        batch, seq_len, _ = token_states.shape
        sentence = self.sentence_projection(sentence_vector)  # (batch, hidden)
        positions = self.position_embeddings(torch.arange(seq_len, device=token_states.device))  # (seq_len, hidden)
        selected = labels != IGNORE_INDEX  # (batch, seq_len)

        if not self.layers:
            # No interaction between positions: build and predict the masked positions only.
            rows, cols = selected.nonzero(as_tuple=True)
            states = self._combine(token_states[rows, cols] + positions[cols], sentence[rows])  # (num_sel, hidden)
            states = self.dropout(self.LayerNorm(states))
            return masked_lm_loss(self.predictor, states, labels[rows, cols], embedding_weight, vocabulary)

        tokens = token_states + positions  # (batch, seq_len, hidden)
        output_positions = selected
        if self.fusion == "prepend":
            states = torch.cat([sentence[:, None], tokens], dim=1)  # (batch, 1 + seq_len, hidden)
            attention_mask = torch.cat([attention_mask.new_ones(batch, 1), attention_mask], dim=1)
            output_positions = torch.cat([selected.new_zeros(batch, 1), selected], dim=1)  # (batch, 1 + seq_len)
        else:
            states = self._combine(tokens, sentence[:, None])
        states = self.dropout(self.LayerNorm(states))
        for layer in self.layers[:-1]:
            states = layer(states, attention_mask)
        # Only the masked positions reach the logits: the last layer computes its output there alone, which skips
        # its output projection and feed-forward at every other position.
        states = self.layers[-1](states, attention_mask, output_positions)  # (num_selected, hidden)
        return masked_lm_loss(self.predictor, states, labels[selected], embedding_weight, vocabulary)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
class AutoMLMPreTrainedModel(PreTrainedModel):
    """Weight initialisation, the backbone constructor and the loading plumbing shared by the Auto-MLM models."""

    config_class = AutoMLMConfig
    base_model_prefix = "automlm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    # The joint loss is already a mean over the local batch; the Trainer must not rescale it.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AutoMLMPredictionHead):
            init.zeros_(module.bias)

    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PreTrainedModel | PreTrainedConfig,
        tokenizer: Any | None = None,
        *,
        backbone_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> AutoMLMPreTrainedModel:
        """Build an Auto-MLM model for any kind of backbone: the one constructor for pretraining.

        Args:
            backbone: one of
                - a Hub id or local folder of an encoder (e.g. ``"xlm-roberta-base"``): its weights are copied;
                - an encoder model object: its weights are copied;
                - an encoder config (e.g. ``BertConfig(...)``): a new encoder with random weights (from scratch);
                - a Hub id or local folder of an Auto-MLM model: loaded as it is, to continue training it, with the
                  fields of `config_kwargs` overriding its config.
            tokenizer: the backbone's tokenizer; its mask token and special tokens are recorded in the config.
                Loaded from ``backbone`` when it is a name or a folder; required for a model object or a config.
            backbone_kwargs: extra arguments for the ``from_pretrained`` calls (``revision``, ``cache_dir``, ...).
            **config_kwargs: fields of [`AutoMLMConfig`] (``pooling``, ``auto_mlm_weight``, ...).

        Example:
            >>> model = AutoMLMForPreTraining.from_backbone("xlm-roberta-base", pooling="mean", auto_mlm_weight=0.1)
        """
        backbone_kwargs = dict(backbone_kwargs or {})
        if isinstance(backbone, (str, os.PathLike)):
            backbone = str(backbone)
            config_dict, _ = PreTrainedConfig.get_config_dict(backbone, **backbone_kwargs)
            if config_dict.get("model_type") == AutoMLMConfig.model_type:
                return cls.from_pretrained(backbone, **backbone_kwargs, **config_kwargs)
            check_encoder_config(AutoConfig.from_pretrained(backbone, **backbone_kwargs))  # before any weight loads
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(backbone, **backbone_kwargs)
            backbone = AutoModel.from_pretrained(backbone, **backbone_kwargs)
        if tokenizer is None:
            raise ValueError("Pass the backbone's `tokenizer` when `backbone` is a model or a config object.")
        encoder_config = backbone if isinstance(backbone, PreTrainedConfig) else backbone.config
        check_encoder_config(encoder_config)
        config_kwargs.setdefault("mask_token_id", tokenizer.mask_token_id)
        config_kwargs.setdefault("special_token_ids", special_token_ids_of(tokenizer))
        model = cls(AutoMLMConfig(encoder_config=encoder_config, **config_kwargs))
        if isinstance(backbone, PreTrainedModel):
            base = model if isinstance(model, AutoMLMModel) else getattr(model, cls.base_model_prefix)
            missing, unexpected = base.encoder.load_state_dict(backbone.state_dict(), strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"Could not copy the backbone's weights (missing {missing}, unexpected {unexpected}); "
                    "this is a bug, please report it with the backbone's name."
                )
        return model


def special_token_ids_of(tokenizer: Any) -> list[int]:
    """Ids that must never be masked: the tokenizer's special tokens except the mask and unknown tokens."""
    skip = {tokenizer.mask_token_id, tokenizer.unk_token_id}
    return sorted({int(i) for i in tokenizer.all_special_ids if i not in skip})


class AutoMLMModel(AutoMLMPreTrainedModel):
    """The sentence encoder: a Hugging Face encoder followed by pooling (and L2 normalisation).

    Use it (or sentence-transformers on its export) for inference; [`AutoMLMForPreTraining`] adds the training
    objective. A checkpoint of [`AutoMLMForPreTraining`] loads into this class; its heads are dropped.
    """

    _keys_to_ignore_on_load_unexpected = [r"^auto_mlm_head\.", r"^mlm_head\."]

    def __init__(self, config: AutoMLMConfig) -> None:
        super().__init__(config)
        check_encoder_config(config.encoder_config)
        self.encoder = AutoModel.from_config(config.encoder_config)
        self._encoder_takes_token_type_ids = _encoder_accepts(self.encoder, "token_type_ids")
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> AutoMLMModelOutput | tuple[torch.Tensor, ...]:
        """Encode a batch of sentences.

        Args:
            input_ids: `(batch, seq_len)` token ids.
            attention_mask: `(batch, seq_len)`, 1 for tokens and 0 for padding. Defaults to all ones.
            token_type_ids: `(batch, seq_len)`; ignored when the backbone has none (e.g. DistilBERT).
            inputs_embeds: `(batch, seq_len, hidden)`, instead of `input_ids`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones_like(reference, dtype=torch.long)
        encoder_inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "output_hidden_states": output_hidden_states,
            "output_attentions": output_attentions,
            "return_dict": True,
        }
        if token_type_ids is not None and self._encoder_takes_token_type_ids:
            encoder_inputs["token_type_ids"] = token_type_ids
        encoded = self.encoder(**encoder_inputs)
        pooled = pool(encoded.last_hidden_state, attention_mask, self.config.pooling)  # (batch, hidden)
        embedding = F.normalize(pooled, dim=-1) if self.config.normalize_embeddings else pooled
        output = AutoMLMModelOutput(
            last_hidden_state=encoded.last_hidden_state,
            sentence_embedding=embedding,
            pooler_output=pooled,
            hidden_states=getattr(encoded, "hidden_states", None),
            attentions=getattr(encoded, "attentions", None),
        )
        return output if return_dict is not False else output.to_tuple()


def _pad_to(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, length - tensor.shape[1]), value=value)


class AutoMLMForPreTraining(AutoMLMPreTrainedModel):
    """Auto-MLM with its training objective: `contrastive_weight * CL + auto_mlm_weight * Auto-MLM + mlm_weight * MLM`.

    One forward pass returns the joint loss, ready for `loss.backward()`, and its parts. The baselines are
    configurations of the same class: SimCSE (`auto_mlm_weight=0`), CL + MLM (`auto_mlm_weight=0, mlm_weight>0`),
    Auto-MLM alone (`contrastive_weight=0`).

    Cost: the two dropout views (or the sentences and their explicit positives) and, when needed, the masked
    sentence go through the encoder in one batched call. With the default head (`head_input="token_embeddings"`)
    the Auto-MLM branch runs no encoder pass of its own; vocabulary logits are computed at masked positions only
    (and, with `head_vocab_sample_size`, against the sampled candidate rows only).
    """

    def __init__(self, config: AutoMLMConfig) -> None:
        super().__init__(config)
        if config.uses_masking and config.mask_token_id is None:
            raise ValueError(
                "`mask_token_id` is not set but `auto_mlm_weight` or `mlm_weight` is positive: pass "
                "`mask_token_id=tokenizer.mask_token_id` (and `special_token_ids`) to AutoMLMConfig, or build the "
                "model with `AutoMLMForPreTraining.from_backbone(...)`."
            )
        self.automlm = AutoMLMModel(config)
        self.auto_mlm_head = AutoMLMHead(config) if config.auto_mlm_weight > 0 else None
        self.mlm_head = AutoMLMPredictionHead(config) if config.mlm_weight > 0 else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.automlm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.automlm.set_input_embeddings(value)

    def mask(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        word_ids: torch.LongTensor | None = None,
        special_tokens_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Mask `input_ids` as the config says; returns `(masked_input_ids, labels)` (see `mask_tokens`)."""
        config = self.config
        eligible = attention_mask.bool()
        if special_tokens_mask is not None:
            eligible = eligible & ~special_tokens_mask.bool()
        elif config.special_token_ids:
            special = torch.tensor(config.special_token_ids, device=input_ids.device)
            eligible = eligible & ~torch.isin(input_ids, special)
        if config.masking_scheme == "whole_word" and word_ids is None:
            raise ValueError(
                "`masking_scheme='whole_word'` needs `word_ids` in the batch; use the training collator "
                "(training.data.AutoMLMCollator) or set `masking_scheme='random'`."
            )
        return mask_tokens(
            input_ids,
            eligible,
            mask_token_id=config.mask_token_id,
            vocab_size=config.vocab_size,
            probability=config.mask_probability,
            replacement=config.mask_replacement,
            word_ids=word_ids if config.masking_scheme == "whole_word" else None,
            generator=generator,
        )

    def _masked_token_embeddings(self, masked_input_ids: torch.LongTensor) -> torch.Tensor:
        """The input embeddings of the masked sentence, which the default Auto-MLM head reads. With a sampled head
        (`head_vocab_sample_size`), a plain `nn.Embedding` is read through `lookup_rows`, so that the step fills one
        vocabulary-sized embedding gradient (the encoder's) rather than three."""
        embeddings = self.get_input_embeddings()
        plain = type(embeddings) is nn.Embedding and embeddings.max_norm is None and not embeddings.scale_grad_by_freq
        if self.config.head_vocab_sample_size > 0 and plain:
            return lookup_rows(embeddings.weight, masked_input_ids, embeddings.padding_idx)
        return embeddings(masked_input_ids)

    def auto_mlm_head_loss(
        self,
        masked_input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        labels: torch.LongTensor,
        sentence_vector: torch.Tensor,
        masked_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Auto-MLM term: `(loss, accuracy)` of the head rebuilding the masked tokens from `sentence_vector`.

        Args:
            masked_input_ids: `(batch, seq_len)` the masked sentences.
            attention_mask: `(batch, seq_len)`.
            labels: `(batch, seq_len)` original ids at masked positions, -100 elsewhere.
            sentence_vector: `(batch, hidden)` pooled (unnormalised) vectors of the unmasked sentences. Any vector
                can be passed: another sentence's vector measures how much the head reads from it.
            masked_states: `(batch, seq_len, hidden)` the encoder's states of the masked sentences, for
                `head_input="contextual"`; computed here when omitted.
        """
        if self.config.head_input == "contextual":
            if masked_states is None:
                masked_states = self.automlm(
                    input_ids=masked_input_ids, attention_mask=attention_mask
                ).last_hidden_state
            token_states = masked_states
        else:
            token_states = self._masked_token_embeddings(masked_input_ids)  # (batch, seq_len, hidden)
        embedding_weight = self.get_input_embeddings().weight
        return self.auto_mlm_head(token_states, sentence_vector, attention_mask, labels, embedding_weight)

    def joint_loss(self, losses: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """The weighted sum of the terms' losses, `sum(weight * loss)` over `LOSS_TERMS`, as a float32 scalar: the one
        place the terms are summed. `losses` maps a term's `loss_key` to its loss; absent or None terms are left out.
        """
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for term in LOSS_TERMS:
            loss = losses.get(term.loss_key)
            if loss is not None:
                total = total + term.weight(self.config) * loss
        return total

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        positive_input_ids: torch.LongTensor | None = None,
        positive_attention_mask: torch.Tensor | None = None,
        positive_token_type_ids: torch.LongTensor | None = None,
        masked_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        word_ids: torch.LongTensor | None = None,
        special_tokens_mask: torch.Tensor | None = None,
        compute_contrastive_loss: bool = True,
        return_dict: bool | None = None,
    ) -> AutoMLMForPreTrainingOutput | tuple[torch.Tensor, ...]:
        """Compute the joint loss for a batch of sentences.

        Args:
            input_ids: `(batch, seq_len)` token ids of the (unlabelled) sentences.
            attention_mask: `(batch, seq_len)`; defaults to all ones.
            token_type_ids: `(batch, seq_len)`, optional.
            positive_input_ids: `(batch, pos_len)` explicit positives (e.g. the answer of each query). When
                given, they replace the second dropout view; the rest of the batch are still the negatives.
            positive_attention_mask, positive_token_type_ids: as above, for the positives.
            masked_input_ids: `(batch, seq_len)` pre-masked input; masked here from the config when omitted.
            mlm_labels: `(batch, seq_len)` original ids at masked positions, -100 elsewhere (with
                `masked_input_ids`).
            word_ids: `(batch, seq_len)` word index of each token, -1 for special tokens (whole-word masking).
            special_tokens_mask: `(batch, seq_len)`, 1 at tokens never to mask; defaults to
                `config.special_token_ids`.
            compute_contrastive_loss: with False, the contrastive term is left to the caller: both views are still
                encoded and returned, but `cl_loss` is None and `loss` holds the masked-LM terms only. For callers
                that compute InfoNCE over a larger batch from the returned embeddings (GradCache).
        """
        config = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if (masked_input_ids is None) != (mlm_labels is None):
            raise ValueError("Pass `masked_input_ids` and `mlm_labels` together, or neither.")
        if config.uses_masking and masked_input_ids is None:
            masked_input_ids, mlm_labels = self.mask(input_ids, attention_mask, word_ids, special_tokens_mask)
        if positive_input_ids is not None and positive_attention_mask is None:
            positive_attention_mask = torch.ones_like(positive_input_ids)
        positives = (positive_input_ids, positive_attention_mask, positive_token_type_ids)

        # 1. The one encoder call: [sentences; positives or second dropout view; masked sentences].
        encoded = self._encode_views((input_ids, attention_mask, token_type_ids), positives, masked_input_ids)
        batch, seq_len = input_ids.shape
        embeddings = encoded.sentence_embedding.split(batch)
        metrics: dict[str, torch.Tensor | None] = {}
        # 2. The vector the Auto-MLM head reads: the unmasked sentence's first view, before normalisation; with
        # `auto_mlm_gradient_share`, CL and the head each read their own copy, so that the head's gradient is capped.
        sentence_vector = encoded.pooler_output[:batch]
        if config.auto_mlm_gradient_share is not None and config.contrastive_weight > 0:
            for_cl, sentence_vector = cap_head_gradient(sentence_vector, config.auto_mlm_gradient_share)
            embeddings = (F.normalize(for_cl, dim=-1) if config.normalize_embeddings else for_cl, *embeddings[1:])
        # 3. The contrastive term: each sentence against its positive, the rest of the batch as negatives.
        if config.contrastive_weight > 0 and compute_contrastive_loss:
            metrics[CL_TERM.loss_key] = contrastive_loss(
                embeddings[0], embeddings[1], config.contrastive_temperature, config.gather_across_processes
            )
        # 4. The masked-LM terms: Auto-MLM from the sentence vector, plain MLM from the masked sentence's states.
        masked_states = encoded.last_hidden_state[-batch:, :seq_len] if self._encodes_masked_sentence else None
        metrics |= self.masked_lm_terms(masked_input_ids, attention_mask, mlm_labels, sentence_vector, masked_states)

        output = AutoMLMForPreTrainingOutput(
            loss=self.joint_loss(metrics),
            **metrics,
            sentence_embedding=embeddings[0],
            positive_embedding=embeddings[1] if config.contrastive_weight > 0 else None,
        )
        return output if return_dict is not False else output.to_tuple()

    @property
    def _encodes_masked_sentence(self) -> bool:
        """Whether a head reads the encoder's states of the masked sentence (plain MLM, or a contextual head)."""
        config = self.config
        return config.mlm_weight > 0 or (config.auto_mlm_weight > 0 and config.head_input == "contextual")

    def _encode_views(
        self,
        sentences: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
        positives: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
        masked_input_ids: torch.LongTensor | None,
    ) -> AutoMLMModelOutput:
        """Encode, in one batched call, the sentences, then (with CL) their positives or a second dropout view of
        them, then (when a head reads it) the masked sentences; each part padded to the longest."""
        parts = [sentences]
        if self.config.contrastive_weight > 0:
            parts.append(positives if positives[0] is not None else sentences)
        if self._encodes_masked_sentence:
            parts.append((masked_input_ids, sentences[1], sentences[2]))
        length = max(part[0].shape[1] for part in parts)
        pad_id = self.config.encoder_config.pad_token_id or 0
        ids = torch.cat([_pad_to(p[0], length, pad_id) for p in parts])  # (num_parts * batch, length)
        mask = torch.cat([_pad_to(p[1], length, 0) for p in parts])
        types = None
        if all(p[2] is not None for p in parts):
            types = torch.cat([_pad_to(p[2], length, 0) for p in parts])
        return self.automlm(input_ids=ids, attention_mask=mask, token_type_ids=types)

    def masked_lm_terms(
        self,
        masked_input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor,
        labels: torch.LongTensor | None,
        sentence_vector: torch.Tensor,
        masked_states: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The losses and accuracies of the masked-LM terms that are on (keys from `LOSS_TERMS`): Auto-MLM from
        `sentence_vector` and the masked token embeddings, plain MLM from `masked_states`."""
        metrics = {}
        if self.auto_mlm_head is not None:
            loss, accuracy = self.auto_mlm_head_loss(
                masked_input_ids, attention_mask, labels, sentence_vector, masked_states
            )
            metrics[AUTO_MLM_TERM.loss_key], metrics[AUTO_MLM_TERM.accuracy_key] = loss, accuracy
        if self.mlm_head is not None:
            embedding_weight = self.get_input_embeddings().weight
            loss, accuracy = masked_lm_loss(self.mlm_head, masked_states, labels, embedding_weight)
            metrics[MLM_TERM.loss_key], metrics[MLM_TERM.accuracy_key] = loss, accuracy
        return metrics


__all__ = [
    "AutoMLMForPreTraining",
    "AutoMLMForPreTrainingOutput",
    "AutoMLMModel",
    "AutoMLMModelOutput",
    "AutoMLMPreTrainedModel",
    "contrastive_loss",
    "pool",
]
