"""The frame every ``automlm-*`` console script runs in: one logging set-up, one error contract, one argument parser.

- Logging: INFO lines ``time level logger: message`` on stderr; chatty libraries at WARNING.
- Exit codes: 0 done; 1 a problem with the input, reported as ONE line ``automlm-xxx: <the problem and the fix>``
  on stderr, no traceback; 2 bad usage, argparse's own message.
- Options: every multi-word option takes both spellings (``--repo-id`` and ``--repo_id``); ``--help`` shows one
  and ends with a working example.

Usage::

    from training import cli

    PROG = "automlm-push"

    def build_parser() -> cli.ArgumentParser:
        parser = cli.ArgumentParser(prog=PROG, description="...", example=f"{PROG} outputs/x/final --repo-id you/x")
        parser.add_argument("folder", type=Path)
        parser.add_argument("--repo-id", required=True)  # --repo_id works too
        return parser

    @cli.entry_point(PROG)
    def main(argv: list[str] | None = None) -> None:
        args = build_parser().parse_args(argv)
        ...  # raise ValueError / FileNotFoundError with a message that names the problem and the fix

Only the standard library and PyYAML are imported here, so a script's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY_LOGGERS = ("httpx", "urllib3", "filelock", "accelerate", "sentence_transformers")
# A problem with the input (the messages of `ValueError`s raised by this project name the fix). `json.JSONDecodeError`
# and `UnicodeDecodeError` are `ValueError`s. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    yaml.YAMLError,
)
# The fix for an error raised by the operating system, which names only the path and the problem.
_OS_ERROR_FIXES: dict[type[OSError], str] = {
    FileNotFoundError: "check the path",
    FileExistsError: "remove it or choose another path",
    NotADirectoryError: "a folder is expected there, not a file",
    IsADirectoryError: "a file is expected there, not a folder",
    PermissionError: "check its permissions, or choose a path you can read and write",
}


class UserError(Exception):
    """A failure the user can act on whose message is already complete, e.g. a Hub refusal: reported as it is."""


DETAIL_LOGGERS = ("evaluation.evaluate", "training.progress")
"""Loggers whose INFO lines are details: the dev evaluation's line per language, the trainer's per logging step."""


class HideDetails(logging.Filter):
    """Keep the INFO lines of `DETAIL_LOGGERS` off the console (the run's log file keeps them); warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in DETAIL_LOGGERS or record.levelno > logging.INFO


def setup_logging(*, hide_details: bool = False) -> None:
    """The console logging of every script: INFO on stderr, with time, level and logger; noisy libraries at WARNING.

    Where logging is already set up (an application, or pytest, that imports a script's `main`), its handlers are left
    as they are: the console handler and its filter are only ever this function's own.

    Args:
        hide_details: drop the INFO lines of `DETAIL_LOGGERS` from that console handler (``automlm-train`` prints one
            line per dev evaluation of its own; its log file keeps everything).
    """
    root = logging.getLogger()
    if not root.handlers:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        if hide_details:
            console.addFilter(HideDetails())
        root.addHandler(console)
        root.setLevel(logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe(error: BaseException) -> str:
    """`error` as one line: an operating-system error as ``<path>: <problem>; <fix>``, anything else its message."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        fix = next((text for kind, text in _OS_ERROR_FIXES.items() if isinstance(error, kind)), "")
        message = f"{error.filename}: {error.strerror.lower()}" + (f"; {fix}." if fix else ".")
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def run(
    main: Callable[[Sequence[str] | None], Any],
    prog: str,
    argv: Sequence[str] | None = None,
    *,
    user_errors: tuple[type[BaseException], ...] = (),
    hide_details: bool = False,
) -> int:
    """Run one console script: set up logging, call ``main(argv)``, and turn a user error into one line and exit 1.

    Args:
        main: the script's body; it parses `argv` itself (None: ``sys.argv[1:]``).
        prog: the command's name, the first word of the error line.
        argv: the arguments.
        user_errors: exception types that are user errors for this script besides `USER_ERRORS` and `UserError`
            (e.g. `ImportError` where a missing extra is named with its ``pip install``).
        hide_details: see `setup_logging`.

    Returns:
        0 when `main` returns None (so ``sys.exit(run(...))`` exits 0), else what `main` returned.

    Raises:
        SystemExit: 1 after writing ``<prog>: <message>`` on stderr; argparse's own exits (2 for bad usage,
            0 for ``--help``) pass through.
    """
    setup_logging(hide_details=hide_details)
    try:
        result = main(argv)
    except (UserError, *USER_ERRORS, *user_errors) as error:
        print(f"{prog}: {describe(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0 if result is None else result


def entry_point(
    prog: str, *, user_errors: tuple[type[BaseException], ...] = (), hide_details: bool = False
) -> Callable[[Callable[..., Any]], Callable[[Sequence[str] | None], int]]:
    """Decorate a script's ``main(argv=None)`` so that it runs through `run` (the console script calls it bare)."""

    def decorate(main: Callable[..., Any]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            return run(main, prog, argv, user_errors=user_errors, hide_details=hide_details)

        return wrapper

    return decorate


def other_spelling(option: str) -> str | None:
    """``--repo-id`` for ``--repo_id`` and the reverse; None for a one-word or short option."""
    if not option.startswith("--"):
        return None
    name = option[2:]
    other = name.replace("_", "-") if "_" in name else name.replace("-", "_")
    return None if other == name else f"--{other}"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps the description's paragraphs but keeps indented lines (the example) as written, and shows one spelling
    of each option.

    Any parser whose options carry both spellings can use it (`transformers.HfArgumentParser` registers both for
    dataclass fields); combine it with `argparse.ArgumentDefaultsHelpFormatter` to show the defaults as well.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        paragraph: list[str] = []
        for line in [*text.splitlines(), ""]:
            if line.strip() and not line[0].isspace():
                paragraph.append(line)
                continue
            if paragraph:
                lines.append(super()._fill_text(" ".join(paragraph), width, indent))
                paragraph = []
            lines.append(indent + line)
        return "\n".join(lines[:-1])

    def _format_action_invocation(self, action: argparse.Action) -> str:
        options = action.option_strings
        shown = [option for i, option in enumerate(options) if other_spelling(option) not in options[:i]]
        if len(shown) < len(options):
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that accepts both spellings of every multi-word option and ends ``--help`` with
    an example.

    The spelling an option is added with is the one ``--help`` shows; the other (dashes for underscores or the
    reverse) is registered as an alias. Abbreviated options are off: with two spellings per option they would be
    ambiguous, and a prefix that works today would break when an option is added.

    Args:
        example: one complete, working command line, printed last by ``--help``.
        *args, **kwargs: as for `argparse.ArgumentParser` (``formatter_class`` defaults to `HelpFormatter`).
    """

    def __init__(self, *args: Any, example: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        if example is not None:
            epilog = kwargs.get("epilog")
            kwargs["epilog"] = (f"{epilog}\n\n" if epilog else "") + f"Example:\n  {example}"
        super().__init__(*args, **kwargs)
        self.example = example

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        aliases = [other for name in names if (other := other_spelling(name)) and other not in names]
        return super().add_argument(*names, *aliases, **kwargs)


def existing_file(path: Path, what: str) -> Path:
    """`path` if it is a file; else a `FileNotFoundError` / `IsADirectoryError` naming `what` it should be."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: {what} must be a file.")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {what} must be an existing file.")
    return path


def output_file(path: Path, what: str) -> Path:
    """`path` unless it is a folder (checked before any work, so a long run does not fail at its last step)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: {what} is the path of a file to write; name a file.")
    return path


def output_folder(path: Path, what: str) -> Path:
    """`path` unless it is a file (checked before any work, so a long run does not fail at its last step)."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file: {what} is a folder to write into; choose another path.")
    return path


def existing_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder; else a `FileNotFoundError` / `NotADirectoryError` naming `what` it should be."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file: {what} must be a folder.")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: {what} must be an existing folder.")
    return path
