"""Translated documentation in HTML -> titled units: one per heading (a section) or one per file (a page).

One parser on the standard library's `html.parser` serves every documentation set: headings split a page into
sections, navigation and other skipped elements are left out, whitespace is collapsed, and a unit's id (page id +
heading anchor) is shared by every translation of the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from corpora import normalize_text

HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Tags after which text must not run into the next word.
BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "form", "header", "hr", "li", "main", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot",
        "th", "thead", "tr", "ul",
    }
)  # fmt: skip
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
DEFAULT_SKIP_TAGS = frozenset({"head", "script", "style", "noscript", "template", "nav", "header", "footer", "aside"})


@dataclass
class Section:
    """A titled piece of a translated document: an HTML section (heading + its own text) or a whole page.

    Attributes:
        id: shared by every translation: ``<page id>#<anchor>`` for a section, ``<page id>`` for a page.
        title: the heading text, numbering removed; empty for the text before a page's first heading.
        paragraphs: the text, one entry per HTML block (a section's subsections are not part of it).
        level: heading level (1 for ``<h1>``), 0 for a page or the text before the first heading.
    """

    id: str
    title: str
    paragraphs: list[str]
    level: int = 0

    @property
    def text(self) -> str:
        """The paragraphs joined by spaces."""
        return " ".join(self.paragraphs)


class _SectionParser(HTMLParser):
    """Split one HTML page at its headings, leaving out skipped elements (navigation, scripts, skipped classes)."""

    def __init__(self, skip_tags: frozenset[str], skip_classes: frozenset[str]):
        super().__init__(convert_charrefs=True)
        self.skip_tags = skip_tags
        self.skip_classes = skip_classes
        self.skip_stack: list[str] = []  # tags opened since skipping began; the first one started it
        # (anchor, title, paragraphs, level); the first entry gathers the text before the first heading.
        self.sections: list[tuple[str | None, str, list[str], int]] = [(None, "", [], 0)]
        self.heading: str | None = None  # tag of the heading being read
        self.heading_anchor: str | None = None
        self.heading_text: list[str] = []
        self.buffer: list[str] = []

    def _flush(self) -> None:
        # Text is gathered in `buffer` and becomes one paragraph at every block boundary.
        text = normalize_text("".join(self.buffer))
        self.buffer = []
        if text:
            self.sections[-1][2].append(text)

    def _starts_skip(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in self.skip_tags:
            return True
        classes = (dict(attrs).get("class") or "").split()
        return any(c in self.skip_classes for c in classes)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_stack or self._starts_skip(tag, attrs):
            if tag not in VOID_TAGS:
                self.skip_stack.append(tag)
            return
        attributes = dict(attrs)
        if tag in HEADING_TAGS:
            self._flush()
            self.heading = tag
            self.heading_anchor = attributes.get("id")
            self.heading_text = []
        elif self.heading is not None:
            # DocBook and LibreOffice put the anchor in an <a id="..."> or <a name="..."> inside the heading.
            if tag == "a" and self.heading_anchor is None:
                self.heading_anchor = attributes.get("id") or attributes.get("name")
            elif tag == "br":
                self.heading_text.append(" ")
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # XHTML's <a id="x"/> or <div/>: a start tag that closes itself.
        if self.skip_stack or self._starts_skip(tag, attrs):
            return
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            # Close up to the matching open tag, which tolerates unclosed children such as <p> or <li>.
            if tag in self.skip_stack:
                while self.skip_stack.pop() != tag:
                    pass
            return
        if self.heading is not None:
            if tag == self.heading:
                title = normalize_text("".join(self.heading_text))
                self.sections.append((self.heading_anchor, title, [], int(tag[1])))
                self.heading = None
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skip_stack:
            (self.heading_text if self.heading is not None else self.buffer).append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def parse_html_sections(
    html_text: str,
    page_id: str,
    *,
    skip_tags: Iterable[str] = DEFAULT_SKIP_TAGS,
    skip_classes: Iterable[str] = (),
    clean_title: Callable[[str], str] | None = None,
) -> list[Section]:
    """Split one HTML page into sections, one per heading (``<h1>`` to ``<h6>``).

    A section's text is what follows its heading up to the next heading of any level: a parent section holds only
    its own introduction, never its subsections. Its id is ``<page_id>#<anchor>``, the anchor being the heading's
    ``id``, else the ``id`` or ``name`` of the first ``<a>`` inside the heading, else ``h<n>`` (its position in the
    page); an anchor used twice in a page gets ``~<n>`` appended. Text before the first heading becomes a section
    with an empty title and the id ``<page_id>#``.

    Args:
        html_text: the page.
        page_id: the page's id, shared by its translations (e.g. its path without the language).
        skip_tags: elements left out with everything inside them.
        skip_classes: CSS classes whose elements are left out with everything inside them (tables of contents,
            navigation bars).
        clean_title: applied to every heading text, e.g. to strip section numbers.

    Returns:
        The sections in page order (the untitled one first, when there is text before the first heading).
    """
    parser = _SectionParser(frozenset(skip_tags), frozenset(skip_classes))
    parser.feed(html_text)
    parser.close()
    sections = []
    seen: set[str] = set()
    for position, (anchor, title, paragraphs, level) in enumerate(parser.sections):
        if position == 0:
            if paragraphs:
                sections.append(Section(id=f"{page_id}#", title="", paragraphs=paragraphs, level=0))
            continue
        section_id = f"{page_id}#{anchor or f'h{position}'}"
        if section_id in seen:
            section_id = f"{section_id}~{position}"
        seen.add(section_id)
        title = clean_title(title) if clean_title is not None else title
        sections.append(Section(id=section_id, title=title, paragraphs=paragraphs, level=level))
    return sections


def merge_page(page_id: str, sections: Sequence[Section]) -> Section:
    """One page as a single unit: the first heading is its title, everything else (later headings too) its text."""
    title = ""
    paragraphs: list[str] = []
    for section in sections:
        if section.title and not title:
            title = section.title
        elif section.title:
            paragraphs.append(section.title)
        paragraphs += section.paragraphs
    return Section(id=page_id, title=title, paragraphs=paragraphs, level=0)


def parse_html_folder(
    root: str | Path,
    page_id: Callable[[str], str] = lambda relative: relative.removesuffix(".html"),
    *,
    unit: Literal["section", "page"] = "section",
    skip_tags: Iterable[str] = DEFAULT_SKIP_TAGS,
    skip_classes: Iterable[str] = (),
    clean_title: Callable[[str], str] | None = None,
) -> dict[str, Section]:
    """Parse every ``*.html`` file under `root` (one language) into sections or pages.

    Args:
        root: the HTML folder of one language.
        page_id: maps a file's path relative to `root` (``/`` separators) to an id shared by its translations.
        unit: ``"section"``: one unit per heading (`parse_html_sections`); ``"page"``: one per file (`merge_page`).
        skip_tags: elements left out with everything inside them.
        skip_classes: CSS classes whose elements are left out.
        clean_title: applied to every heading text.

    Returns:
        Units by id, files in sorted order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: pass the folder that holds the HTML files of one language.")
    units: dict[str, Section] = {}
    for path in sorted(root.rglob("*.html")):
        pid = page_id(path.relative_to(root).as_posix())
        text = path.read_text(encoding="utf-8", errors="replace")
        sections = parse_html_sections(
            text, pid, skip_tags=skip_tags, skip_classes=skip_classes, clean_title=clean_title
        )
        for section in [merge_page(pid, sections)] if unit == "page" else sections:
            if section.id in units:
                raise ValueError(f"Two units of {root} have the id {section.id!r}: fix the `page_id` function.")
            units[section.id] = section
    return units
