"""What every builder writes besides its BEIR folders: the unlabelled text and the README of the set."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from corpora import normalize_text
from evaluation.report import markdown_table

UNLABELLED_DIR = "unlabelled"
# The selection split, beside the test folders: `<set>/dev/<lang>/`.
DEV_DIR = "dev"


def write_lines(path: str | Path, lines: Iterable[str]) -> int:
    """Write texts one per line (each flattened to one line, empty ones skipped); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            line = normalize_text(line)
            if line:
                f.write(line + "\n")
                count += 1
    return count


def dedup(texts: Iterable[str]) -> list[str]:
    """The texts in order, each kept once."""
    return list(dict.fromkeys(texts))


def render_readme(title: str, description: str, counts: dict[str, dict[str, int]], licence: str) -> str:
    """The README of a built set: its title, a description, the counts per language (a table) and the licence."""
    keys = list(next(iter(counts.values())))
    rows = [[code, *(c[k] for k in keys)] for code, c in counts.items()]
    table = markdown_table(rows, ["language", *keys])
    return "\n".join([f"# {title}", "", description, "", table, "", f"Licence: {licence}", ""])
