"""The micro-batches of a run, resumable: a resumed run sees exactly the batches, masks and dropout an uninterrupted
run would have seen from its step on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .state import RandomState


def micro_batches(
    loader: DataLoader, accelerator: Accelerator, start: int, streaming: bool, rng: RandomState | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Every micro-batch from number `start` of the run on, epoch after epoch, without end.

    The seedable sampler orders an epoch by the seed and the epoch number alone, so a resumed run skips the
    micro-batches it saw (`skip_first_batches` loads none of them) and goes on with exactly those an uninterrupted
    run would see. A streamed dataset has no length: it is replayed from its start, skipping `start` micro-batches.
    `rng` is the random state of the checkpoint a run resumes from (see `_restore_rng_after_start`).
    """
    epoch, skip = (0, start) if streaming else divmod(start, len(loader))
    while True:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        if rng is not None:
            # Mid-epoch, the uninterrupted run started this epoch's iterator before the checkpoint: that draw is
            # undone. At an epoch's first batch it started it after the checkpoint, as this run does: it is kept.
            batches, rng = (_restore_rng_after_start(batches, rng) if skip else batches), None
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty and not skip:
            raise ValueError("The training data holds no full batch: lower --per_device_train_batch_size.")
        epoch, skip = epoch + 1, 0


def rng_state() -> RandomState:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _restore_rng_after_start(
    batches: Iterable[dict[str, torch.Tensor]], rng: RandomState
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield from `batches`, putting back the checkpoint's RNG state once the iterator has started.

    Starting a DataLoader iterator draws a seed from the global RNG. An uninterrupted run did that at the start of
    the epoch, not at the step it was checkpointed, so the resumed run must not keep that draw: masks and dropout
    then replay exactly.
    """
    iterator = iter(batches)
    first = next(iterator, None)
    torch.set_rng_state(rng[0])
    if rng[1] is not None:
        torch.cuda.set_rng_state_all(rng[1])
    if first is not None:
        yield first
        yield from iterator
