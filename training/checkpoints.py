"""Checkpoints that a crash cannot leave half-written: `checkpoint-<step>` folders written by `accelerate`."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from accelerate import Accelerator

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints (with the marker written last), oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def save_checkpoint(
    accelerator: Accelerator, checkpoint_dir: Path, step: int, keep: int, protect: int | None = None
) -> Path:
    """Write `checkpoint-<step>` atomically: into a temporary folder, marker last, then one rename.

    A crash mid-write leaves only a `tmp-` folder, which is never taken for a checkpoint (and is removed by the next
    save). The oldest complete checkpoints beyond `keep` are removed, except that of step `protect` (the best one).
    """
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{step}"
    scratch = checkpoint_dir / f"tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        for stale in checkpoint_dir.glob(f"tmp-{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(scratch))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (scratch / COMPLETE_MARKER).write_text(json.dumps({"step": step, "time": time.time()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
        protected = checkpoint_dir / f"{CHECKPOINT_PREFIX}{protect}"
        existing = [path for path in complete_checkpoints(checkpoint_dir) if path != protected]
        for old in existing[: max(0, len(existing) - keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
