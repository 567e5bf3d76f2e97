"""`train.log` in the output folder: every log line of a run, the per-language dev scores the console leaves out
included. Records are held until the run is set up (`open_run_log`), so that a run refused in its checks leaves no
file behind: an existing output folder stays exactly as it was."""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from . import cli

LOG_FILE = "train.log"


class RunLogHandler(logging.Handler):
    """Holds records until `open` names the output folder, then writes them, and every later one, to its log."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter(cli.LOG_FORMAT))
        self.pending: list[logging.LogRecord] = []
        self.stream: TextIO | None = None

    def open(self, output_dir: Path) -> None:
        self.stream = (output_dir / LOG_FILE).open("a", encoding="utf-8")
        for record in self.pending:
            self.stream.write(self.format(record) + "\n")
        self.pending.clear()
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            self.pending.append(record)
            return
        self.stream.write(self.format(record) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        super().close()


@contextlib.contextmanager
def run_log() -> Iterator[None]:
    """Collect the run's log records on the main process; `open_run_log` starts writing them."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    handler = RunLogHandler()
    logging.getLogger().addHandler(handler)
    try:
        yield
    except BaseException:
        if handler.stream is not None:  # the console gets one line; the log keeps the traceback
            handler.stream.write(traceback.format_exc())
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def open_run_log(output_dir: Path) -> None:
    """Once the run is set up: write the held records and every later one to `output_dir/train.log`."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RunLogHandler) and handler.stream is None:
            handler.open(output_dir)
