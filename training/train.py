"""`automlm-train`: self-supervised Auto-MLM pretraining with accelerate, from unlabelled text to a Hub-ready folder.

Run ``automlm-train`` (the embedded default), ``automlm-train --config configs/X.yaml [--field value ...]``, or
``accelerate launch -m training.train ...`` for several processes or GPUs.

`train` reads top to bottom: the set-up (`build.set_up_run`, which gathers everything in one `Run`), one loop over
micro-batches (the step, logging, dev evaluation, checkpointing, a stop on SIGTERM or SIGINT), then the export
(`export.export_run`). Each concern is one call away: `dev` (evaluation and the best step), `checkpoints`,
`preemption`, `batches` (resumable data order), `state` (what a run carries).
"""

from __future__ import annotations

import errno
import logging
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from modeling_automlm import AutoMLMForPreTraining, AutoMLMForPreTrainingOutput

from . import cli
from .anchor import anchor_loss
from .arguments import DataArguments, ModelArguments, PretrainingArguments, parse_args
from .batches import micro_batches
from .build import nearest_existing, set_up_run
from .checkpoints import complete_checkpoints, save_checkpoint
from .dev import evaluate, whole_model
from .export import export_run, remove_training_state, summarize
from .gradcache import grad_cache_step
from .gradients import term_gradient_norms
from .head import HEAD_ACCURACY, HEAD_ACCURACY_OTHER, HEAD_VECTOR_SHARE
from .health import CL_SOLVED_LOSS, contrastive_task_solved, embedding_health
from .preemption import Preempted, StopSignals
from .run_log import run_log
from .state import LogWindow, Run, logged_keys

logger = logging.getLogger(__name__)
progress_logger = logging.getLogger("training.progress")  # a line per logging step: to train.log, off the console


def train(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> dict[str, Any]:
    """Train and export; returns the run summary (also saved as `training_metrics.json` in the export).

    Raises:
        Preempted: SIGTERM or SIGINT stopped the run after a checkpoint; `--resume` continues it.
    """
    run = set_up_run(model_args, data_args, args)
    accelerator, state = run.accelerator, run.state
    with (
        StopSignals() as signals,
        tqdm(
            total=run.max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="automlm"
        ) as progress,
    ):
        clock = time.perf_counter() - state.train_seconds  # the step-0 evaluation counts, as every other one
        if run.evaluates and state.step == 0 and not state.history:
            evaluate(run)  # step 0: the untouched model is a candidate for the export too
            stop_if_signalled(run, signals)
        window = LogWindow(run.global_batch, args.gradient_accumulation_steps)
        skip_update = False  # a micro-batch of the current optimizer step had a non-finite loss
        run.model.train()
        batches = micro_batches(
            run.loader, accelerator, state.step * args.gradient_accumulation_steps, data_args.streaming,
            run.resumed_rng,
        )  # fmt: skip
        for batch in batches if state.step < run.max_steps else []:
            step = training_step(run, batch, skip_update)
            window.add(step.outputs if step.finite else None, tokens=step.tokens, anchor_loss=step.anchor_loss)
            skip_update = (skip_update or not step.finite) and not accelerator.sync_gradients
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            progress.update(1)
            if state.step % args.logging_steps == 0 or state.step == run.max_steps:
                log_step(run, window, step, progress)
                window = LogWindow(run.global_batch, args.gradient_accumulation_steps)
            if run.evaluates and state.step % args.eval_steps == 0:
                evaluate(run)
                run.model.train()
            state.train_seconds = time.perf_counter() - clock
            if end_of_step(run, signals):
                break
    state.train_seconds = time.perf_counter() - clock
    return finish(run)


@dataclass
class Step:
    """One micro-batch's result: the model's outputs, whether its loss was finite, the anchor term, the tokens over
    every process and the gradient norms of each term (measured on logging steps only)."""

    outputs: AutoMLMForPreTrainingOutput
    finite: bool
    anchor_loss: torch.Tensor | None
    tokens: int
    gradient_norms: dict[str, float]


def training_step(run: Run, batch: dict[str, torch.Tensor], skip_update: bool) -> Step:
    """Forward and backward one micro-batch; at the last micro-batch of a step, clip and update (or skip the update
    when a micro-batch of the step had a non-finite loss)."""
    accelerator, args, state, model = run.accelerator, run.args, run.state, run.model
    gradient_norms: dict[str, float] = {}
    with accelerator.accumulate(model):
        if args.gradient_cache_chunk_size:
            outputs = grad_cache_step(model, batch, args.gradient_cache_chunk_size)  # backward included
        else:
            outputs = model(**batch)
        anchor_value = None
        if run.anchor is not None:  # `anchor_weight`; not with GradCache (the arguments refuse the pair)
            anchor_value = anchor_loss(run.anchor, batch, outputs.sentence_embedding)
            outputs.loss = outputs.loss + args.anchor_weight * anchor_value
        if args.log_gradient_norms and (state.step + 1) % args.logging_steps == 0 and accelerator.sync_gradients:
            gradient_norms = term_gradient_norms(run.unwrapped, outputs)
        # Every process must take the same decision: DDP would otherwise wait for a gradient that never comes.
        finite = accelerator.gather(torch.isfinite(outputs.loss.detach()).float().reshape(1)).min().item() == 1
        if finite and not args.gradient_cache_chunk_size:
            accelerator.backward(outputs.loss)
        if accelerator.sync_gradients:
            if skip_update or not finite:
                state.skip_nonfinite_step(args.max_nonfinite_steps)
            else:
                if state.step < args.head_warmup_steps:
                    freeze_encoder_gradients(run.unwrapped)
                if args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                run.optimizer.step()
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
    tokens = int(batch["attention_mask"].sum()) * accelerator.num_processes
    return Step(outputs, finite, anchor_value, tokens, gradient_norms)


def log_step(run: Run, window: LogWindow, step: Step, progress: tqdm) -> None:
    """Record the window's mean losses, the embeddings' health and the gradient norms: history, trackers, log."""
    record = window.summary(run.scheduler.get_last_lr()[0], steps_left=run.max_steps - run.state.step)
    record.update(embedding_health(step.outputs.sentence_embedding, step.outputs.positive_embedding))
    record.update(step.gradient_norms)
    config = run.unwrapped.config
    uncapped = config.auto_mlm_weight > 0 and config.auto_mlm_gradient_share is None
    if uncapped and contrastive_task_solved(run.state.history, record):
        logger.warning(
            "Step %d: the contrastive loss is %.2g, below %g: CL has solved its in-batch task, and from here the "
            "Auto-MLM term drives the encoder. Over a whole corpus this cost 0.014 to 0.039 nDCG@10 against CL alone "
            "at the dev-best step, more at the last (docs/RESULTS.md, 'The whole-corpus study'): keep --dev_data set "
            "so that the export is the dev-best step, cap the term with --auto_mlm_gradient_share 0.25, or train "
            "long runs with --auto_mlm_weight 0.",
            run.state.step,
            record["cl_loss"],
            CL_SOLVED_LOSS,
        )
    run.state.record(record)
    run.accelerator.log(record, step=run.state.step)
    losses = [key for key in logged_keys() if key.endswith("loss") and key in record]
    progress.set_postfix({key: f"{record[key]:.3g}" for key in losses})
    progress_logger.info("step %d: %s", run.state.step, significant(record))


def end_of_step(run: Run, signals: StopSignals) -> bool:
    """Checkpoint when due; True when the run is done (its last step, or `max_time_s`). A signal stops it here, with
    a checkpoint, unless this is its last step: then it finishes and exports."""
    args, state = run.args, run.state
    out_of_time = args.max_time_s is not None and state.train_seconds >= args.max_time_s
    signum, out_of_time = signals.stop_now(run.accelerator, out_of_time=out_of_time)  # the same on every process
    done = state.step >= run.max_steps or out_of_time
    if signum and not done:
        preempt(run, signum)
    if args.save_steps and (state.step % args.save_steps == 0 or done):
        checkpoint(run)
    if out_of_time:
        logger.info("Reached --max_time_s=%s at step %d; stopping.", args.max_time_s, state.step)
    return done


def stop_if_signalled(run: Run, signals: StopSignals) -> None:
    """After the step-0 evaluation: if SIGTERM or SIGINT reached any process, checkpoint and stop."""
    signum, _ = signals.stop_now(run.accelerator)
    if signum:
        preempt(run, signum)


def checkpoint(run: Run) -> Path:
    """Write the checkpoint of the current step (retention keeps the best step's)."""
    state, args = run.state, run.args
    return save_checkpoint(
        run.accelerator, run.checkpoint_dir, state.step, args.save_total_limit, protect=state.best_step
    )


def preempt(run: Run, signum: int) -> None:
    """Checkpoint this step and raise `Preempted` (the entry point prints how to resume and exits 128 + signum)."""
    saved = checkpoint(run)
    run.accelerator.end_training()
    raise Preempted(signum, run.state.step, str(saved))


def finish(run: Run) -> dict[str, Any]:
    """The last dev evaluation, the summary, the exports and the clean-up of the training state."""
    accelerator, state = run.accelerator, run.state
    if run.evaluates and state.step % run.args.eval_steps:  # the last step, unless it was just evaluated
        evaluate(run)
    accelerator.wait_for_everyone()
    summary = summarize(run)
    model = whole_model(run)  # every process: under FSDP this gathers the shards
    if accelerator.is_main_process:
        export_run(run, summary, model)
        remove_training_state(run.output_dir, keep_checkpoints=run.args.keep_checkpoints)
    # Tear the process group down together: a rank that destroys it while the main process is still exporting can
    # abort at exit ("terminate called without an active exception", seen once in the two-process FSDP test).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def freeze_encoder_gradients(model: AutoMLMForPreTraining) -> None:
    """Drop the encoder's gradients of this step, so that only the heads are updated (`head_warmup_steps`).

    A freshly initialised head sends noise into a pretrained encoder; warming it up alone first lets its first
    gradients into the encoder carry signal. AdamW skips parameters without a gradient entirely.
    """
    for parameter in model.automlm.parameters():
        parameter.grad = None


def significant(record: dict[str, float], digits: int = 4) -> dict[str, float]:
    """The record's numbers to `digits` significant digits, for the log: rounding to decimal places would print a
    learning rate of 5e-6 as 0.0."""
    return {key: float(f"{value:.{digits}g}") for key, value in record.items()}


def disk_full(error: BaseException | None, folder: Path) -> bool:
    """Whether `error` comes from a full disk: ENOSPC, or its message, in it or in an error it was raised from; or a
    failed write (torch's "PytorchStreamWriter failed writing file", which names no cause) with under 64 MB free."""
    failed_write = "writ" in str(error).lower()
    while error is not None:
        if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return failed_write and shutil.disk_usage(nearest_existing(folder)).free < 64 * 2**20


@cli.entry_point("automlm-train", hide_details=True)
def main(argv: list[str] | None = None) -> int | None:
    """Console entry point of `automlm-train`: bad input ends it with one line naming the problem (exit 1); a signal
    with a checkpoint and the command that resumes (exit 143 or 130)."""
    model_args, data_args, args = parse_args(argv)
    try:
        with run_log():
            summary = train(model_args, data_args, args)
    except Preempted as stop:
        arguments = list(sys.argv[1:] if argv is None else argv)
        again = shlex.join(["automlm-train", *arguments, *([] if "--resume" in arguments else ["--resume"])])
        if PartialState().is_main_process:
            print(f"automlm-train: {stop}; continue with: {again}", file=sys.stderr)
        return stop.exit_code
    except (OSError, RuntimeError) as error:  # torch and safetensors report a full disk as RuntimeError
        if not disk_full(error, Path(args.output_dir)):
            raise
        resume = complete_checkpoints(Path(args.output_dir) / "checkpoints")
        then = "run the same command with --resume" if resume else "run the same command again"
        raise cli.UserError(
            f"no space left on the device while writing in {args.output_dir}; the previous checkpoint and export "
            f"are intact: free some space, then {then}."
        ) from None
    if not PartialState().is_main_process:
        return None
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
    sys.exit(main())
