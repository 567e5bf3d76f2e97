import pytest
import torch

from evaluation.bootstrap import paired_bootstrap


def test_paired_bootstrap():
    a = {"en": {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 1.0}}, "de": {"q1": {"ndcg@10": 0.2}}}
    shifted = {lang: {q: {"ndcg@10": m["ndcg@10"] - 0.1} for q, m in qs.items()} for lang, qs in a.items()}
    assert paired_bootstrap(a, a, "ndcg@10") == (0.0, 0.0, 0.0)
    diff, low, high = paired_bootstrap(a, shifted, "ndcg@10", n=200)
    assert (diff, low, high) == pytest.approx((0.1, 0.1, 0.1))

    rng = torch.Generator().manual_seed(0)
    x = {f"q{i}": {"mrr@10": float(v)} for i, v in enumerate(torch.rand(200, generator=rng))}
    y = {q: {"mrr@10": m["mrr@10"] * 0.8} for q, m in x.items()}
    diff, low, high = paired_bootstrap(x, y, "mrr@10", n=500, seed=1)
    assert low < diff < high
    assert diff == pytest.approx(0.2 * sum(m["mrr@10"] for m in x.values()) / 200)
    assert paired_bootstrap(x, y, "mrr@10", n=500, seed=1) == (diff, low, high)

    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(x, {**y, "extra": {"mrr@10": 0.0}}, "mrr@10")
    with pytest.raises(ValueError, match="No metric"):
        paired_bootstrap(x, y, "ndcg@10")
