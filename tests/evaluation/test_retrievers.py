from pathlib import Path

import pytest
import torch

from evaluation.data import load_beir
from evaluation.evaluate import evaluate_model, evaluate_retriever
from evaluation.retrievers import BM25Index, BM25Retriever, DenseRetriever, bm25_tokenize, load_sentence_transformer

BEIR_TINY = Path(__file__).parents[1] / "fixtures" / "beir_tiny"


def test_bm25_tokenizer_splits_unspaced_scripts_into_character_ngrams():
    assert bm25_tokenize("Où est ma commande?") == ["où", "est", "ma", "commande"]
    assert bm25_tokenize("订单在哪里") == ["订", "单", "在", "哪", "里", "订单", "单在", "在哪", "哪里"]
    assert bm25_tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs stay inside their word
    assert bm25_tokenize("iPhone 15の注文") == ["iphone", "15", "の", "注", "文", "の注", "注文"]


def test_bm25_ranks_lexical_matches_first_in_any_script():
    corpus = {
        "d1": "reset your password from the login page",
        "d2": "我的订单已经发货了",
        "d3": "track your order with the tracking number",
        "d4": "如何重置密码",
    }
    queries = {"q1": "password reset", "q2": "重置密码", "q3": "订单", "q4": "zzz unknown words"}
    qrels = {"q1": {"d1": 1}, "q2": {"d4": 1}, "q3": {"d2": 1}, "q4": {"d3": 1}}
    per_query = {}
    result = evaluate_retriever(BM25Retriever(), queries, corpus, qrels, per_query=per_query)
    assert [per_query[q]["mrr@10"] for q in ("q1", "q2", "q3")] == [1.0, 1.0, 1.0]
    # A query with no known token scores 0 everywhere: the corpus order decides, d3 comes third.
    assert per_query["q4"]["mrr@10"] == pytest.approx(1 / 3)
    assert result["num_queries"] == 4
    assert BM25Index(list(corpus.values())).scores(["zzz"]).abs().sum() == 0


@pytest.mark.slow
def test_evaluate_model_loads_our_export_and_the_plain_export(make_model, tokenizer, tmp_path):
    from training.export import export_plain, export_sentence_transformers

    model = make_model(pooling="mean").eval()
    with torch.no_grad():  # move away from the init so that a wrong load would show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    export_sentence_transformers(model, tokenizer, tmp_path / "custom")
    export_plain(model, tokenizer, tmp_path / "plain")

    # Independent reference: the model's own sentence embeddings, truncated to 16 tokens, through evaluate_retriever.
    def encode(texts):
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
            return model.automlm(**batch).sentence_embedding

    queries, corpus, qrels = load_beir(BEIR_TINY / "en")
    expected = evaluate_retriever(DenseRetriever(encode), queries, corpus, qrels)
    for folder in ("custom", "plain"):
        results = evaluate_model(
            str(tmp_path / folder), BEIR_TINY, max_seq_length=16, batch_size=3, device="cpu", show_progress_bar=False
        )
        assert results["max_seq_length"] == 16
        assert results["per_language"]["en"] == pytest.approx(expected), folder


def test_a_missing_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_sentence_transformer(str(tmp_path / "outputs" / "run" / "final"))
    with pytest.raises(FileNotFoundError, match="holds no model"):
        load_sentence_transformer(str(tmp_path))
    with pytest.raises(ValueError, match="max_seq_length must be positive"):
        load_sentence_transformer(str(tmp_path), max_seq_length=0)
