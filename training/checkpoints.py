"""Checkpoints that verify themselves: `checkpoint-<step>` folders written by `accelerate`, each complete only with a
manifest of its files (size and SHA-256), written last.

A crash mid-write leaves a `tmp-` folder (never taken for a checkpoint); a checkpoint damaged afterwards (a node
that died mid-copy, a flipped byte) fails `verify_checkpoint`, and `--resume` falls back to the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST = "checkpoint_manifest.json"
LEGACY_MARKER = "CHECKPOINT_COMPLETE"
"""What marked a complete checkpoint before manifests (2026-12-07): such a checkpoint is complete but unverified."""
DAMAGED_DIR = "checkpoints-damaged"
"""Beside `checkpoints/`: where a damaged checkpoint is moved, kept for inspection and never deleted."""


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Checkpoints with a manifest (written last), oldest first. Whether their files match it: `verify_checkpoint`."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if match and ((path / MANIFEST).is_file() or (path / LEGACY_MARKER).is_file()):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> None:
    """List every file of `folder` with its size and SHA-256 in `MANIFEST`, written beside and renamed: last."""
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    scratch = folder / f"{MANIFEST}.partial"
    scratch.write_text(json.dumps({"step": step, "time": time.time(), "files": files}, indent=1))
    os.replace(scratch, folder / MANIFEST)


def verify_checkpoint(folder: Path) -> str | None:
    """None if every file the manifest lists is there with its size and checksum; else what is wrong, in words."""
    if not (folder / MANIFEST).is_file() and (folder / LEGACY_MARKER).is_file():
        logger.warning("%s predates checkpoint manifests: it is used without being verified.", folder)
        return None
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its manifest cannot be read ({type(error).__name__})"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, the manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def newest_intact_checkpoint(checkpoint_dir: Path) -> tuple[Path, dict[Path, str]]:
    """The newest checkpoint whose files match its manifest, and the damaged ones newer than it (with what is wrong).

    Raises:
        ValueError: no checkpoint is intact (one line, naming each damaged one).
    """
    damaged: dict[Path, str] = {}
    for path in reversed(complete_checkpoints(checkpoint_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path, damaged
        damaged[path] = problem
    names = "; ".join(f"{path.name}: {problem}" for path, problem in damaged.items()) or "none found"
    raise ValueError(
        f"--resume: no intact checkpoint under {checkpoint_dir} ({names}); start a new run in another --output_dir."
    )


def set_damaged_aside(path: Path, problem: str) -> Path:
    """Move a damaged checkpoint into `checkpoints-damaged/` beside `checkpoints/`, where nothing deletes it; say so
    in one line."""
    target = path.parent.parent / DAMAGED_DIR / f"{path.name}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    logger.warning("Checkpoint %s is damaged (%s): moved to %s, resuming from the one before.", path, problem, target)
    return target


def save_checkpoint(
    accelerator: Accelerator, checkpoint_dir: Path, step: int, keep: int, protect: int | None = None
) -> Path:
    """Write `checkpoint-<step>` atomically: into a temporary folder, its manifest last, then one rename.

    The oldest checkpoints beyond `keep` are then removed, except that of step `protect` (the best one) and the one
    just written: the newest intact checkpoint is never deleted.
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
        write_manifest(scratch, step)
        replaced = checkpoint_dir / f"old-{CHECKPOINT_PREFIX}{step}"
        if final.exists():  # a checkpoint of this step from an earlier attempt: the new one replaces it
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(final, replaced)
        os.replace(scratch, final)
        shutil.rmtree(replaced, ignore_errors=True)
        protected = checkpoint_dir / f"{CHECKPOINT_PREFIX}{protect}"
        older = [path for path in complete_checkpoints(checkpoint_dir) if path not in (protected, final)]
        for old in older[: max(0, len(older) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
