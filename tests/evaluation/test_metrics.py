import math

import pytest
import torch

from evaluation.evaluate import evaluate_retriever
from evaluation.metrics import score_rankings
from evaluation.retrievers import DenseRetriever

METRICS = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"]

# Hand-chosen 2-d embeddings: the ranking of every query follows from the cosine similarities by hand.
VECTORS = {
    "alpha": [1.0, 0.0],  # query q1, and also the text of document d2
    "beta": [0.0, 1.0],  # query q2
    "gamma": [0.3, 0.3],  # query q3: no relevant document in the qrels, not evaluated
    "doc one": [0.0, 2.0],  # d1: cos(q1) = 0, cos(q2) = 1
    "doc three, which is longer": [1.0, 1.0],  # d3: cos(q1) = cos(q2) = 0.707
    "doc four": [1.0, -1.0],  # d4: cos(q1) = 0.707 (tie with d3, after it in corpus order), cos(q2) = -0.707
    "doc five, the longest text of all": [-1.0, 0.0],  # d5: cos(q1) = -1, cos(q2) = 0 (tie with d2)
}
QUERIES = {"q1": "alpha", "q2": "beta", "q3": "gamma"}
CORPUS = {
    "d1": "doc one",
    "d2": "alpha",
    "d3": "doc three, which is longer",
    "d4": "doc four",
    "d5": "doc five, the longest text of all",
}
QRELS = {"q1": {"d3": 2, "d1": 1}, "q2": {"d5": 1, "d3": 0}, "q3": {"d1": 0}}


def fake_encode(texts: list[str]) -> torch.Tensor:
    return torch.tensor([VECTORS[text] for text in texts])


def test_metrics_match_hand_computed_values():
    per_query = {}
    result = evaluate_retriever(
        DenseRetriever(fake_encode, batch_size=2), QUERIES, CORPUS, QRELS, k_values=(1, 2, 10), per_query=per_query
    )

    # q1 ranks d2 (its own text, not relevant: no special case), d3 (rel 2), d4 (tied with d3, later in the corpus),
    # d1 (rel 1), d5.
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    q1 = {"ndcg@10": dcg / idcg, "mrr@10": 1 / 2, "recall@1": 0.0, "recall@2": 1 / 2, "recall@10": 1.0}
    # q2 ranks d1, d3, d2, d5 (tied with d2 at 0, later in the corpus), d4; only d5 is relevant (d3 is judged 0).
    q2 = {"ndcg@10": (1 / math.log2(5)) / 1.0, "mrr@10": 1 / 4, "recall@1": 0.0, "recall@2": 0.0, "recall@10": 1.0}
    assert set(per_query) == {"q1", "q2"}, "q3 has no relevant document and must not be evaluated"
    for name, value in q1.items():
        assert per_query["q1"][name] == pytest.approx(value)
    for name, value in q2.items():
        assert per_query["q2"][name] == pytest.approx(value)
    for name in q1:
        assert result[name] == pytest.approx((q1[name] + q2[name]) / 2)
    assert result["num_queries"] == 2
    assert result["num_documents"] == 5


def test_default_keys_and_a_perfect_ranking():
    queries = {"q1": "doc one", "q2": "alpha"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    result = evaluate_retriever(DenseRetriever(fake_encode), queries, CORPUS, qrels)
    assert set(result) == {*METRICS, "num_queries", "num_documents"}
    assert all(result[name] == pytest.approx(1.0) for name in METRICS)


def test_encode_with_a_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="num_texts, dim"):
        evaluate_retriever(DenseRetriever(lambda texts: torch.zeros(len(texts))), QUERIES, CORPUS, QRELS)


def test_qrels_ids_missing_from_corpus_or_queries_are_errors():
    with pytest.raises(ValueError, match=r"document id.*'d9'.*corpus\.jsonl"):
        evaluate_retriever(DenseRetriever(fake_encode), QUERIES, CORPUS, {"q1": {"d9": 1}})
    with pytest.raises(ValueError, match=r"query id.*'q9'.*queries\.jsonl"):
        evaluate_retriever(DenseRetriever(fake_encode), QUERIES, CORPUS, {"q9": {"d1": 1}})


def test_score_rankings_keeps_the_given_order_and_counts_only_positive_judgements():
    # trec_eval would break the tie of equal scores by document id; the ranking given is kept as it is.
    rankings = {"q1": ["d2", "d3", "d4", "d1", "d5"], "q2": ["d9"], "q3": []}
    per_query = score_rankings(rankings, {"q1": {"d3": 2, "d1": 1, "d2": 0}, "q2": {"d9": -1}}, k_values=(1, 2))
    assert per_query["q1"]["ndcg@10"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3)))
    assert per_query["q1"]["mrr@10"] == pytest.approx(1 / 2)
    assert (per_query["q1"]["recall@1"], per_query["q1"]["recall@2"]) == (0.0, 0.5)
    # No relevant document (a negative judgement is not one), or nothing retrieved: every metric is 0.
    assert per_query["q2"] == per_query["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@1": 0.0, "recall@2": 0.0}
