"""What a run carries: its progress (`TrainingState`, saved in every checkpoint), everything fixed once it is set up
(`Run`, one object handed to every helper of the loop) and the log window of the losses since the last log line."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from modeling_automlm import AutoMLMForPreTraining, AutoMLMForPreTrainingOutput, AutoMLMModel
from modeling_automlm import modeling_automlm as modeling

from .arguments import DataArguments, ModelArguments, PretrainingArguments, settings_dict
from .head import HeadProbe

logger = logging.getLogger(__name__)

RandomState = tuple[torch.Tensor, list[torch.Tensor] | None]  # the CPU generator's state and the GPUs'


def logged_keys() -> tuple[str, ...]:
    """The model's outputs the loop logs: the joint loss, then each term's loss and accuracy (`LOSS_TERMS`)."""
    return ("loss", *(key for term in modeling.LOSS_TERMS for key in term.keys))


@dataclass
class TrainingState:
    """The progress of a run: what a checkpoint stores beyond model, optimizer, scheduler and RNG states."""

    step: int = 0
    nonfinite_steps: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def record(self, values: dict[str, Any]) -> None:
        """Add `values` to the history entry of the current step."""
        if self.history and self.history[-1]["step"] == self.step:
            self.history[-1].update(values)
        else:
            self.history.append({"step": self.step, **values})

    def skip_nonfinite_step(self, limit: int) -> None:
        """Count a step whose update is skipped for a non-finite loss; stop the run past `limit` such steps."""
        self.nonfinite_steps += 1
        logger.warning("Non-finite loss at step %d: update skipped", self.step + 1)
        if self.nonfinite_steps > limit:
            raise RuntimeError(
                f"{self.nonfinite_steps} steps had a non-finite loss (limit --max_nonfinite_steps={limit}): lower "
                "--learning_rate, raise --warmup_ratio, or use fp32 (--mixed_precision no)."
            )


@dataclass
class Run:
    """A run once set up: its settings, the accelerator and what it prepared, the data, and its progress.

    `model` is the prepared (possibly wrapped) model the loop steps; `unwrapped` is what is evaluated and exported.
    """

    model_args: ModelArguments
    data_args: DataArguments
    args: PretrainingArguments
    accelerator: Accelerator
    model: torch.nn.Module
    unwrapped: AutoMLMForPreTraining
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DataLoader
    max_steps: int
    data_stats: dict[str, Any]
    backbone: str  # where the backbone was loaded from (`--backbone` resolved once, see `training.model`)
    state: TrainingState = field(default_factory=TrainingState)
    probe: HeadProbe | None = None  # held-out sentences the Auto-MLM head is measured on at each dev evaluation
    anchor: AutoMLMModel | None = None  # the frozen starting encoder of `anchor_weight`
    resumed_rng: RandomState | None = None  # the random state of the checkpoint this run resumed from

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        return settings_dict(self.model_args, self.data_args, self.args)

    @property
    def global_batch(self) -> int:
        """Sentences per optimizer step, over every process and accumulated micro-batch."""
        args = self.args
        return args.per_device_train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps

    @property
    def evaluates(self) -> bool:
        """Whether the run evaluates on dev data (and chooses its export by it)."""
        return bool(self.args.eval_steps and self.data_args.dev_data)


@dataclass
class LogWindow:
    """The losses and token counts of the micro-batches since the last log line."""

    global_batch: int
    accumulation: int
    values: dict[str, list[float]] = field(default_factory=dict)
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, outputs: AutoMLMForPreTrainingOutput | None, tokens: int, **extra: torch.Tensor | None) -> None:
        """One micro-batch: its outputs (None when its loss was not finite), its tokens over every process, and
        terms the loop adds to the model's loss (`anchor_loss`)."""
        self.tokens += tokens
        if outputs is None:
            return
        values = {key: getattr(outputs, key, None) for key in logged_keys()} | extra
        for key, value in values.items():
            if value is not None:
                self.values.setdefault(key, []).append(value.detach().float().item())

    def summary(self, learning_rate: float, steps_left: int) -> dict[str, float]:
        """Mean losses, the learning rate, the throughput and the time left at this pace."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        steps = len(self.values.get("loss", [])) / self.accumulation or 1
        summary = {key: sum(values) / len(values) for key, values in self.values.items()}
        summary["learning_rate"] = learning_rate
        summary["sentences_per_s"] = steps * self.global_batch / elapsed
        summary["tokens_per_s"] = self.tokens / elapsed
        summary["eta_s"] = steps_left * elapsed / max(steps, 1)
        return summary
