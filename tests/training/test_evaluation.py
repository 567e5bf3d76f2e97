import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from training.evaluation import (
    BM25Index,
    bm25_tokenize,
    evaluate_bm25,
    evaluate_encoder,
    evaluate_model,
    evaluate_retrieval,
    load_beir,
    main,
    paired_bootstrap,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
BEIR_TINY = FIXTURES / "beir_tiny"
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
    result = evaluate_retrieval(
        fake_encode, QUERIES, CORPUS, QRELS, k_values=(1, 2, 10), batch_size=2, per_query=per_query
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
    result = evaluate_retrieval(fake_encode, queries, CORPUS, qrels)
    assert set(result) == {*METRICS, "num_queries", "num_documents"}
    assert all(result[name] == pytest.approx(1.0) for name in METRICS)


def test_encode_with_a_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="num_texts, dim"):
        evaluate_retrieval(lambda texts: torch.zeros(len(texts)), QUERIES, CORPUS, QRELS)


def test_qrels_ids_missing_from_corpus_or_queries_are_errors():
    with pytest.raises(ValueError, match=r"document id.*'d9'.*corpus\.jsonl"):
        evaluate_retrieval(fake_encode, QUERIES, CORPUS, {"q1": {"d9": 1}})
    with pytest.raises(ValueError, match=r"query id.*'q9'.*queries\.jsonl"):
        evaluate_retrieval(fake_encode, QUERIES, CORPUS, {"q9": {"d1": 1}})


def write_beir(folder: Path, queries: str, corpus: str, qrels: str, qrels_name: str = "qrels.tsv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.jsonl").write_text(queries, encoding="utf-8")
    (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / qrels_name).parent.mkdir(parents=True, exist_ok=True)
    (folder / qrels_name).write_text(qrels, encoding="utf-8")
    return folder


GOOD_QUERIES = '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n'
GOOD_CORPUS = '{"_id": "d1", "title": "T", "text": "x"}\n{"_id": 2, "text": "y"}\n'
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\t2\t2\n"


def test_load_beir_reads_titles_numeric_ids_and_beir_qrels_folder(tmp_path):
    folder = write_beir(tmp_path, GOOD_QUERIES, GOOD_CORPUS, GOOD_QRELS, qrels_name="qrels/test.tsv")
    queries, corpus, qrels = load_beir(folder)
    assert queries == {"q1": "a", "q2": "b"}
    assert corpus == {"d1": "T x", "2": "y"}
    assert qrels == {"q1": {"d1": 1}, "q2": {"2": 2}}


@pytest.mark.parametrize(
    ("file", "content", "line", "message"),
    [
        ("queries.jsonl", '{"_id": "q1", "text": "a"}\n\n{"_id": "q2", "text": "b"\n', 3, "not valid JSON"),
        ("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2"}\n', 2, 'missing "text"'),
        ("corpus.jsonl", '{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n', 2, "duplicate"),
        ("corpus.jsonl", '{"_id": "d1", "text": ["x"]}\n', 1, "must be a string"),
        ("corpus.jsonl", '["d1", "x"]\n', 1, "expected a JSON object"),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1 d1 1\n", 2, "3 tab-separated fields"),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\t2\thigh\n", 3, "must be an integer"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, file, content, line, message):
    folder = write_beir(tmp_path, GOOD_QUERIES, GOOD_CORPUS, GOOD_QRELS)
    (folder / file).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        load_beir(folder)
    assert f"{folder / file}, line {line}" in str(error.value)


def test_load_beir_names_missing_ids_and_files(tmp_path):
    folder = write_beir(tmp_path, GOOD_QUERIES, GOOD_CORPUS, GOOD_QRELS + "q1\td7\t1\n")
    with pytest.raises(ValueError, match=r"qrels\.tsv.*'d7'.*Add them to corpus\.jsonl"):
        load_beir(folder)
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"corpus\.jsonl"):
        load_beir(folder)


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
    result = evaluate_bm25(queries, corpus, qrels, per_query=per_query)
    assert [per_query[q]["mrr@10"] for q in ("q1", "q2", "q3")] == [1.0, 1.0, 1.0]
    # A query with no known token scores 0 everywhere: the corpus order decides, d3 comes third.
    assert per_query["q4"]["mrr@10"] == pytest.approx(1 / 3)
    assert result["num_queries"] == 4
    assert BM25Index(list(corpus.values())).scores(["zzz"]).abs().sum() == 0


def test_cli_writes_json_and_prints_table(tmp_path, capsys):
    output = tmp_path / "results" / "bm25.json"
    main(["--model", "bm25", "--data", str(BEIR_TINY), "--output", str(output), "--no-progress-bar"])
    results = json.loads(output.read_text())
    assert list(results) == ["model", "dataset", "task", "max_seq_length", "per_language", "macro", "per_query"]
    assert (results["model"], results["dataset"], results["task"]) == ("bm25", "beir_tiny", "monolingual")
    assert results["max_seq_length"] is None
    assert set(results["per_language"]) == {"de", "en"}
    for scores in results["per_language"].values():
        assert set(scores) == {*METRICS, "num_queries", "num_documents"}
        assert (scores["num_queries"], scores["num_documents"]) == (4, 4)
    assert list(results["macro"]) == METRICS
    for name in METRICS:
        expected = (results["per_language"]["de"][name] + results["per_language"]["en"][name]) / 2
        assert results["macro"][name] == pytest.approx(expected)
    assert set(results["per_query"]["en"]) == {"q1", "q2", "q3", "q4"}
    assert set(results["per_query"]["en"]["q1"]) == set(METRICS)
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| language | " + " | ".join(METRICS) + " | queries | documents |"
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["de", "en", "**macro**"]


def test_cross_lingual_runs_queries_against_the_pivot_corpus(tmp_path):
    results = evaluate_model("bm25", BEIR_TINY, cross_lingual="en", show_progress_bar=False)
    assert results["task"] == "cross-lingual"
    assert results["corpus_language"] == "en"
    assert list(results["per_language"]) == ["de"]
    queries, _, qrels = load_beir(BEIR_TINY / "de")
    _, english_corpus, _ = load_beir(BEIR_TINY / "en")
    assert results["per_language"]["de"] == pytest.approx(evaluate_bm25(queries, english_corpus, qrels))
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


@pytest.mark.slow
def test_evaluate_model_loads_our_export_and_the_plain_export(make_model, tokenizer, tmp_path):
    from training.export import export_plain, export_sentence_transformers

    model = make_model(pooling="mean").eval()
    with torch.no_grad():  # move away from the init so that a wrong load would show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    export_sentence_transformers(model, tokenizer, tmp_path / "custom")
    export_plain(model, tokenizer, tmp_path / "plain")

    # Independent reference: the model's own sentence embeddings, truncated to 16 tokens, through evaluate_retrieval.
    def encode(texts):
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
            return model.automlm(**batch).sentence_embedding

    queries, corpus, qrels = load_beir(BEIR_TINY / "en")
    expected = evaluate_retrieval(encode, queries, corpus, qrels)
    for folder in ("custom", "plain"):
        results = evaluate_model(
            str(tmp_path / folder), BEIR_TINY, max_seq_length=16, batch_size=3, device="cpu", show_progress_bar=False
        )
        assert results["max_seq_length"] == 16
        assert results["per_language"]["en"] == pytest.approx(expected), folder


def test_evaluate_encoder_matches_evaluate_retrieval_per_language():
    def bag_of_letters(texts):
        return torch.stack(
            [torch.bincount(torch.tensor([ord(c) % 64 for c in t.lower()]), minlength=64) for t in texts]
        )

    results = evaluate_encoder(bag_of_letters, BEIR_TINY, model_name="letters", max_seq_length=8, batch_size=3)
    assert (results["model"], results["max_seq_length"], results["task"]) == ("letters", 8, "monolingual")
    for lang in ("de", "en"):
        per_query = {}
        expected = evaluate_retrieval(bag_of_letters, *load_beir(BEIR_TINY / lang), per_query=per_query)
        assert results["per_language"][lang] == pytest.approx(expected)
        assert results["per_query"][lang] == per_query


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
