"""`automlm-train`: self-supervised Auto-MLM pretraining with accelerate, from unlabelled text to a Hub-ready folder.

Run ``automlm-train`` (the embedded default), ``automlm-train --config configs/X.yaml [--field value ...]``, or
``accelerate launch -m training.train ...`` for several processes or GPUs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase, get_scheduler

from model_card import generate_model_card
from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from modeling_automlm.modeling_automlm import special_token_ids_of

from .arguments import DataArguments, ModelArguments, PretrainingArguments, parse_args, settings_dict
from .data import (
    UNKNOWN_LANGUAGE,
    AutoMLMCollator,
    Corpus,
    SentenceDataset,
    StreamingSentences,
    balance_languages,
    load_corpus,
)
from .export import export_plain, export_sentence_transformers
from .gradcache import grad_cache_step
from .health import alignment, uniformity
from .tokenization import train_wordpiece_tokenizer

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
STREAM_TOKENIZER_SAMPLE = 100_000  # streamed sentences a from-scratch tokenizer is trained on
LOSS_KEYS = ("loss", "cl_loss", "auto_mlm_loss", "mlm_loss", "auto_mlm_accuracy", "mlm_accuracy")


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
def _is_automlm_folder(backbone: str) -> bool:
    config_file = Path(backbone) / "config.json"
    return config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "automlm"


def build_tokenizer(
    model_args: ModelArguments, data_args: DataArguments, texts: list[str], run_tokenizer_dir: Path, *, train_new: bool
) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer, or, from scratch, the run's own: trained on `texts` when `train_new` (and saved in
    `run_tokenizer_dir`), else loaded from there.

    Training a tokenizer is not reproducible across processes (the trainer breaks ties in hash order), so every
    process of a run, and a resumed run, reads the one the main process trained.
    """
    if model_args.backbone != "scratch":
        return AutoTokenizer.from_pretrained(model_args.backbone)
    if train_new:
        tokenizer = train_wordpiece_tokenizer(
            texts, vocab_size=model_args.tokenizer_vocab_size, model_max_length=data_args.max_seq_length
        )
        tokenizer.save_pretrained(run_tokenizer_dir)
        return tokenizer
    if not (run_tokenizer_dir / "tokenizer_config.json").is_file():
        raise ValueError(
            f"{run_tokenizer_dir} holds no tokenizer: a run from scratch cannot be resumed without the tokenizer it "
            "trained; start a new run instead."
        )
    return AutoTokenizer.from_pretrained(run_tokenizer_dir)


def build_model(
    model_args: ModelArguments, data_args: DataArguments, tokenizer: PreTrainedTokenizerBase
) -> AutoMLMForPreTraining:
    """A new model from scratch, one around a pretrained encoder, or an Auto-MLM model to continue from (with the
    objective of `model_args`)."""
    objective = model_args.config_fields()
    if model_args.backbone == "scratch":
        encoder_config = AutoConfig.for_model(
            model_args.model_type,
            vocab_size=len(tokenizer),
            hidden_size=model_args.hidden_size,
            num_hidden_layers=model_args.num_hidden_layers,
            num_attention_heads=model_args.num_attention_heads,
            intermediate_size=model_args.intermediate_size,
            hidden_dropout_prob=model_args.hidden_dropout_prob,
            attention_probs_dropout_prob=model_args.hidden_dropout_prob,
            max_position_embeddings=max(512, data_args.max_seq_length + 2),
            pad_token_id=tokenizer.pad_token_id,
        )
        config = AutoMLMConfig(
            encoder_config=encoder_config,
            mask_token_id=tokenizer.mask_token_id,
            special_token_ids=special_token_ids_of(tokenizer),
            **objective,
        )
        return AutoMLMForPreTraining(config)
    if _is_automlm_folder(model_args.backbone):
        return AutoMLMForPreTraining.from_pretrained(model_args.backbone, **objective)
    return AutoMLMForPreTraining.from_backbone(model_args.backbone, tokenizer=tokenizer, **objective)


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
    texts = load_corpus(data_args).texts if train_tokenizer and model_args.backbone == "scratch" else []
    tokenizer = build_tokenizer(model_args, data_args, texts, tokenizer_dir, train_new=train_tokenizer)
    torch.manual_seed(seed)
    model = build_model(model_args, data_args, tokenizer).eval()
    return export_sentence_transformers(model, tokenizer, output_dir, data_args.max_seq_length)


def _optimizer(model: torch.nn.Module, args: PretrainingArguments) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm_or_bias = parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or "norm" in name
        (no_decay if is_norm_or_bias else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What a checkpoint stores beyond model, optimizer, scheduler and RNG states."""

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
    accelerator: Accelerator, checkpoint_dir: Path, step: int, keep: int, protect: Path | None
) -> Path:
    """Write `checkpoint-<step>` atomically: into a temporary folder, marker last, then one rename.

    A crash mid-write leaves only a `tmp-` folder, which is never taken for a checkpoint (and is removed by the next
    save). The oldest complete checkpoints beyond `keep` are removed, except `protect` (the best one).
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
        existing = [path for path in complete_checkpoints(checkpoint_dir) if path != protect]
        for old in existing[: max(0, len(existing) - keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------------------------
# Dev evaluation
# ----------------------------------------------------------------------------------------------------------------
def make_encode_fn(
    model: AutoMLMForPreTraining, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Callable[[list[str]], torch.Tensor]:
    """An `encode(texts) -> (n, dim)` function over the model in eval mode (the caller restores train mode).

    It encodes what it is given in one call: `training.evaluation` already batches the texts (sorted by length).
    """
    device = next(model.parameters()).device

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model.automlm(**batch.to(device)).sentence_embedding.float().cpu()

    return encode


def dev_evaluate(
    model: AutoMLMForPreTraining, tokenizer: PreTrainedTokenizerBase, dev_data: str, max_length: int
) -> dict[str, Any]:
    """Retrieval metrics on every language of a BEIR folder, in the structure `automlm-eval` writes."""
    from .evaluation import evaluate_encoder

    encode = make_encode_fn(model, tokenizer, max_length)
    results = evaluate_encoder(encode, dev_data, model_name="dev", max_seq_length=max_length)
    results["split"] = "dev"
    return results


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _restore_rng_after_start(
    batches: Iterable[dict[str, torch.Tensor]], rng: tuple[torch.Tensor, list[torch.Tensor] | None]
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


def _accelerator(args: PretrainingArguments) -> Accelerator:
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
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Heads unused under some objectives (and BERT's unused pooler) need this under DDP.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _scalar_settings(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flat = {}
    for section in settings.values():
        for key, value in section.items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def train(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> dict[str, Any]:
    """Train and export; returns the run summary (also saved as `training_metrics.json` in the export)."""
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    accelerator = _accelerator(args)
    set_seed(args.seed)
    settings = settings_dict(model_args, data_args, args)
    if args.resume and not complete_checkpoints(checkpoint_dir):
        raise ValueError(f"--resume: no complete checkpoint under {checkpoint_dir}; run without --resume to start.")
    if not args.resume and complete_checkpoints(checkpoint_dir):
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints: pass --resume to continue that run, or choose another "
            "--output_dir (nothing was overwritten)."
        )

    batch_size = args.per_device_train_batch_size
    if data_args.streaming:
        if not args.max_steps:
            raise ValueError("A streamed corpus has no known length: set --max_steps.")
        stream = StreamingSentences(data_args, args.seed)
        sample = [item["text"] for item in itertools.islice(stream, STREAM_TOKENIZER_SAMPLE)]
        if not sample:
            raise ValueError(f"The streamed dataset {data_args.dataset_name} yielded no text; check --text_column.")
        corpus = Corpus(
            texts=sample,
            languages=[UNKNOWN_LANGUAGE] * len(sample),
            sources=[{"name": stream.name, "hub_id": stream.name}],
        )
        dataset = stream
    else:
        corpus = load_corpus(data_args)
    with accelerator.main_process_first():
        train_new = accelerator.is_main_process and not args.resume
        tokenizer = build_tokenizer(model_args, data_args, corpus.texts, output_dir / "tokenizer", train_new=train_new)
    model = build_model(model_args, data_args, tokenizer)
    if not data_args.streaming:
        order = balance_languages(corpus, data_args.language_sampling_alpha, args.seed)
        dataset = SentenceDataset([corpus.texts[i] for i in order])
        if len(dataset) < batch_size * accelerator.num_processes:
            raise ValueError(
                f"The corpus has {len(dataset)} sentences, fewer than one global batch "
                f"({batch_size} x {accelerator.num_processes} processes): lower --per_device_train_batch_size."
            )
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    collator = AutoMLMCollator(
        tokenizer, max_length=data_args.max_seq_length, whole_word_masking=model.config.masking_scheme == "whole_word"
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=not data_args.streaming, collate_fn=collator, drop_last=True
    )
    optimizer = _optimizer(model, args)
    if args.max_steps:
        max_steps = args.max_steps
    else:
        updates_per_epoch = max(1, len(loader) // accelerator.num_processes // args.gradient_accumulation_steps)
        max_steps = math.ceil(args.num_train_epochs * updates_per_epoch)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * max_steps) * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_config.json").write_text(json.dumps(settings, indent=2))
    if accelerator.log_with:
        accelerator.init_trackers("automlm", config=_scalar_settings(settings))

    micro_batches_done = 0
    resumed_rng = None
    if args.resume:
        latest = complete_checkpoints(checkpoint_dir)[-1]
        accelerator.load_state(str(latest))
        resumed_rng = _rng_state()
        micro_batches_done = state.step * args.gradient_accumulation_steps
        logger.info("Resumed from %s at step %d", latest, state.step)

    unwrapped: AutoMLMForPreTraining = accelerator.unwrap_model(model)
    global_batch = batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        "Training %d steps, %d sentences per step (%d per device x %d processes x %d accumulation), %d parameters",
        max_steps, global_batch, batch_size, accelerator.num_processes, args.gradient_accumulation_steps,
        sum(p.numel() for p in unwrapped.parameters()),
    )  # fmt: skip
    progress = tqdm(total=max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="automlm")
    window: dict[str, list[float]] = {}
    window_tokens, window_start = 0, time.perf_counter()
    run_start = time.perf_counter() - state.train_seconds
    step_had_nonfinite = False
    stop = state.step >= max_steps
    model.train()
    # A streamed dataset has no length: resuming replays it from the start (epoch 0) and skips what was seen.
    epoch_length = None if data_args.streaming else len(loader)
    epoch = micro_batches_done // epoch_length if epoch_length else 0
    while not stop:
        loader.set_epoch(epoch)
        skip = micro_batches_done - epoch * epoch_length if epoch_length else micro_batches_done
        batches = accelerator.skip_first_batches(loader, skip) if skip > 0 else loader
        if resumed_rng is not None:
            batches, resumed_rng = _restore_rng_after_start(batches, resumed_rng), None
        for batch in batches:
            micro_batches_done += 1
            with accelerator.accumulate(model):
                if args.gradient_cache_chunk_size:
                    # Full-batch contrastive loss with the activations of one chunk at a time; backward included.
                    outputs = grad_cache_step(model, batch, args.gradient_cache_chunk_size)
                else:
                    outputs = model(**batch)
                loss = outputs.loss
                finite = accelerator.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item() == 1.0
                if finite and not args.gradient_cache_chunk_size:
                    accelerator.backward(loss)
                elif not finite:
                    step_had_nonfinite = True
                if accelerator.sync_gradients:
                    if step_had_nonfinite:
                        state.nonfinite_steps += 1
                        logger.warning("Non-finite loss at step %d: update skipped", state.step + 1)
                        if state.nonfinite_steps > args.max_nonfinite_steps:
                            raise RuntimeError(
                                f"{state.nonfinite_steps} steps had a non-finite loss (limit "
                                f"--max_nonfinite_steps={args.max_nonfinite_steps}): lower --learning_rate, "
                                "raise --warmup_ratio, or use fp32 (--mixed_precision no)."
                            )
                    else:
                        if args.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            if finite:
                for key in LOSS_KEYS:
                    value = getattr(outputs, key)
                    if value is not None:
                        window.setdefault(key, []).append(value.detach().float().item())
            window_tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            state.step += 1
            step_had_nonfinite = False
            progress.update(1)
            if state.step % args.logging_steps == 0 or state.step == max_steps:
                elapsed = time.perf_counter() - window_start
                record: dict[str, Any] = {"step": state.step}
                record.update({key: sum(values) / len(values) for key, values in window.items()})
                record["learning_rate"] = scheduler.get_last_lr()[0]
                steps_in_window = len(window.get("loss", [])) / args.gradient_accumulation_steps or 1
                record["sentences_per_s"] = steps_in_window * global_batch / max(elapsed, 1e-9)
                record["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                if outputs.positive_embedding is not None:
                    record["alignment"] = alignment(outputs.sentence_embedding, outputs.positive_embedding)
                record["uniformity"] = uniformity(outputs.sentence_embedding.detach())
                record["eta_s"] = (max_steps - state.step) * elapsed / max(steps_in_window, 1)
                state.history.append(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
                progress.set_postfix(
                    {k: f"{record[k]:.3g}" for k in ("loss", "cl_loss", "auto_mlm_loss") if k in record}
                )
                logger.info("step %d: %s", state.step, {k: round(v, 4) for k, v in record.items() if k != "step"})
                window, window_tokens, window_start = {}, 0, time.perf_counter()

            if args.eval_steps and data_args.dev_data and state.step % args.eval_steps == 0:
                _evaluate_and_track(accelerator, unwrapped, tokenizer, data_args, args, state, output_dir)
                model.train()
            state.train_seconds = time.perf_counter() - run_start
            out_of_time = args.max_time_s is not None and state.train_seconds >= args.max_time_s
            stop = state.step >= max_steps or out_of_time
            if args.save_steps and (state.step % args.save_steps == 0 or stop):
                best = checkpoint_dir / f"{CHECKPOINT_PREFIX}{state.best_step}" if state.best_step else None
                save_checkpoint(accelerator, checkpoint_dir, state.step, args.save_total_limit, best)
            if stop:
                if out_of_time:
                    logger.info("Reached --max_time_s=%s at step %d; stopping.", args.max_time_s, state.step)
                break
        epoch += 1
        if data_args.streaming:
            micro_batches_done = 0  # the next pass over the stream starts afresh
    progress.close()
    state.train_seconds = time.perf_counter() - run_start

    if args.eval_steps and data_args.dev_data and (not state.history or state.step % args.eval_steps):
        _evaluate_and_track(accelerator, unwrapped, tokenizer, data_args, args, state, output_dir)
    accelerator.wait_for_everyone()
    summary = _summary(state, args, accelerator, global_batch)
    if accelerator.is_main_process:
        _export(unwrapped, tokenizer, corpus, settings, summary, state, data_args, args, output_dir)
    accelerator.end_training()
    return summary


def _evaluate_and_track(
    accelerator: Accelerator,
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    args: PretrainingArguments,
    state: TrainingState,
    output_dir: Path,
) -> None:
    """Dev evaluation on the main process; keeps the best model's weights under `best/`."""
    if accelerator.is_main_process:
        results = dev_evaluate(model, tokenizer, data_args.dev_data, data_args.max_seq_length)
        value = results["macro"][args.metric_for_best_model]
        record = {"step": state.step, f"dev_{args.metric_for_best_model}": value}
        if state.history and state.history[-1]["step"] == state.step:
            state.history[-1].update(record)
        else:
            state.history.append(record)
        (output_dir / "eval_results.json").write_text(json.dumps([results], indent=2))  # the latest evaluation
        accelerator.log({f"dev/{k}": v for k, v in results["macro"].items()}, step=state.step)
        logger.info("step %d: dev %s", state.step, {k: round(v, 4) for k, v in results["macro"].items()})
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step = value, state.step
            best_dir = output_dir / "best"
            model.save_pretrained(best_dir)
            (best_dir / "eval_results.json").write_text(json.dumps([results], indent=2))
    accelerator.wait_for_everyone()
    # Every process needs the same best step (checkpoint retention protects it).
    best = torch.tensor(
        [state.best_step or 0, state.best_metric or 0.0], dtype=torch.float64, device=accelerator.device
    )
    best = accelerator.reduce(best, "max") if accelerator.num_processes > 1 else best
    state.best_step = int(best[0].item()) or None


def _summary(
    state: TrainingState, args: PretrainingArguments, accelerator: Accelerator, global_batch: int
) -> dict[str, Any]:
    final = {}
    for record in reversed(state.history):
        for key in LOSS_KEYS:
            if key in record and key not in final:
                final[key] = record[key]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else platform.processor()
    return {
        "wall_time_s": round(state.train_seconds, 1),
        "hardware": f"{accelerator.num_processes} x {device or platform.machine()} ({os.cpu_count()} CPU cores)",
        "num_processes": accelerator.num_processes,
        "steps": state.step,
        "sentences_seen": state.step * global_batch,
        "throughput_sentences_per_s": round(state.step * global_batch / max(state.train_seconds, 1e-9), 1),
        "nonfinite_steps": state.nonfinite_steps,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "final": final,
        "history": state.history,
    }


def _export(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    corpus: Corpus,
    settings: dict[str, Any],
    summary: dict[str, Any],
    state: TrainingState,
    data_args: DataArguments,
    args: PretrainingArguments,
    output_dir: Path,
) -> None:
    """Write the Hub-ready folder `final/` (and `final-plain/`)."""
    final_dir = output_dir / "final"
    best_dir = output_dir / "best"
    if args.load_best_model_at_end and state.best_step is not None and best_dir.is_dir():
        logger.info("Exporting the best dev checkpoint (step %d, %s)", state.best_step, state.best_metric)
        model = AutoMLMForPreTraining.from_pretrained(best_dir)
        shutil.copy(best_dir / "eval_results.json", output_dir / "eval_results.json")
    model = model.float().eval()
    if final_dir.exists():
        shutil.rmtree(final_dir)
    export_sentence_transformers(model, tokenizer, final_dir, max_seq_length=data_args.max_seq_length)
    (final_dir / "training_config.json").write_text(json.dumps(settings, indent=2))
    (final_dir / "training_metrics.json").write_text(json.dumps(summary, indent=2))
    (final_dir / "data_stats.json").write_text(json.dumps(corpus.stats(), indent=2, ensure_ascii=False))
    if (output_dir / "eval_results.json").is_file():
        shutil.copy(output_dir / "eval_results.json", final_dir / "eval_results.json")
    model_id = args.hub_model_id or output_dir.resolve().name
    plain_id = None
    if args.export_plain:
        plain_dir = output_dir / "final-plain"
        if plain_dir.exists():
            shutil.rmtree(plain_dir)
        export_plain(model, tokenizer, plain_dir, max_seq_length=data_args.max_seq_length)
        for name in ("training_config.json", "training_metrics.json", "data_stats.json"):
            shutil.copy(final_dir / name, plain_dir / name)
        plain_id = f"{model_id}-plain" if args.hub_model_id else "../final-plain"
        generate_model_card(plain_dir, model_id=f"{model_id}-plain")
    generate_model_card(final_dir, model_id=model_id, plain_repo_id=plain_id)
    logger.info("Exported to %s", final_dir)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of `automlm-train`."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )
    for noisy in ("httpx", "urllib3", "filelock", "accelerate", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        model_args, data_args, args = parse_args(argv)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"automlm-train: {error}") from None
    try:
        summary = train(model_args, data_args, args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"automlm-train: {error}") from None
    if int(os.environ.get("RANK", "0")) != 0:
        return
    final_dir = Path(args.output_dir).resolve() / "final"
    print(
        f"\nTrained {summary['steps']} steps in {summary['wall_time_s']:.0f} s "
        f"({summary['throughput_sentences_per_s']:.0f} sentences/s); final losses: "
        + ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items())
        + f"\nModel: {final_dir}\n\nUse it:\n"
        "    from sentence_transformers import SentenceTransformer\n"
        f"    model = SentenceTransformer({str(final_dir)!r}, trust_remote_code=True)\n"
        '    embeddings = model.encode(["where is my order?", "¿dónde está mi pedido?"])\n'
    )


if __name__ == "__main__":
    main()
