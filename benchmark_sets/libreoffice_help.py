"""``libreoffice-help``: page title -> page text over the LibreOffice offline help and its translations."""

from __future__ import annotations

from .translated_docs import DocSource

# Every libreoffice-help-* package of Debian 12 but en-gb (a second English).
_LIBREOFFICE_LANGUAGES = (
    "en", "ca", "cs", "da", "de", "dz", "el", "es", "et", "eu", "fi", "fr", "gl", "hi", "hu", "id", "it", "ja", "km",
    "ko", "nl", "om", "pl", "pt", "pt-BR", "ru", "sk", "sl", "sv", "tr", "vi", "zh-Hans", "zh-Hant",
)  # fmt: skip
_LIBREOFFICE_PACKAGE_SUFFIX = {"en": "en-us", "pt-BR": "pt-br", "zh-Hans": "zh-cn", "zh-Hant": "zh-tw"}

LIBREOFFICE_HELP = DocSource(
    name="libreoffice-help",
    description=(
        "The LibreOffice 7.4 offline help in Debian 12, translated by the LibreOffice localisation teams. Unit: a "
        "help page (query: its first heading; document: the rest of the page). Untranslated strings of a partial "
        "translation are shown in English, and pages left entirely in English are dropped from that language."
    ),
    packages={
        code: f"libreoffice-help-{_LIBREOFFICE_PACKAGE_SUFFIX.get(code, code)}" for code in _LIBREOFFICE_LANGUAGES
    },
    html_glob="usr/share/libreoffice/help/*/text",  # help/<lang>/text; help/media holds images
    page_id=lambda relative: relative.removesuffix(".html"),  # shared/guide/active_help_on_off
    unit="page",
    skip_classes=frozenset({"relatedtopics", "debug"}),
    clean_title=str.strip,
    eval_fraction=0.2,
)
