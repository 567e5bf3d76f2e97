"""The repository's Markdown documents link only to files that are in the repository."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) with a relative target; web addresses, in-page anchors and mail links are not files.
LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def _tracked_markdown() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.stdout.split()]


def test_markdown_links_point_at_files_of_the_repository():
    documents = _tracked_markdown()
    assert any(path.name == "README.md" for path in documents)
    broken = []
    for document in documents:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            resolved = (document.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
