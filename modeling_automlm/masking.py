"""Token masking for Auto-MLM and MLM, in torch only so that it ships with the model code."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.LongTensor,
    eligible: torch.BoolTensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    replacement: str = "bert",
    word_ids: torch.LongTensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Select tokens for prediction and corrupt them.

    Args:
        input_ids: `(batch, seq_len)` token ids.
        eligible: `(batch, seq_len)` True where a token may be selected (not padding, not a special token).
        mask_token_id: id written at masked positions.
        vocab_size: random replacement tokens are drawn from `[0, vocab_size)`.
        probability: chance that a token (or, with `word_ids`, a word) is selected.
        replacement: `"bert"` (80% mask token, 10% random token, 10% unchanged) or `"mask"` (always the mask token).
        word_ids: optional `(batch, seq_len)` index of the word each token belongs to, `-1` for special tokens and
            padding; when given, whole words are selected.
        generator: optional random generator, for reproducible masks.

    Returns:
        `(masked_input_ids, labels)`, both `(batch, seq_len)`; `labels` holds the original id at selected positions
        and `-100` elsewhere. Every row with at least one eligible token has at least one selected token, so short
        queries always contribute to the loss.
    """
    device = input_ids.device
    eligible = eligible.bool()
    if word_ids is not None:
        eligible = eligible & (word_ids >= 0)
        num_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
        word_selected = torch.rand((input_ids.shape[0], max(num_words, 1)), device=device, generator=generator)
        word_selected = word_selected < probability  # (batch, num_words)
        selected = torch.gather(word_selected, 1, word_ids.clamp(min=0)) & eligible
    else:
        selected = (torch.rand(input_ids.shape, device=device, generator=generator) < probability) & eligible

    # Rows that drew nothing get one eligible token (with whole words: every token of that token's word).
    empty = ~selected.any(dim=1) & eligible.any(dim=1)
    if empty.any():
        scores = torch.rand(input_ids.shape, device=device, generator=generator).masked_fill(~eligible, -1.0)
        pick = scores.argmax(dim=1, keepdim=True)  # (batch, 1)
        forced = torch.zeros_like(selected).scatter_(1, pick, True)
        if word_ids is not None:
            forced = (word_ids == torch.gather(word_ids, 1, pick)) & eligible
        selected = selected | (forced & empty[:, None])

    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = input_ids.clone()
    if replacement == "mask":
        masked[selected] = mask_token_id
        return masked, labels

    draw = torch.rand(input_ids.shape, device=device, generator=generator)
    to_mask = selected & (draw < 0.8)
    to_random = selected & (draw >= 0.8) & (draw < 0.9)
    masked[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, device=device, generator=generator, dtype=input_ids.dtype)
    masked[to_random] = random_ids[to_random]
    return masked, labels
