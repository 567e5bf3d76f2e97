"""Stopping on SIGTERM or SIGINT without losing the run: the trainer finishes the current optimizer step, writes a
checkpoint and exits (143 for SIGTERM, 130 for SIGINT), as schedulers (SLURM, Kubernetes, spot instances) expect.

A second signal aborts at once. A signal that arrives during a dev evaluation is held until the evaluation ends. In a
multi-process run the flag is combined across processes at each step boundary, so that a signal that reaches one
process stops all of them at the same step (a process that left alone would hang the others in the next collective).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType

import torch
from accelerate import Accelerator

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
        # Not through `logging`: a handler that writes to a stream the interrupted code was writing to can fail
        # ("reentrant call"); one unbuffered write cannot.
        name = signal.Signals(signum).name
        with contextlib.suppress(OSError):
            os.write(2, f"{name} received: stopping after this step with a checkpoint (again: abort now).\n".encode())

    def stop_now(self, accelerator: Accelerator, *, out_of_time: bool = False) -> tuple[int | None, bool]:
        """`(signal, out_of_time)` as every process must act on them at this step boundary: the signal any process
        received (None if none) and whether any process ran out of `max_time_s` (each reads its own clock). A
        collective: every process calls this at every step."""
        if accelerator.num_processes == 1:
            return self.received, out_of_time
        flags = torch.tensor([[self.received or 0, int(out_of_time)]], device=accelerator.device)
        # A gather, not `reduce(..., "max")`: that reduction only exists in recent accelerate releases.
        combined = accelerator.gather(flags).max(dim=0).values.tolist()
        return (int(combined[0]) or None), bool(combined[1])
