import pytest

from corpora.files import read_jsonl, read_lines


def test_jsonl_records_keep_their_line_numbers_and_skip_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\r\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, {"text": "a"}), (4, {"text": "b"})]
    assert list(read_lines(path))[3] == (4, '{"text": "b"}')


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "a"}\n{"text": "\xff"}\n', r"a\.jsonl, line 2: not valid UTF-8 .*re-encode the file as UTF-8"),
        (b'{"text": "a"}\n{"text": \n', r"a\.jsonl, line 2: not valid JSON .*one JSON object"),
        (b'["a"]\n', r"a\.jsonl, line 1: expected a JSON object, got list"),
    ],
)
def test_bad_lines_name_the_file_the_line_and_the_fix(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        list(read_jsonl(path))
