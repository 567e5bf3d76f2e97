"""Line-oriented text files: UTF-8 lines and JSONL records, with errors that name the file, the line and the fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 file with their numbers (from 1), line endings removed.

    Raises:
        ValueError: on bytes that are not UTF-8, naming the file and the line.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {line_number}: not valid UTF-8 ({error.reason} at byte {error.start}); "
                    "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                ) from error
            yield line_number, line.rstrip("\r\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file (one per line; blank lines are skipped) with their line numbers.

    Raises:
        ValueError: on a line that is not UTF-8, not JSON, or not a JSON object, naming the file and the line.
    """
    for line_number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}, line {line_number}: not valid JSON ({error.msg}); each line must be one JSON object."
            ) from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}.")
        yield line_number, record
