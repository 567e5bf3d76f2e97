"""The YAML dialogues of the `chatterbot-corpus` package (BSD-3-Clause): turns, (turn, next turn) pairs, languages.

Read by the trainer (every utterance is embedded training text) and by the ``chatterbot-qa`` benchmark builder
(the pairs become question -> answer retrieval).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import normalize_text

logger = logging.getLogger(__name__)

# Folder names of chatterbot-corpus 1.3.3 -> ISO 639-1 codes, with a BCP 47 script subtag where one language has two
# scripts (Chinese) and for Hinglish (Hindi written in Latin script, which has no code of its own).
CHATTERBOT_LANGUAGE_CODES = {
    "arabic": "ar",
    "bengali": "bn",
    "catalan": "ca",
    "chinese": "zh-Hans",
    "dutch": "nl",
    "english": "en",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hindi": "hi",
    "hinglish": "hi-Latn",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "marathi": "mr",
    "oriya": "or",
    "persian": "fa",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "tamil": "ta",
    "telugu": "te",
    "thai": "th",
    "traditionalchinese": "zh-Hant",
    "turkish": "tr",
    "ukrainian": "uk",
    "urdu": "ur",
    "yoruba": "yo",
}


@dataclass
class DialogueData:
    """What one language folder of chatterbot-corpus holds.

    Attributes:
        pairs: (turn, next turn) pairs in file order, duplicates included.
        utterances: every usable turn in file order, duplicates included (also turns that could not be paired).
        skipped: number of entries that were neither a text turn nor a list of turns.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    utterances: list[str] = field(default_factory=list)
    skipped: int = 0


def chatterbot_data_dir() -> Path:
    """The ``data`` folder of the installed `chatterbot-corpus` package.

    Raises:
        FileNotFoundError: when the package is not installed.
    """
    try:
        import chatterbot_corpus
    except ImportError as err:
        raise FileNotFoundError(
            "The chatterbot-corpus package is not installed: `pip install chatterbot-corpus==1.3.3` "
            "(or `pip install -e .[demo]`)."
        ) from err
    return Path(chatterbot_corpus.__file__).parent / "data"


def chatterbot_languages(data_dir: str | Path | None = None) -> dict[str, Path]:
    """The language folders of the corpus by language code (the folder name where no code is known), sorted by folder.

    Args:
        data_dir: the corpus' ``data`` folder; defaults to the installed package's.

    Raises:
        FileNotFoundError: when `data_dir` is not a folder or the package is not installed.
        ValueError: when two folders map to the same code.
    """
    data_dir = Path(data_dir) if data_dir is not None else chatterbot_data_dir()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a folder: pass the `data` folder of chatterbot-corpus.")
    languages: dict[str, Path] = {}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        code = CHATTERBOT_LANGUAGE_CODES.get(folder.name)
        if code is None:
            code = folder.name
            logger.warning("No language code known for chatterbot folder %r: using the folder name", folder.name)
        if code in languages:
            raise ValueError(
                f"Two chatterbot folders map to the language code {code!r}; fix CHATTERBOT_LANGUAGE_CODES."
            )
        languages[code] = folder
    return languages


def _turn_text(turn: object) -> str | None:
    """The text of one turn, or None when the entry is not a usable text turn.

    YAML reads unquoted numbers as int/float (their text is faithful) but ``yes``/``no``/``on`` as booleans and an
    empty entry as None (their text is lost), so only strings and numbers are kept.
    """
    if isinstance(turn, bool) or turn is None:
        return None
    if isinstance(turn, str | int | float):
        return normalize_text(str(turn)) or None
    return None


def _read_conversation(conversation: list, data: DialogueData) -> None:
    previous: str | None = None
    for turn in conversation:
        if isinstance(turn, list):
            # A nested list is a conversation of its own: pair inside it, and break the chain around it.
            _read_conversation(turn, data)
            previous = None
            continue
        text = _turn_text(turn)
        if text is None:
            data.skipped += 1
            previous = None
            continue
        data.utterances.append(text)
        if previous is not None:
            data.pairs.append((previous, text))
        previous = text


def read_chatterbot_language(folder: str | Path) -> DialogueData:
    """Read the ``conversations`` of every ``*.yml`` file of one chatterbot-corpus language folder.

    Consecutive turns make a (question, answer) pair. Odd entries are handled rather than trusted: a conversation
    that is a single string (a mis-indented YAML list, e.g. ``"Q? - A."``) is kept as an utterance but not split,
    since " - " is also ordinary punctuation; nested lists are read as conversations of their own; non-text turns
    (booleans, None, mappings) are skipped and break the chain of pairs; a file that is not valid YAML is skipped
    with a warning.

    Args:
        folder: e.g. ``chatterbot_corpus/data/english``.

    Returns:
        The pairs and utterances, in sorted-file order.
    """
    data = DialogueData()
    for path in sorted(Path(folder).glob("*.yml")):
        try:
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            logger.warning("Skipping %s: not valid YAML (%s)", path, err)
            continue
        conversations = content.get("conversations") if isinstance(content, dict) else None
        if not isinstance(conversations, list):
            logger.warning("Skipping %s: no `conversations:` list", path)
            continue
        for conversation in conversations:
            if isinstance(conversation, list):
                _read_conversation(conversation, data)
            elif (text := _turn_text(conversation)) is not None:
                data.utterances.append(text)
            else:
                data.skipped += 1
    if data.skipped:
        logger.info("%s: skipped %d entries that are not text turns", folder, data.skipped)
    return data


# The held-out split shared by the benchmark builder (`benchmark_sets.chatterbot`) and the trainer's embedded
# corpus, so that a model trained on the embedded default never sees an evaluation query or document.
EVAL_FRACTION = 0.6  # of the questions; the dialogues are short, so the test split needs most of them
DEV_SHARE = 1 / 3  # of the held-out questions


def question_split(question: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """``"train"``, ``"dev"`` or ``"test"`` for a question, by a stable hash of its text."""
    position = int(hashlib.sha256(question.encode("utf-8")).hexdigest()[:12], 16) / 16**12  # uniform in [0, 1)
    if position >= eval_fraction:
        return "train"
    return "dev" if position < eval_fraction * DEV_SHARE else "test"


def held_out_texts(data: DialogueData, eval_fraction: float = EVAL_FRACTION) -> set[str]:
    """Every question and answer of the held-out (dev and test) pairs of `data`."""
    return {text for pair in data.pairs if question_split(pair[0], eval_fraction) != "train" for text in pair}
