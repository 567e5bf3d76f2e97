import shutil
from pathlib import Path

import pytest
import torch

from evaluation.data import load_beir
from evaluation.evaluate import evaluate_encoder, evaluate_model, evaluate_retriever
from evaluation.retrievers import BM25Retriever, DenseRetriever

BEIR_TINY = Path(__file__).parents[1] / "fixtures" / "beir_tiny"


def test_cross_lingual_runs_queries_against_the_pivot_corpus(tmp_path):
    results = evaluate_model("bm25", BEIR_TINY, cross_lingual="en", show_progress_bar=False)
    assert results["task"] == "cross-lingual"
    assert results["corpus_language"] == "en"
    assert list(results["per_language"]) == ["de"]
    queries, _, qrels = load_beir(BEIR_TINY / "de")
    _, english_corpus, _ = load_beir(BEIR_TINY / "en")
    assert results["per_language"]["de"] == pytest.approx(
        evaluate_retriever(BM25Retriever(), queries, english_corpus, qrels)
    )
    # A qrels id that the pivot corpus lacks is an error naming the file.
    data = shutil.copytree(BEIR_TINY, tmp_path / "data")
    (data / "en" / "corpus.jsonl").write_text('{"_id": "d1", "text": "only one"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"de/qrels\.tsv against the 'en' corpus.*'d2'"):
        evaluate_model("bm25", data, cross_lingual="en", show_progress_bar=False)
    with pytest.raises(ValueError, match="available"):
        evaluate_model("bm25", data, cross_lingual="fr", show_progress_bar=False)


def test_a_single_beir_folder_is_one_language():
    results = evaluate_model("bm25", BEIR_TINY / "en", show_progress_bar=False)
    assert list(results["per_language"]) == ["en"]
    assert results["per_language"]["en"]["mrr@10"] == pytest.approx(1.0)


def test_evaluate_encoder_matches_evaluate_retriever_per_language():
    def bag_of_letters(texts):
        return torch.stack(
            [torch.bincount(torch.tensor([ord(c) % 64 for c in t.lower()]), minlength=64) for t in texts]
        )

    results = evaluate_encoder(bag_of_letters, BEIR_TINY, model_name="letters", max_seq_length=8, batch_size=3)
    assert (results["model"], results["max_seq_length"], results["task"]) == ("letters", 8, "monolingual")
    for lang in ("de", "en"):
        per_query = {}
        expected = evaluate_retriever(
            DenseRetriever(bag_of_letters), *load_beir(BEIR_TINY / lang), per_query=per_query
        )
        assert results["per_language"][lang] == pytest.approx(expected)
        assert results["per_query"][lang] == per_query
