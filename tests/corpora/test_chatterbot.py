from corpora.chatterbot import read_chatterbot_language


def test_chatterbot_reader_handles_odd_entries(tmp_path):
    (tmp_path / "a.yml").write_text(
        """categories: [test]
conversations:
- - Hello
  - Hi there
  - How are you?
- - 42
  - yes
  - Fine
- - Question? - Answer.
- Is this a list? - No, a mis-indented string.
- - Outer
  - - Inner question
    - Inner answer
  - After
- - ""
  - Lonely
""",
        encoding="utf-8",
    )
    (tmp_path / "b.yml").write_text("conversations: [[unclosed", encoding="utf-8")  # not valid YAML: skipped
    (tmp_path / "c.yml").write_text("- just a list\n", encoding="utf-8")  # no conversations: skipped
    data = read_chatterbot_language(tmp_path)
    assert data.pairs == [
        ("Hello", "Hi there"),
        ("Hi there", "How are you?"),
        # `yes` is read as a boolean by YAML: skipped, and it breaks the chain; 42 keeps its text.
        ("Inner question", "Inner answer"),
    ]
    assert "42" in data.utterances
    assert "Is this a list? - No, a mis-indented string." in data.utterances
    assert "Lonely" in data.utterances and "" not in data.utterances
    assert data.skipped == 2  # `yes` and the empty string
