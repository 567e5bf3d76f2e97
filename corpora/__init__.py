"""Readers of the text sources that training, evaluation and the benchmark builders share.

- `corpora.files`: UTF-8 lines and JSONL records, with errors that name the file, the line and the fix.
- `corpora.chatterbot`: the YAML dialogues of the `chatterbot-corpus` package (the embedded training text and the
  source of the ``chatterbot-qa`` benchmark).

Nothing here imports torch or another package of this repository.
"""


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace (newlines and tabs included) into one space and strip the ends."""
    return " ".join(text.split())
