from pathlib import Path

import pytest

from evaluation.data import load_beir


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
