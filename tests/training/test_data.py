import json

import pytest
import torch

from training.arguments import DataArguments
from training.data import (
    AutoMLMCollator,
    Corpus,
    balance_languages,
    language_sampling_probabilities,
    load_corpus,
    read_embedded_corpus,
)


def data_args(files, **kwargs) -> DataArguments:
    return DataArguments(train_files=[str(f) for f in files], **kwargs)


def test_text_files_blank_lines_duplicates_and_language_from_file_name(tmp_path):
    (tmp_path / "de.txt").write_text("hallo welt\n\n   \nhallo welt\nwo ist meine bestellung\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("bonjour\n", encoding="utf-8")
    corpus = load_corpus(data_args([tmp_path]))
    assert corpus.counts() == {"de": 2, "fr": 1}
    assert corpus.skipped_blank_lines == 2
    assert corpus.duplicates_removed == 1
    assert corpus.stats()["total_sentences"] == 3


def test_jsonl_csv_tsv_parquet_with_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text(
        json.dumps({"question": "where is my order", "lang": "en"}) + "\n"
        + json.dumps({"question": "où est ma commande", "lang": "fr"}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    (tmp_path / "b.csv").write_text('question,lang\n"hola, mundo",es\n', encoding="utf-8")
    (tmp_path / "c.tsv").write_text("question\tlang\nhej\tsv\n", encoding="utf-8")
    pq.write_table(pa.table({"question": ["ciao"], "lang": ["it"]}), tmp_path / "d.parquet")
    corpus = load_corpus(data_args([tmp_path], text_column="question", language_column="lang"))
    assert dict(zip(corpus.texts, corpus.languages)) == {
        "where is my order": "en", "où est ma commande": "fr", "hola, mundo": "es", "hej": "sv", "ciao": "it",
    }  # fmt: skip


def test_undecodable_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "en.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"en\.txt, line 3: not valid UTF-8"):
        load_corpus(data_args([path]))


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda d: d / "missing.txt", FileNotFoundError, "not found"),
        (lambda d: (d / "x.txt").write_text("\n\n") and d / "x.txt", ValueError, "corpus is empty"),
        (lambda d: (d / "x.jsonl").write_text('{"body": "hi"}\n') and d / "x.jsonl", ValueError, "no column `text`"),
        (lambda d: (d / "x.jsonl").write_text("{not json\n") and d / "x.jsonl", ValueError, "line 1"),
        (lambda d: (d / "x.docx").write_text("hi") and d / "x.docx", ValueError, "unsupported file type"),
    ],
)
def test_bad_input_stops_before_training_with_a_fix(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        load_corpus(data_args([setup(tmp_path)]))


def test_language_sampling_follows_xlmr_formula():
    probabilities = language_sampling_probabilities({"en": 900, "sw": 100}, alpha=0.3)
    expected_en = 900**0.3 / (900**0.3 + 100**0.3)
    assert probabilities["en"] == pytest.approx(expected_en)
    corpus = Corpus(texts=[f"en{i}" for i in range(900)] + [f"sw{i}" for i in range(100)],
                    languages=["en"] * 900 + ["sw"] * 100)  # fmt: skip
    order = balance_languages(corpus, alpha=0.3, seed=0)
    share_sw = sum(corpus.languages[i] == "sw" for i in order) / len(order)
    assert share_sw == pytest.approx(1 - expected_en, abs=0.002)
    assert balance_languages(corpus, alpha=1.0, seed=0) == list(range(1000))


def test_embedded_corpus_has_many_languages():
    corpus = Corpus()
    read_embedded_corpus(corpus)
    counts = corpus.counts()
    assert len(counts) >= 20 and {"en", "de", "zh-Hans", "ja"} <= set(counts)
    assert corpus.sources[0]["license"] == "BSD-3-Clause"


def test_collator_pads_truncates_and_gives_word_ids(tokenizer):
    collator = AutoMLMCollator(tokenizer, max_length=8, whole_word_masking=True)
    batch = collator([{"text": "where is my order"}, {"text": "how do i reset my password please now"}])
    assert batch["input_ids"].shape == (2, 8)  # the long one is truncated to max_length
    assert batch["attention_mask"][0].sum() < 8
    words = batch["word_ids"][0].tolist()
    assert words[0] == -1 and words[1] == 0 and -1 in words[-2:]
    pairs = collator([{"text": "where is my order", "positive": "it ships today"}] * 2)
    assert {"positive_input_ids", "positive_attention_mask"} <= set(pairs)
    with pytest.raises(ValueError, match="positive"):
        collator([{"text": "a", "positive": "b"}, {"text": "c"}])
    assert torch.equal(pairs["input_ids"][0], pairs["input_ids"][1])


def test_collator_views_dropout_prefix_prompts_and_crop(tokenizer):
    text = "how do i reset my password please now"

    def ids(batch, key="input_ids"):
        mask = batch[key.replace("input_ids", "attention_mask")]
        return [row[: int(m.sum())].tolist() for row, m in zip(batch[key], mask)]

    def expected(text):
        return tokenizer(text)["input_ids"]

    prefixed = AutoMLMCollator(tokenizer, max_length=32, text_prefix="where is ")([{"text": text}])
    assert ids(prefixed) == [expected("where is " + text)]
    assert "positive_input_ids" not in prefixed  # dropout: the model encodes the same text twice

    prompts = AutoMLMCollator(tokenizer, max_length=32, views="prompts", query_prompt="where ", document_prompt="my ")
    batch = prompts([{"text": text}])
    assert ids(batch) == [expected("where " + text)] and ids(batch, "positive_input_ids") == [expected("my " + text)]

    crop = AutoMLMCollator(tokenizer, max_length=32, views="crop", query_prompt="where ", document_prompt="my ")
    torch.manual_seed(0)
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    lengths = set()
    for _ in range(20):
        span = tokenizer(crop.crop(text), add_special_tokens=False)["input_ids"]
        lengths.add(len(span))
        assert 4 <= len(span) < len(full)
        assert any(full[i : i + len(span)] == span for i in range(len(full)))  # a contiguous piece of the text
    assert len(lengths) > 1  # the span length is drawn, not fixed
    batch = crop([{"text": text}])
    assert ids(batch, "positive_input_ids") == [expected("my " + text)]
    assert ids(batch)[0][:2] == expected("where")[:2] and len(ids(batch)[0]) < len(expected("where " + text))
    # A labelled pair keeps its own positive: views apply to unlabelled text only.
    pair = crop([{"text": "where is my order", "positive": "it ships today"}])
    assert ids(pair) == [expected("where is my order")] and ids(pair, "positive_input_ids") == [
        expected("it ships today")
    ]
