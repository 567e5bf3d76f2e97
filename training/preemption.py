"""Stopping on SIGTERM or SIGINT without losing the run: the trainer finishes the current optimizer step, writes a
checkpoint and exits (143 for SIGTERM, 130 for SIGINT), as schedulers (SLURM, Kubernetes, spot instances) expect.

A second signal aborts at once. A signal that arrives during a dev evaluation is held until the evaluation ends. In a
multi-process run the flag is combined across processes at each step boundary, so that a signal that reaches one
process stops all of them at the same step (a process that left alone would hang the others in the next collective).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; `exit_code` is 128 + the signal's number."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """A context in which SIGTERM and SIGINT set a flag instead of killing the process (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # the second signal: abort now, as the default handler would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        logger.warning(
            "%s received: stopping after this step with a checkpoint (send it again to abort at once).",
            signal.Signals(signum).name,
        )

    def stop_now(self, accelerator: Accelerator) -> int | None:
        """The signal that stops every process at this step boundary, or None: the flag combined across processes
        (a collective: every process must call this at the same step)."""
        if accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([self.received or 0], device=accelerator.device)
        received = int(accelerator.reduce(flag, "max").item())
        return received or None
