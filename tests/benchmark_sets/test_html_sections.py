from pathlib import Path

from benchmark_sets.debian_reference import DEBIAN_REFERENCE, strip_section_number
from benchmark_sets.html_sections import parse_html_folder, parse_html_sections

HTML_DOCS = Path(__file__).parents[1] / "fixtures" / "html_docs"


def test_html_sections_follow_headings_and_skip_navigation():
    html = (HTML_DOCS / "en" / "ch01.en.html").read_text(encoding="utf-8")
    sections = parse_html_sections(
        html, "ch01", skip_classes=DEBIAN_REFERENCE.skip_classes, clean_title=strip_section_number
    )
    assert [(s.id, s.title, s.level) for s in sections] == [
        ("ch01#_tutorials", "Chapter 1. Tutorials", 1),
        ("ch01#_the_shell_prompt", "The shell prompt", 2),
        ("ch01#_the_root_account", "The root account", 3),
        ("ch01#_virtual_consoles", "Virtual consoles", 2),
        ("ch01#_short", "Short", 2),
    ]
    by_id = {s.id: s for s in sections}
    # A parent section holds its own text only, not its subsections'; blocks and <br/> separate words.
    assert by_id["ch01#_the_shell_prompt"].paragraphs == [
        "After login the shell prompt shows your user name and the host name of the machine.",
        "Type a command and press Enter to run it.",
        "The output follows.",
    ]
    assert by_id["ch01#_tutorials"].text == (
        "This chapter teaches the basics of the command line to new users of the system."
    )
    text = " ".join(s.text for s in sections)
    for leak in ("script text", "Table of Contents", "1.1. The shell prompt", "footnote", "Chapter 2"):
        assert leak not in text


def test_html_anchor_fallbacks_and_text_before_the_first_heading():
    html = """<html><body><p>Intro &amp; more</p>
    <h1 id="top">Page title</h1><p>First <b>bold</b> words</p>
    <h2><a name="named"></a>Named</h2><ul><li>one</li><li>two</li></ul>
    <h2>No anchor</h2><p>text</p>
    <h2 id="top">Reused anchor</h2><p>again</p></body></html>"""
    sections = parse_html_sections(html, "page")
    assert [(s.id, s.title, s.paragraphs) for s in sections] == [
        ("page#", "", ["Intro & more"]),
        ("page#top", "Page title", ["First bold words"]),
        ("page#named", "Named", ["one", "two"]),
        ("page#h3", "No anchor", ["text"]),
        ("page#top~4", "Reused anchor", ["again"]),
    ]
    page = parse_html_folder(HTML_DOCS / "en", lambda relative: relative.split(".")[0], unit="page")
    assert list(page) == ["ch01"]
    assert page["ch01"].title == "Chapter 1. Tutorials"
    assert "1.1. The shell prompt" in page["ch01"].paragraphs  # later headings are part of the page's text
