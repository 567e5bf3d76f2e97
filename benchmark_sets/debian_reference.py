"""``debian-reference``: section title -> section text over the Debian Reference and its translations."""

from __future__ import annotations

import re

from .translated_docs import DocSource

_SECTION_NUMBER = re.compile(r"^\s*(?:[A-Z]|\d+)(?:\.\d+)*\.\s+")


def strip_section_number(title: str) -> str:
    """``"1.2.3. Title"`` or ``"A.1. Title"`` -> ``"Title"`` (DocBook's numbering would tie titles to their ids)."""
    return _SECTION_NUMBER.sub("", title).strip()


DEBIAN_REFERENCE = DocSource(
    name="debian-reference",
    description=(
        "The Debian Reference (Osamu Aoki and translators, version 2.100 in Debian 12), a system administration "
        "guide in DocBook, translated with po4a. Unit: a section (query: its title without numbering; document: "
        "its own text, without its subsections)."
    ),
    packages={
        "en": "debian-reference-en",
        "de": "debian-reference-de",
        "es": "debian-reference-es",
        "fr": "debian-reference-fr",
        "id": "debian-reference-id",
        "it": "debian-reference-it",
        "ja": "debian-reference-ja",
        "pt": "debian-reference-pt",
        # debian-reference-pt-br is left out: a near copy of -pt (103 of its 4458 unlabelled lines differ).
        "zh-Hans": "debian-reference-zh-cn",
        "zh-Hant": "debian-reference-zh-tw",
    },
    html_glob="usr/share/debian-reference",
    page_id=lambda relative: relative.split(".", 1)[0],  # ch01.zh-cn.html -> ch01
    unit="section",
    skip_classes=frozenset({"navheader", "navfooter", "toc", "list-of-tables", "list-of-figures", "footnotes"}),
    clean_title=strip_section_number,
    eval_fraction=0.5,
)
