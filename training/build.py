"""Setting a run up: the accelerator, the checks that refuse a run that cannot work, the data, the model and its
tokenizer, the pretrained Auto-MLM head, the optimizer and the schedule, all gathered in one `Run` (`set_up_run`)."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, ProjectConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase, get_scheduler

from model_card.card import HEAD_SOURCE_FILE
from modeling_automlm import AutoMLMForPreTraining

from .anchor import build_anchor
from .arguments import EMBEDDED_CORPUS, DataArguments, ModelArguments, PretrainingArguments
from .batches import rng_state
from .checkpoints import complete_checkpoints, newest_intact_checkpoint, set_damaged_aside
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
from .head import HeadProbe, HeadRecipe, pretrain_head, probe_texts
from .model import build_model, fill_prompts_from_backbone, is_automlm_checkpoint, resolve_backbone
from .run_log import open_run_log
from .state import Run

logger = logging.getLogger(__name__)

STREAM_TOKENIZER_SAMPLE = 100_000  # streamed sentences a from-scratch tokenizer is trained on


def set_up_run(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> Run:
    """Everything a run needs before its first step, checked: refuses (ValueError, one line) what cannot work."""
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    check_checkpoints(output_dir / "checkpoints", resume=args.resume)
    accelerator = build_accelerator(args)
    if data_args.dev_data == EMBEDDED_CORPUS:
        with accelerator.main_process_first():  # the main process builds it once; the others read it
            data_args.dev_data = str(embedded_dev_data())
    check_contrastive_batch(model_args, args, accelerator.num_processes)
    set_seed(args.seed)
    corpus, dataset = load_training_data(data_args, args, accelerator.num_processes)
    backbone = resolve_backbone(model_args.backbone)  # once per run: every later use takes this name
    with accelerator.main_process_first():
        # From scratch, the main process of a new run trains the tokenizer; the others and a resumed run read it.
        train_tokenizer = accelerator.is_main_process and not args.resume
        model, tokenizer = build_model(
            model_args, data_args, corpus.texts, output_dir / "tokenizer", train_tokenizer=train_tokenizer,
            backbone=backbone,
        )  # fmt: skip
    if accelerator.is_main_process:
        check_room_for_a_checkpoint(output_dir, model, save=bool(args.save_steps))
    anchor = build_anchor(model) if args.anchor_weight > 0 else None
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    fill_prompts_from_backbone(backbone, data_args)
    if args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    # The backbone's own pooler (BERT, XLM-R) is never used: Auto-MLM pools the token states itself. Frozen, it has
    # no optimizer state to miss: FSDP checkpoints only resume when every trainable parameter has some.
    if getattr(model.automlm.encoder, "pooler", None) is not None:
        model.automlm.encoder.pooler.requires_grad_(False)
    probe = build_head_probe(model, tokenizer, data_args, args, corpus)
    head_source = start_head(model, tokenizer, data_args, args, accelerator, corpus, probe, backbone)
    loader = build_loader(dataset, model, tokenizer, data_args, args)
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
    prepared, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if anchor is not None:
        anchor.to(accelerator.device)
    run = Run(
        model_args, data_args, args, accelerator, prepared, accelerator.unwrap_model(prepared), tokenizer, optimizer,
        scheduler, loader, max_steps, corpus.stats(), backbone, probe=probe, anchor=anchor,
    )  # fmt: skip
    accelerator.register_for_checkpointing(run.state)
    if args.resume:  # before anything is written: a refused resume leaves the folder as it was
        resume(run)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_config.json").write_text(json.dumps(run.settings, indent=2))
        open_run_log(output_dir)
        if head_source is not None:  # read back by the export, also after a resume
            (output_dir / HEAD_SOURCE_FILE).write_text(json.dumps(head_source, indent=2))
    if accelerator.log_with:
        accelerator.init_trackers("automlm", config=_scalar_settings(run.settings))
    logger.info(
        "Training %d steps, %d sentences per step (%d per device x %d processes x %d accumulation), %d parameters",
        max_steps, run.global_batch, args.per_device_train_batch_size, accelerator.num_processes,
        args.gradient_accumulation_steps, sum(p.numel() for p in run.unwrapped.parameters()),
    )  # fmt: skip
    return run


def resume(run: Run) -> None:
    """Load the newest intact checkpoint: model, optimizer, scheduler, the run's progress and its random states.

    The main process verifies the checkpoints, moves newer damaged ones aside (kept, named in one line each) and tells
    the others which one to load, so that every process loads the same; none intact stops the run (ValueError).
    """
    accelerator = run.accelerator
    found: list[str | None] = [None, None]  # the checkpoint to load, or why none can be
    if accelerator.is_main_process:
        try:
            latest, damaged = newest_intact_checkpoint(run.checkpoint_dir)
            for path, problem in damaged.items():
                set_damaged_aside(path, problem)
            found = [str(latest), None]
        except ValueError as error:
            found = [None, str(error)]
    if accelerator.num_processes > 1:
        found = broadcast_object_list(found)
    if found[1] is not None:
        raise ValueError(found[1])
    accelerator.load_state(found[0])
    # Kept aside: starting the data loader draws from the random state, which an uninterrupted run did at the
    # start of the epoch. `micro_batches` puts this state back once the loader has started.
    run.resumed_rng = rng_state()
    logger.info("Resumed from %s at step %d", found[0], run.state.step)


def start_head(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    args: PretrainingArguments,
    accelerator: Accelerator,
    corpus: Corpus,
    probe: HeadProbe | None,
    backbone: str,
) -> dict[str, Any] | None:
    """Pretrain the Auto-MLM head on the frozen encoder's vectors (or read it from the cache); returns its
    provenance. Skipped without a head, on resume (the checkpoint has it) and when continuing an Auto-MLM model
    (it keeps its own trained head)."""
    if not args.head_pretraining_steps or model.auto_mlm_head is None or args.resume:
        return None
    if is_automlm_checkpoint(backbone):
        return None
    if accelerator.distributed_type != DistributedType.FSDP:  # on the GPU, not the CPU (`prepare` moves it anyway)
        model.to(accelerator.device)
    with accelerator.main_process_first():  # the main process trains and caches it; the others read it
        return pretrain_head(
            model,
            tokenizer,
            corpus.texts,
            prefix=data_args.text_prefix,
            max_length=data_args.max_seq_length,
            recipe=HeadRecipe(steps=args.head_pretraining_steps),
            probe=probe,
        )


def build_loader(
    dataset: Dataset,
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    args: PretrainingArguments,
) -> DataLoader:
    """The micro-batches of one process, collated into the two views, the masks and the word ids."""
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
    return DataLoader(
        dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=not data_args.streaming,
        collate_fn=collator,
        drop_last=True,
    )


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


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (where a folder still to be made would live)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_room_for_a_checkpoint(output_dir: Path, model: torch.nn.Module, *, save: bool) -> None:
    """Before any step: the output folder (or the nearest folder above it that exists) must be writable and hold
    one checkpoint (weights and AdamW's two moments, plus one export of the weights), else one line says so."""
    folder = nearest_existing(output_dir)
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


def _scalar_settings(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings as the trackers take them: one flat level of numbers and strings."""
    flat = {}
    for section in settings.values():
        for key, value in section.items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
