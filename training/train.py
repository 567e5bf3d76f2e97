"""`automlm-train`: self-supervised Auto-MLM pretraining with accelerate, from unlabelled text to a Hub-ready folder.

Run ``automlm-train`` (the embedded default), ``automlm-train --config configs/X.yaml [--field value ...]``, or
``accelerate launch -m training.train ...`` for several processes or GPUs.

`train` reads top to bottom: setup, then one loop over micro-batches (the step, logging, evaluation,
checkpointing), then the export. The loop's progress lives in `TrainingState` (saved in every checkpoint); what
stays fixed once the run is set up is handed to the helpers as one `Run`.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from model_card import generate_model_card
from model_card.card import HEAD_PROBE_KEYS, HEAD_SOURCE_FILE
from modeling_automlm import AutoMLMForPreTraining, AutoMLMForPreTrainingOutput, AutoMLMModel

from .arguments import EMBEDDED_CORPUS, DataArguments, ModelArguments, PretrainingArguments, parse_args, settings_dict
from .checkpoints import complete_checkpoints, save_checkpoint
from .data import (
    UNKNOWN_LANGUAGE,
    AutoMLMCollator,
    Corpus,
    SentenceDataset,
    StreamingSentences,
    balance_languages,
    embedded_dev_data,
    load_corpus,
)
from .export import export_plain, export_sentence_transformers, sentence_transformers_prompts
from .gradcache import grad_cache_step
from .gradients import term_gradient_norms
from .head import (
    HEAD_ACCURACY,
    HEAD_ACCURACY_OTHER,
    HEAD_VECTOR_SHARE,
    HeadProbe,
    HeadRecipe,
    pretrain_head,
    probe_head,
    probe_texts,
)
from .health import embedding_health
from .model import (
    BACKBONE_SOURCE_FILE,
    SCRATCH,
    backbone_source,
    build_model,
    fill_prompts_from_backbone,
    is_automlm_checkpoint,
)

logger = logging.getLogger(__name__)

STREAM_TOKENIZER_SAMPLE = 100_000  # streamed sentences a from-scratch tokenizer is trained on
LOSS_KEYS = ("loss", "cl_loss", "auto_mlm_loss", "mlm_loss", "auto_mlm_accuracy", "mlm_accuracy")
SUMMARY_KEYS = (*LOSS_KEYS, "anchor_loss")  # the model's terms and the one the loop adds (`anchor_weight`)
RandomState = tuple[torch.Tensor, list[torch.Tensor] | None]  # the CPU generator's state and the GPUs'


# ----------------------------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------------------------
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
    """What stays fixed once a run is set up, handed to the helpers of the loop as one object."""

    model_args: ModelArguments
    data_args: DataArguments
    args: PretrainingArguments
    accelerator: Accelerator
    model: AutoMLMForPreTraining  # unwrapped: what is evaluated and exported
    tokenizer: PreTrainedTokenizerBase
    data_stats: dict[str, Any]
    probe: HeadProbe | None = None  # held-out sentences the Auto-MLM head is measured on at each dev evaluation

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        return settings_dict(self.model_args, self.data_args, self.args)

    @property
    def global_batch(self) -> int:
        """Sentences per optimizer step, over every process and accumulated micro-batch."""
        args = self.args
        return args.per_device_train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps


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
        values = {key: getattr(outputs, key) for key in LOSS_KEYS} | extra
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


# ----------------------------------------------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------------------------------------------
def build_accelerator(args: PretrainingArguments) -> Accelerator:
    """The accelerator of a run: devices, precision, gradient accumulation, trackers, seedable data order."""
    log_with = None
    if args.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            logger.warning("TensorBoard is not installed (pip install tensorboard); logging to the console only.")
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
        # Exact resume: each epoch's order depends on the seed and the epoch only.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Heads unused under some objectives (and BERT's unused pooler) need this under DDP.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def check_checkpoints(checkpoint_dir: Path, *, resume: bool) -> None:
    """Refuse to resume without a checkpoint, and to start a new run over an old one."""
    if resume and not complete_checkpoints(checkpoint_dir):
        raise ValueError(f"--resume: no complete checkpoint under {checkpoint_dir}; run without --resume to start.")
    if not resume and complete_checkpoints(checkpoint_dir):
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints: pass --resume to continue that run, or choose another "
            "--output_dir (nothing was overwritten)."
        )


def check_contrastive_batch(model_args: ModelArguments, args: PretrainingArguments, num_processes: int) -> None:
    """Refuse a contrastive batch of one sentence: InfoNCE over a single pair has no negative, so the term is a
    constant and the run would train on the other terms alone without saying so."""
    gathered = num_processes if model_args.gather_across_processes else 1
    negatives_pool = args.per_device_train_batch_size * gathered
    if model_args.contrastive_weight > 0 and negatives_pool < 2:
        raise ValueError(
            f"The contrastive batch holds {negatives_pool} sentence (--per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x {gathered} process{'es' if gathered > 1 else ''}): InfoNCE has no "
            "negative and learns nothing; use a batch of at least 2 (32 or more is usual), or set "
            "--contrastive_weight 0."
        )


def check_room_for_a_checkpoint(output_dir: Path, model: torch.nn.Module, *, save: bool) -> None:
    """Before any step: the output folder (or the nearest folder above it that exists) must be writable and hold
    one checkpoint (weights and AdamW's two moments, plus one export of the weights), else one line says so."""
    folder = output_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--output_dir {output_dir}: {folder} is not writable; choose a folder you can write to.")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = weights * (4 if save else 1)  # a checkpoint: weights + 2 moments; the export: weights again
    free = shutil.disk_usage(folder).free
    logger.info("Output folder %s: %.2f GB free, about %.2f GB needed", output_dir, free / 1e9, needed / 1e9)
    if free < needed:
        raise ValueError(
            f"--output_dir {output_dir}: {free / 1e9:.2f} GB free, a checkpoint and an export need about "
            f"{needed / 1e9:.2f} GB; free some space or choose another --output_dir."
        )


def load_training_data(
    data_args: DataArguments, args: PretrainingArguments, num_processes: int
) -> tuple[Corpus, Dataset]:
    """The corpus (for a tokenizer from scratch and `data_stats.json`) and the dataset the loop reads.

    A streamed dataset is read once up to `STREAM_TOKENIZER_SAMPLE` sentences for the corpus; the loop streams it.
    """
    if not data_args.streaming:
        corpus = load_corpus(data_args)
        order = balance_languages(corpus, data_args.language_sampling_alpha, args.seed)
        if len(order) < args.per_device_train_batch_size * num_processes:
            raise ValueError(
                f"The corpus has {len(order)} sentences, fewer than one global batch "
                f"({args.per_device_train_batch_size} x {num_processes} processes): "
                "lower --per_device_train_batch_size."
            )
        return corpus, SentenceDataset([corpus.texts[i] for i in order])
    if not args.max_steps:
        raise ValueError("A streamed corpus has no known length: set --max_steps.")
    stream = StreamingSentences(data_args, args.seed)
    sample = [item["text"] for item in itertools.islice(stream, STREAM_TOKENIZER_SAMPLE)]
    if not sample:
        raise ValueError(f"The streamed dataset {data_args.dataset_name} yielded no text; check --text_column.")
    sources = [{"name": stream.name, "hub_id": stream.name}]
    return Corpus(texts=sample, languages=[UNKNOWN_LANGUAGE] * len(sample), sources=sources), stream


def build_optimizer(model: torch.nn.Module, args: PretrainingArguments) -> torch.optim.Optimizer:
    """AdamW, without weight decay on biases and normalisation weights.

    With `head_learning_rate`, the pre-training heads (every parameter outside the encoder `automlm.`, the tied output
    projection being the encoder's word embeddings) form their own groups at that rate; the scheduler scales every
    group alike.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm_or_bias = parameter.ndim < 2 or "norm" in name.lower()
        is_head = args.head_learning_rate is not None and not name.startswith("automlm.")
        groups.setdefault((is_head, is_norm_or_bias), []).append(parameter)
    param_groups = [
        {
            "params": params,
            "weight_decay": 0.0 if is_norm_or_bias else args.weight_decay,
            "lr": args.head_learning_rate if is_head else args.learning_rate,
        }
        for (is_head, is_norm_or_bias), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(
        param_groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def build_anchor(model: AutoMLMForPreTraining) -> AutoMLMModel:
    """A frozen copy of the encoder as it starts, for `anchor_weight`.

    Built from the freshly built model, before any step and before a checkpoint is loaded, so that a resumed run
    holds the encoder near the same starting point as an uninterrupted one. It is not saved: it is the backbone.
    """
    return copy.deepcopy(model.automlm).eval().requires_grad_(False)


def anchor_loss(anchor: AutoMLMModel, batch: dict[str, torch.Tensor], embeddings: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cosine` between each sentence's embedding and the starting encoder's embedding of it.

    A term that keeps the adapted space near the pretrained one (a control for the adaptation study: how much of a
    gain is only moving less, docs/RESULTS.md). `embeddings` are the first dropout view the model returned; the
    target has no dropout, so the term is above zero at step 0 (dropout noise: 0.011 on multilingual-e5-small) and
    also asks the encoder to be robust to dropout. Only the sentences are anchored, not explicit positives. It runs
    in the parameters' precision, outside autocast.
    """
    with torch.no_grad():
        target = anchor(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        ).sentence_embedding
    return (1.0 - F.cosine_similarity(embeddings.float(), target.float(), dim=-1)).mean()


def significant(record: dict[str, float], digits: int = 4) -> dict[str, float]:
    """The record's numbers to `digits` significant digits, for the log: rounding to decimal places would print a
    learning rate of 5e-6 as 0.0."""
    return {key: float(f"{value:.{digits}g}") for key, value in record.items()}


def export_untrained(
    model_args: ModelArguments,
    data_args: DataArguments,
    seed: int,
    tokenizer_dir: Path,
    output_dir: Path,
    *,
    train_tokenizer: bool,
) -> Path:
    """Export the model these settings would train, before any step: the floor a trained model has to beat.

    With `train_tokenizer`, a tokenizer from scratch is trained on the corpus (and saved in `tokenizer_dir`); else
    the one in `tokenizer_dir` (a finished run's) is reused, which gives the run's exact initial weights.
    """
    texts = load_corpus(data_args).texts if train_tokenizer and model_args.backbone == SCRATCH else []
    torch.manual_seed(seed)
    model, tokenizer = build_model(model_args, data_args, texts, tokenizer_dir, train_tokenizer=train_tokenizer)
    fill_prompts_from_backbone(model_args, data_args)
    prompts = sentence_transformers_prompts(data_args.query_prompt, data_args.document_prompt)
    return export_sentence_transformers(model.eval(), tokenizer, output_dir, data_args.max_seq_length, prompts=prompts)


def build_head_probe(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    args: PretrainingArguments,
    corpus: Corpus,
) -> HeadProbe | None:
    """The held-out sentences the Auto-MLM head is measured on: queries of the dev data that are not training text,
    masked as the model masks (content tokens only, every target the mask token). None without an Auto-MLM head or
    dev data."""
    if model.auto_mlm_head is None or not data_args.dev_data or not args.head_probe_sentences:
        return None
    texts = probe_texts(data_args.dev_data, args.head_probe_sentences, exclude=set(corpus.texts))
    if not texts:
        logger.warning("No dev query outside the training text: the Auto-MLM head is not probed.")
        return None
    return HeadProbe.build(
        texts,
        tokenizer,
        prefix=data_args.text_prefix,
        max_length=data_args.max_seq_length,
        mask_probability=model.config.mask_probability,
    )


# ----------------------------------------------------------------------------------------------------------------
# The data, resumable
# ----------------------------------------------------------------------------------------------------------------
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


def _rng_state() -> RandomState:
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


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
def train(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> dict[str, Any]:
    """Train and export; returns the run summary (also saved as `training_metrics.json` in the export)."""
    # --- Setup: accelerator, data, model, optimizer -------------------------------------------------------------
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    checkpoint_dir = Path(args.output_dir) / "checkpoints"
    check_checkpoints(checkpoint_dir, resume=args.resume)
    accelerator = build_accelerator(args)
    if data_args.dev_data == EMBEDDED_CORPUS:
        with accelerator.main_process_first():  # the main process builds it once; the others read it
            data_args.dev_data = str(embedded_dev_data())
    check_contrastive_batch(model_args, args, accelerator.num_processes)
    set_seed(args.seed)
    corpus, dataset = load_training_data(data_args, args, accelerator.num_processes)
    batch_size = args.per_device_train_batch_size
    with accelerator.main_process_first():
        # From scratch, the main process of a new run trains the tokenizer; the others and a resumed run read it.
        train_tokenizer = accelerator.is_main_process and not args.resume
        tokenizer_dir = Path(args.output_dir) / "tokenizer"
        model, tokenizer = build_model(
            model_args, data_args, corpus.texts, tokenizer_dir, train_tokenizer=train_tokenizer
        )
    if accelerator.is_main_process:
        check_room_for_a_checkpoint(Path(args.output_dir), model, save=bool(args.save_steps))
    anchor = build_anchor(model) if args.anchor_weight > 0 else None
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    fill_prompts_from_backbone(model_args, data_args)
    if args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    # The backbone's own pooler (BERT, XLM-R) is never used: Auto-MLM pools the token states itself. Frozen, it has
    # no optimizer state to miss: FSDP checkpoints only resume when every trainable parameter has some.
    if getattr(model.automlm.encoder, "pooler", None) is not None:
        model.automlm.encoder.pooler.requires_grad_(False)
    probe = build_head_probe(model, tokenizer, data_args, args, corpus)
    head_source = None
    # A resumed run has its head in the checkpoint; an Auto-MLM model continued from keeps its own trained head.
    continued = is_automlm_checkpoint(model_args.backbone)
    if args.head_pretraining_steps and model.auto_mlm_head is not None and not args.resume and not continued:
        if accelerator.distributed_type != DistributedType.FSDP:  # on the GPU, not the CPU (`prepare` moves it anyway)
            model.to(accelerator.device)
        with accelerator.main_process_first():  # the main process trains and caches it; the others read it
            head_source = pretrain_head(
                model,
                tokenizer,
                corpus.texts,
                prefix=data_args.text_prefix,
                max_length=data_args.max_seq_length,
                recipe=HeadRecipe(steps=args.head_pretraining_steps),
                probe=probe,
            )
    collator = AutoMLMCollator(
        tokenizer,
        max_length=data_args.max_seq_length,
        whole_word_masking=model.config.masking_scheme == "whole_word",
        views=data_args.contrastive_views,
        text_prefix=data_args.text_prefix,
        query_prompt=data_args.query_prompt,
        document_prompt=data_args.document_prompt,
        crop_ratio=(data_args.crop_min_ratio, data_args.crop_max_ratio),
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=not data_args.streaming, collate_fn=collator, drop_last=True
    )
    max_steps = args.max_steps
    if not max_steps:  # before `prepare`, `len(loader)` counts the whole data set; each process sees its share
        steps_per_epoch = max(1, len(loader) // accelerator.num_processes // args.gradient_accumulation_steps)
        max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    optimizer = build_optimizer(model, args)
    # The scheduler `prepare` returns steps the wrapped one `num_processes` times per optimizer step: accelerate
    # assumes a schedule counted in the batches of one process walking the whole data set. Ours is counted in
    # optimizer steps, so its lengths are scaled by the same factor.
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * max_steps) * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if anchor is not None:
        anchor.to(accelerator.device)
    run = Run(
        model_args, data_args, args, accelerator, accelerator.unwrap_model(model), tokenizer, corpus.stats(), probe
    )
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        (run.output_dir / "training_config.json").write_text(json.dumps(run.settings, indent=2))
        if head_source is not None:  # read back by the export, also after a resume
            (run.output_dir / HEAD_SOURCE_FILE).write_text(json.dumps(head_source, indent=2))
    if accelerator.log_with:
        accelerator.init_trackers("automlm", config=_scalar_settings(run.settings))

    resumed_rng = None
    if args.resume:
        latest = complete_checkpoints(checkpoint_dir)[-1]
        accelerator.load_state(str(latest))  # model, optimizer, scheduler, `state` and the random states
        # Kept aside: starting the data loader draws from the random state, which an uninterrupted run did at the
        # start of the epoch. `micro_batches` puts this state back once the loader has started.
        resumed_rng = _rng_state()
        logger.info("Resumed from %s at step %d", latest, state.step)
    logger.info(
        "Training %d steps, %d sentences per step (%d per device x %d processes x %d accumulation), %d parameters",
        max_steps, run.global_batch, batch_size, accelerator.num_processes, args.gradient_accumulation_steps,
        sum(p.numel() for p in run.model.parameters()),
    )  # fmt: skip

    # --- The loop: one micro-batch per iteration, an optimizer step every `gradient_accumulation_steps` --------
    progress = tqdm(total=max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="automlm")
    window = LogWindow(run.global_batch, args.gradient_accumulation_steps)
    clock_start = time.perf_counter() - state.train_seconds
    skip_update = False  # a micro-batch of the current step had a non-finite loss
    gradient_norms: dict[str, float] = {}  # `log_gradient_norms`: measured at the step a log line reports
    if args.eval_steps and data_args.dev_data and state.step == 0:
        evaluate(run, state)  # step 0: the untouched model is a candidate for the export too
    model.train()
    first = state.step * args.gradient_accumulation_steps
    batches = micro_batches(loader, accelerator, first, data_args.streaming, resumed_rng)
    for batch in batches if state.step < max_steps else []:
        # The step.
        with accelerator.accumulate(model):
            if args.gradient_cache_chunk_size:
                outputs = grad_cache_step(model, batch, args.gradient_cache_chunk_size)  # backward included
            else:
                outputs = model(**batch)
            anchor_value = None
            if anchor is not None:  # `anchor_weight`; not with GradCache (the arguments refuse the pair)
                anchor_value = anchor_loss(anchor, batch, outputs.sentence_embedding)
                outputs.loss = outputs.loss + args.anchor_weight * anchor_value
            if args.log_gradient_norms and (state.step + 1) % args.logging_steps == 0 and accelerator.sync_gradients:
                gradient_norms = term_gradient_norms(run.model, outputs)
            # Every process must take the same decision: DDP would otherwise wait for a gradient that never comes.
            finite = accelerator.gather(torch.isfinite(outputs.loss.detach()).float().reshape(1)).min().item() == 1
            if finite and not args.gradient_cache_chunk_size:
                accelerator.backward(outputs.loss)
            skip_update = skip_update or not finite
            if accelerator.sync_gradients:
                if skip_update:
                    state.skip_nonfinite_step(args.max_nonfinite_steps)
                else:
                    if state.step < args.head_warmup_steps:
                        freeze_encoder_gradients(run.model)
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        tokens = int(batch["attention_mask"].sum()) * accelerator.num_processes
        window.add(outputs if finite else None, tokens=tokens, anchor_loss=anchor_value)
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        skip_update = False
        progress.update(1)

        # Logging.
        if state.step % args.logging_steps == 0 or state.step == max_steps:
            record = window.summary(scheduler.get_last_lr()[0], steps_left=max_steps - state.step)
            record.update(embedding_health(outputs.sentence_embedding, outputs.positive_embedding))
            record.update(gradient_norms)
            gradient_norms = {}
            state.record(record)
            accelerator.log(record, step=state.step)
            progress.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "cl_loss", "auto_mlm_loss") if k in record})
            logger.info("step %d: %s", state.step, significant(record))
            window = LogWindow(run.global_batch, args.gradient_accumulation_steps)

        # Evaluation.
        if args.eval_steps and data_args.dev_data and state.step % args.eval_steps == 0:
            evaluate(run, state)
            model.train()

        # Checkpointing.
        state.train_seconds = time.perf_counter() - clock_start
        out_of_time = args.max_time_s is not None and state.train_seconds >= args.max_time_s
        done = state.step >= max_steps or out_of_time
        if args.save_steps and (state.step % args.save_steps == 0 or done):
            save_checkpoint(accelerator, checkpoint_dir, state.step, args.save_total_limit, protect=state.best_step)
        if done:
            if out_of_time:
                logger.info("Reached --max_time_s=%s at step %d; stopping.", args.max_time_s, state.step)
            break
    progress.close()
    state.train_seconds = time.perf_counter() - clock_start

    # --- The export ---------------------------------------------------------------------------------------------
    if args.eval_steps and data_args.dev_data and (not state.history or state.step % args.eval_steps):
        evaluate(run, state)
    accelerator.wait_for_everyone()
    summary = summarize(run, state)
    model = whole_model(run)  # every process: under FSDP this gathers the shards
    if accelerator.is_main_process:
        export(run, state, summary, model)
        remove_training_state(run.output_dir, keep_checkpoints=args.keep_checkpoints)
    # Tear the process group down together: a rank that destroys it while the main process is still exporting can
    # abort at exit ("terminate called without an active exception", seen once in the two-process FSDP test).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def remove_training_state(output_dir: Path, *, keep_checkpoints: bool) -> None:
    """Once the exports are written, drop what only a run in progress needs: `best/` (the export is its copy) and,
    unless `keep_checkpoints`, the checkpoints with their optimizer state (the bulk of the folder)."""
    shutil.rmtree(output_dir / "best", ignore_errors=True)
    if not keep_checkpoints:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)


def freeze_encoder_gradients(model: AutoMLMForPreTraining) -> None:
    """Drop the encoder's gradients of this step, so that only the heads are updated (`head_warmup_steps`).

    A freshly initialised head sends noise into a pretrained encoder; warming it up alone first lets its first
    gradients into the encoder carry signal. AdamW skips parameters without a gradient entirely.
    """
    for parameter in model.automlm.parameters():
        parameter.grad = None


def _scalar_settings(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings as the trackers take them: one flat level of numbers and strings."""
    flat = {}
    for section in settings.values():
        for key, value in section.items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# ----------------------------------------------------------------------------------------------------------------
# Dev evaluation
# ----------------------------------------------------------------------------------------------------------------
def make_encode_fn(
    model: AutoMLMForPreTraining, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Callable[[list[str]], torch.Tensor]:
    """An `encode(texts) -> (n, dim)` function over the model in eval mode (the caller restores train mode).

    It encodes what it is given in one call: the evaluation already batches the texts (sorted by length).
    """
    device = next(model.parameters()).device

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model.automlm(**batch.to(device)).sentence_embedding.float().cpu()

    return encode


def dev_evaluate(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    dev_data: str,
    max_length: int,
    query_prompt: str = "",
    document_prompt: str = "",
) -> dict[str, Any]:
    """Retrieval metrics on every language of a BEIR folder, in the structure `automlm-eval` writes."""
    from evaluation.evaluate import evaluate_encoder

    encode = make_encode_fn(model, tokenizer, max_length)
    results = evaluate_encoder(
        encode,
        dev_data,
        model_name="dev",
        max_seq_length=max_length,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )
    results["split"] = "dev"
    return results


def whole_model(run: Run) -> AutoMLMForPreTraining | None:
    """The model with whole parameters on the main process (None on the others), to evaluate or export.

    Under FSDP each process holds a shard of every parameter: every process must call this (it gathers them) and
    the main process gets a plain copy. Otherwise it is `run.model` itself.
    """
    accelerator = run.accelerator
    if accelerator.distributed_type != DistributedType.FSDP:
        return run.model if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(run.model)  # a collective; the whole weights land on the main process
    if not accelerator.is_main_process:
        return None
    model = AutoMLMForPreTraining(run.model.config)
    model.load_state_dict(state_dict)
    return model.to(accelerator.device)


def evaluate(run: Run, state: TrainingState) -> None:
    """Dev evaluation on the main process, recorded in the history; the best model is saved under `best/`."""
    accelerator, data_args, metric = run.accelerator, run.data_args, run.args.metric_for_best_model
    model = whole_model(run)  # every process: under FSDP this gathers the shards
    if accelerator.is_main_process:
        results = dev_evaluate(
            model,
            run.tokenizer,
            data_args.dev_data,
            data_args.max_seq_length,
            query_prompt=data_args.query_prompt,
            document_prompt=data_args.document_prompt,
        )
        value = results["macro"][metric]
        state.record({f"dev_{metric}": value})
        head = probe_head(model, run.probe) if run.probe is not None else {}
        state.record(head)
        (run.output_dir / "eval_results.json").write_text(json.dumps([results], indent=2))  # the latest evaluation
        per_language = {
            f"dev/{lang}/{metric}": scores[metric] for lang, scores in results.get("per_language", {}).items()
        }
        macro = {f"dev/{k}": v for k, v in results["macro"].items()}
        accelerator.log({**macro, **per_language, **{f"dev/{k}": v for k, v in head.items()}}, step=state.step)
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step = value, state.step
            best_dir = run.output_dir / "best"
            model.save_pretrained(best_dir)
            (best_dir / "eval_results.json").write_text(json.dumps([results], indent=2))
        # One line per evaluation: the per-language scores are in eval_results.json and TensorBoard.
        line = f"step {state.step}: dev {metric} {value:.4f} (best {state.best_metric:.4f} at step {state.best_step})"
        if head:
            line += (
                f"; Auto-MLM head rebuilds {head[HEAD_ACCURACY]:.1%} of held-out masked tokens "
                f"({head[HEAD_ACCURACY_OTHER]:.1%} with another sentence's vector)"
            )
        logger.info(line)
    accelerator.wait_for_everyone()
    # Every process needs the same best step (checkpoint retention protects it).
    # Step 0 (the untouched model) can be the best: -1 stands for "none yet".
    best = torch.tensor([-1 if state.best_step is None else state.best_step], device=accelerator.device)
    best = accelerator.reduce(best, "max") if accelerator.num_processes > 1 else best
    state.best_step = None if int(best[0].item()) < 0 else int(best[0].item())


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------
def summarize(run: Run, state: TrainingState) -> dict[str, Any]:
    """The run summary: hardware, time, throughput, the last value of each loss, the best step, the history."""
    final = {}
    for record in reversed(state.history):
        for key in SUMMARY_KEYS:
            if key in record and key not in final:
                final[key] = record[key]
    exported_step = state.best_step if run.args.load_best_model_at_end and state.best_step is not None else state.step
    head = next((r for r in state.history if r["step"] == exported_step and HEAD_ACCURACY in r), None)
    processes = run.accelerator.num_processes
    cuda = torch.cuda.is_available() and not run.args.cpu
    device = torch.cuda.get_device_name() if cuda else platform.processor()
    return {
        "wall_time_s": round(state.train_seconds, 1),
        "hardware": f"{processes} x {device or platform.machine()} ({os.cpu_count()} CPU cores)",
        "num_processes": processes,
        "steps": state.step,
        "sentences_seen": state.step * run.global_batch,
        "throughput_sentences_per_s": round(state.step * run.global_batch / max(state.train_seconds, 1e-9), 1),
        "nonfinite_steps": state.nonfinite_steps,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "exported_step": exported_step,
        # The exported model's head on the held-out probe (None without dev data or an Auto-MLM head).
        "auto_mlm_head": {key: head[key] for key in HEAD_PROBE_KEYS} if head else None,
        "final": final,
        "history": state.history,
    }


def export(run: Run, state: TrainingState, summary: dict[str, Any], model: AutoMLMForPreTraining) -> None:
    """Write the Hub-ready folder `final/` (and `final-plain/`), each with its model card."""
    args, output_dir, max_seq_length = run.args, run.output_dir, run.data_args.max_seq_length
    best_dir = output_dir / "best"
    if args.load_best_model_at_end and state.best_step is not None and best_dir.is_dir():
        logger.info("Exporting the best dev checkpoint (step %d, %s)", state.best_step, state.best_metric)
        model = AutoMLMForPreTraining.from_pretrained(best_dir)
        shutil.copy(best_dir / "eval_results.json", output_dir / "eval_results.json")
    model = model.float().eval()
    final_dir = output_dir / "final"
    if final_dir.exists():
        shutil.rmtree(final_dir)
    prompts = sentence_transformers_prompts(run.data_args.query_prompt, run.data_args.document_prompt)
    export_sentence_transformers(model, run.tokenizer, final_dir, max_seq_length=max_seq_length, prompts=prompts)
    source = backbone_source(run.model_args)
    if source is not None:  # where the starting weights came from, for the model card
        shutil.copy(source, final_dir / source.name)
    (final_dir / "training_config.json").write_text(json.dumps(run.settings, indent=2))
    (final_dir / "training_metrics.json").write_text(json.dumps(summary, indent=2))
    (final_dir / "data_stats.json").write_text(json.dumps(run.data_stats, indent=2, ensure_ascii=False))
    for name in ("eval_results.json", HEAD_SOURCE_FILE):
        if (output_dir / name).is_file():
            shutil.copy(output_dir / name, final_dir / name)
    model_id = args.hub_model_id or output_dir.resolve().name
    plain_id = None
    if args.export_plain:
        plain_dir = output_dir / "final-plain"
        if plain_dir.exists():
            shutil.rmtree(plain_dir)
        export_plain(model, run.tokenizer, plain_dir, max_seq_length=max_seq_length, prompts=prompts)
        for name in ("training_config.json", "training_metrics.json", "data_stats.json", BACKBONE_SOURCE_FILE):
            if (final_dir / name).is_file():
                shutil.copy(final_dir / name, plain_dir / name)
        plain_id = f"{model_id}-plain" if args.hub_model_id else "../final-plain"
        generate_model_card(plain_dir, model_id=f"{model_id}-plain")
    generate_model_card(final_dir, model_id=model_id, plain_repo_id=plain_id)
    logger.info("Exported to %s", final_dir)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of `automlm-train`: bad input ends it with one line naming the problem, no traceback."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )
    for noisy in ("httpx", "urllib3", "filelock", "accelerate", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The dev evaluation's line per language stays off the console (one line per evaluation comes from `evaluate`).
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.name != "evaluation.evaluate" or record.levelno > logging.INFO)
    try:
        model_args, data_args, args = parse_args(argv)
        summary = train(model_args, data_args, args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"automlm-train: {error}") from None
    if not PartialState().is_main_process:
        return
    final_dir = Path(args.output_dir).resolve() / "final"
    best = ""
    if summary["best_step"] is not None:
        metric = f"{args.metric_for_best_model} {summary['best_metric']:.4f}"
        best = f"\nExported step {summary['best_step']}: the best on the dev data ({metric})"
    head = summary.get("auto_mlm_head")
    if head:
        best += (
            f"\nAuto-MLM head at the exported step, held-out masked tokens rebuilt: {head[HEAD_ACCURACY]:.4f} "
            f"({head[HEAD_ACCURACY_OTHER]:.4f} with another sentence's vector: {head[HEAD_VECTOR_SHARE]:+.4f} from "
            "the sentence vector)"
        )
    print(
        f"\nTrained {summary['steps']} steps in {summary['wall_time_s']:.0f} s "
        f"({summary['throughput_sentences_per_s']:.0f} sentences/s); final losses: "
        + ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items())
        + best
        + f"\nModel: {final_dir}\n\nUse it:\n"
        "    from sentence_transformers import SentenceTransformer\n"
        f"    model = SentenceTransformer({str(final_dir)!r}, trust_remote_code=True)\n"
        '    queries = model.encode_query(["where is my order?", "¿dónde está mi pedido?"])\n'
        '    documents = model.encode_document(["Track your parcel under My orders.", "Devoluciones en 30 días."])\n'
        "    print(model.similarity(queries, documents))\n"
    )


if __name__ == "__main__":
    main()
