"""Gradient caching for the contrastive loss: large batches in small memory (GradCache, Gao et al., 2021).

The contrastive loss couples every sentence of the batch with every other, so plain gradient accumulation over
micro-batches would change the loss (fewer negatives). Gradient caching keeps the loss of the full batch:

1. Forward every chunk without a graph and keep only its sentence embeddings, recording the random state first.
2. Compute the contrastive loss on the full batch from those embeddings and its gradient with respect to them.
3. Forward every chunk again, with the recorded random state (same dropout masks), and backpropagate the cached
   embedding gradients through it, one chunk at a time.

Peak activation memory is that of one chunk; the price is a second forward pass. The masked-LM terms (Auto-MLM and
plain MLM) do not couple sentences: they are means over the masked tokens of the batch, so each chunk's term is
weighted by its share of the masked tokens.

Reference: Luyu Gao, Yunyi Zhang, Jiawei Han, Jamie Callan. "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup". RepL4NLP 2021. https://arxiv.org/abs/2101.06983
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from modeling_automlm import AutoMLMForPreTraining, AutoMLMForPreTrainingOutput, contrastive_loss
from modeling_automlm.masking import IGNORE_INDEX
from modeling_automlm.modeling_automlm import CL_TERM, LOSS_TERMS

logger = logging.getLogger(__name__)

__all__ = ["grad_cache_step"]

# The outputs that are means over the masked tokens (of the chunk, for one chunk's forward).
MASKED_LM_KEYS = tuple(key for term in LOSS_TERMS if term is not CL_TERM for key in term.keys)


@dataclass
class _RandomState:
    """The CPU random state and, for an accelerator, that device's random state."""

    cpu: torch.Tensor
    device: torch.device
    accelerator: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> _RandomState:
        accelerator = None
        if device.type != "cpu":
            accelerator = torch.get_device_module(device.type).get_rng_state(device)
        return cls(cpu=torch.get_rng_state(), device=device, accelerator=accelerator)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this random state; the global random state is left as it was before the block."""
        devices = [] if self.device.type == "cpu" else [self.device]
        device_type = "cuda" if self.device.type == "cpu" else self.device.type
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            torch.set_rng_state(self.cpu)
            if self.accelerator is not None:
                torch.get_device_module(self.device.type).set_rng_state(self.accelerator, self.device)
            yield


def _unwrap(model: nn.Module) -> AutoMLMForPreTraining:
    """The `AutoMLMForPreTraining` inside a `DistributedDataParallel` (or similar `.module`) wrapper."""
    module = model
    while not isinstance(module, AutoMLMForPreTraining) and hasattr(module, "module"):
        module = module.module
    if not isinstance(module, AutoMLMForPreTraining):
        raise ValueError(
            f"`grad_cache_step` needs an `AutoMLMForPreTraining` (optionally wrapped in DistributedDataParallel), "
            f"got {type(model).__name__}."
        )
    return module


def _chunks(batch: dict[str, torch.Tensor], batch_size: int, chunk_size: int) -> list[dict[str, torch.Tensor]]:
    """Split every per-sentence tensor of `batch` into chunks of `chunk_size` rows; other values are shared."""
    chunks = []
    for start in range(0, batch_size, chunk_size):
        chunk = {}
        for key, value in batch.items():
            per_sentence = isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size
            chunk[key] = value[start : start + chunk_size] if per_sentence else value
        chunks.append(chunk)
    return chunks


def grad_cache_step(
    model: AutoMLMForPreTraining | nn.Module,
    batch: dict[str, torch.Tensor],
    chunk_size: int,
) -> AutoMLMForPreTrainingOutput:
    """Backpropagate the joint loss of `batch` while holding the activations of only `chunk_size` sentences.

    The parameter gradients equal those of ``model(**batch).loss.backward()`` (with the same token masks and the
    same dropout masks), and are accumulated into ``.grad`` the same way: the caller then steps the optimizer and
    zeroes the gradients. Each chunk is run twice (once without a graph, once with), so a step costs about one
    extra forward pass. With `chunk_size` at least the batch size this is an ordinary step plus that extra forward.

    Masking is done once for the whole batch (unless the batch already holds ``masked_input_ids`` and
    ``mlm_labels``), so that every chunk sees the masks of the full batch. Dropout masks are reproduced by replaying
    the CPU random state (and the accelerator's, for an input on an accelerator) of each chunk's first pass.

    Multi-process training: with ``config.gather_across_processes`` the full-batch contrastive loss gathers the
    other processes' embeddings with gradients, exactly as the uncached forward does; every process must call this
    function with the same batch size and `chunk_size`. Pass the `DistributedDataParallel` wrapper as `model`: its
    gradient all-reduce then runs once, after the last chunk (the others run under ``no_sync``). Mixed precision:
    call it inside ``torch.autocast`` (bf16 needs no loss scaling; fp16 loss scaling is not supported here).

    Args:
        model: an [`AutoMLMForPreTraining`], or a `DistributedDataParallel` wrapper around one, in the mode to train
            in (``model.train()`` for dropout).
        batch: the keyword arguments of ``AutoMLMForPreTraining.forward``: ``input_ids``, ``attention_mask`` and
            optionally ``token_type_ids``, ``positive_*``, ``masked_input_ids`` with ``mlm_labels``, ``word_ids``,
            ``special_tokens_mask``. Every tensor whose first dimension is the batch size is split into chunks.
        chunk_size: sentences per chunk; the activation memory of one chunk's forward and backward is the peak.

    Returns:
        The step's [`AutoMLMForPreTrainingOutput`], detached: the full-batch `loss` and its parts, the accuracies
        and the embeddings of the first pass.

    Example:
        >>> output = grad_cache_step(model, batch, chunk_size=32)  # backward is done
        >>> optimizer.step()
        >>> optimizer.zero_grad()
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
    if "input_ids" not in batch:
        raise ValueError("`batch` needs `input_ids` (the keyword arguments of AutoMLMForPreTraining.forward).")
    module = _unwrap(model)
    config = module.config
    batch = dict(batch)
    batch.pop("return_dict", None)
    input_ids = batch["input_ids"]
    batch_size = input_ids.shape[0]
    if batch.get("attention_mask") is None:
        batch["attention_mask"] = torch.ones_like(input_ids)
    if config.uses_masking and batch.get("masked_input_ids") is None:
        batch["masked_input_ids"], batch["mlm_labels"] = module.mask(
            input_ids, batch["attention_mask"], batch.get("word_ids"), batch.get("special_tokens_mask")
        )
    chunks = _chunks(batch, batch_size, chunk_size)
    with_contrastive = config.contrastive_weight > 0

    # Masked-LM terms are means over the masked tokens of the whole batch: weight each chunk by its share.
    if config.uses_masking:
        selected = [int((chunk["mlm_labels"] != IGNORE_INDEX).sum()) for chunk in chunks]
        shares = [count / max(sum(selected), 1) for count in selected]
    else:
        shares = [0.0] * len(chunks)

    # 1. Embeddings of every chunk, without a graph; the random state of each chunk is kept for the replay. The
    # chunks' own contrastive losses would be of no use (the loss is the full batch's), so none is computed.
    states: list[_RandomState] = []
    anchors, positives = [], []
    if with_contrastive:
        with torch.no_grad():
            for chunk in chunks:
                states.append(_RandomState.capture(input_ids.device))
                output = model(**chunk, compute_contrastive_loss=False)
                anchors.append(output.sentence_embedding)
                positives.append(output.positive_embedding)

    # 2. The contrastive loss of the full batch and its gradient with respect to the embeddings.
    cl_loss = None
    anchor_grads: tuple[torch.Tensor, ...] = ()
    positive_grads: tuple[torch.Tensor, ...] = ()
    if with_contrastive:
        anchor_cache = torch.cat(anchors).detach().requires_grad_()  # (batch, hidden)
        positive_cache = torch.cat(positives).detach().requires_grad_()  # (batch, hidden)
        with torch.enable_grad():
            cl_loss = contrastive_loss(
                anchor_cache, positive_cache, config.contrastive_temperature, config.gather_across_processes
            )
            module.joint_loss({CL_TERM.loss_key: cl_loss}).backward()
        anchor_grads = anchor_cache.grad.split(chunk_size)
        positive_grads = positive_cache.grad.split(chunk_size)

    # 3. Each chunk again, with its dropout masks, backpropagating the cached gradients and its masked-LM terms
    # (the chunk's `loss`: the weighted masked-LM terms, without the contrastive one).
    masked_lm: dict[str, torch.Tensor | None] = dict.fromkeys(MASKED_LM_KEYS)
    no_sync = getattr(model, "no_sync", None)
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        replay = states[index].replay() if with_contrastive else contextlib.nullcontext()
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with replay, sync, torch.enable_grad():
            output = model(**chunk, compute_contrastive_loss=False)
            surrogate = shares[index] * output.loss
            if with_contrastive:
                surrogate = surrogate + (output.sentence_embedding.float() * anchor_grads[index]).sum()
                surrogate = surrogate + (output.positive_embedding.float() * positive_grads[index]).sum()
            surrogate.backward()
        for key, total in masked_lm.items():
            value = getattr(output, key)
            if value is not None:
                masked_lm[key] = shares[index] * value.detach() + (0.0 if total is None else total)
        if not with_contrastive:
            anchors.append(output.sentence_embedding.detach())

    cl_loss = None if cl_loss is None else cl_loss.detach()
    return AutoMLMForPreTrainingOutput(
        loss=module.joint_loss({CL_TERM.loss_key: cl_loss, **masked_lm}),
        **{CL_TERM.loss_key: cl_loss},
        **masked_lm,
        sentence_embedding=torch.cat(anchors).detach(),
        positive_embedding=torch.cat(positives).detach() if with_contrastive else None,
    )
