import pytest
import torch

from modeling_automlm import mask_tokens
from modeling_automlm.masking import IGNORE_INDEX

MASK, VOCAB = 4, 1000


def _batch(rows: int = 64, length: int = 40):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (rows, length), generator=generator)
    eligible = torch.ones_like(ids, dtype=torch.bool)
    eligible[:, 0] = eligible[:, -1] = False  # CLS / SEP
    eligible[: rows // 2, length // 2 :] = False  # padding in half the rows
    return ids, eligible


def test_only_eligible_positions_are_selected_and_labels_hold_originals():
    ids, eligible = _batch()
    masked, labels = mask_tokens(ids, eligible, mask_token_id=MASK, vocab_size=VOCAB, probability=0.15)
    selected = labels != IGNORE_INDEX
    assert not (selected & ~eligible).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])


def test_selection_rate_and_bert_replacement_split():
    ids, eligible = _batch(rows=400, length=60)
    generator = torch.Generator().manual_seed(1)
    masked, labels = mask_tokens(
        ids, eligible, mask_token_id=MASK, vocab_size=VOCAB, probability=0.15, generator=generator
    )
    selected = labels != IGNORE_INDEX
    rate = selected.sum() / eligible.sum()
    assert 0.14 < rate < 0.17
    as_mask = (masked == MASK) & selected
    unchanged = (masked == ids) & selected
    assert 0.77 < as_mask.sum() / selected.sum() < 0.83
    # 10% random (a random id can equal the original, rarely) and 10% kept.
    assert 0.08 < unchanged.sum() / selected.sum() < 0.12


def test_mask_replacement_always_uses_mask_token():
    ids, eligible = _batch()
    masked, labels = mask_tokens(
        ids, eligible, mask_token_id=MASK, vocab_size=VOCAB, probability=0.3, replacement="mask"
    )
    assert (masked[labels != IGNORE_INDEX] == MASK).all()


def test_every_row_with_an_eligible_token_gets_one():
    ids = torch.randint(10, VOCAB, (50, 4))
    eligible = torch.zeros_like(ids, dtype=torch.bool)
    eligible[:, 1] = True  # a one-token query
    eligible[0] = False  # an empty row
    _, labels = mask_tokens(ids, eligible, mask_token_id=MASK, vocab_size=VOCAB, probability=0.01)
    selected = labels != IGNORE_INDEX
    assert selected[1:].sum(dim=1).eq(1).all()
    assert not selected[0].any()


@pytest.mark.parametrize("probability", [0.2, 0.001])
def test_whole_word_masking_selects_complete_words(probability):
    ids = torch.randint(10, VOCAB, (30, 12))
    # words of 3 tokens: [CLS] w0 w0 w0 w1 w1 w1 w2 w2 w2 [SEP] [PAD]
    word_ids = torch.tensor([-1, 0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1]).expand(30, -1)
    eligible = word_ids >= 0
    _, labels = mask_tokens(
        ids, eligible, mask_token_id=MASK, vocab_size=VOCAB, probability=probability, word_ids=word_ids
    )
    selected = (labels != IGNORE_INDEX).view(30, -1)[:, 1:10].reshape(30, 3, 3)
    assert (selected.all(dim=-1) | ~selected.any(dim=-1)).all(), "a word was partly masked"
    assert selected.any(dim=-1).any(dim=-1).all()
    assert not (labels[:, [0, 10, 11]] != IGNORE_INDEX).any()
