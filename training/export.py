"""Hub-ready sentence-transformers folders: of one model (`export_sentence_transformers`, `export_plain`), of a
finished run (`export_run`, with its summary and card), of the model a run would start from (`export_untrained`); and
the clean-up of what only a run in progress needs (`remove_training_state`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from model_card import generate_model_card
from model_card.card import HEAD_PROBE_KEYS, HEAD_SOURCE_FILE
from modeling_automlm import AutoMLMForPreTraining, AutoMLMModel

from .arguments import DataArguments, ModelArguments
from .data import load_corpus
from .head import HEAD_ACCURACY
from .model import SCRATCH, backbone_source, build_model, fill_prompts_from_backbone, resolve_backbone
from .state import Run, logged_keys

logger = logging.getLogger(__name__)

ST_CONFIG_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _sentence_encoder(model: AutoMLMModel | AutoMLMForPreTraining) -> AutoMLMModel:
    return model.automlm if isinstance(model, AutoMLMForPreTraining) else model


def export_sentence_transformers(
    model: AutoMLMModel | AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    max_seq_length: int | None = None,
    prompts: dict[str, str] | None = None,
) -> Path:
    """Save `model` with its code files, tokenizer and sentence-transformers configuration.

    The folder loads three ways: ``SentenceTransformer(dir, trust_remote_code=True)`` (its `encode` returns the
    model's `sentence_embedding`), ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` and, when `model` is
    an [`AutoMLMForPreTraining`], ``AutoModelForPreTraining.from_pretrained(dir, trust_remote_code=True)`` to keep
    pretraining or fine-tune. Files already in `output_dir` with other names are left alone.

    Args:
        model: the model to save; an `AutoMLMForPreTraining` keeps its heads.
        tokenizer: its tokenizer.
        output_dir: target folder (created).
        max_seq_length: longest input sentence-transformers feeds the model; defaults to the tokenizer's limit.
        prompts: sentence-transformers prompts, e.g. ``{"query": "query: ", "document": "passage: "}`` for E5:
            `SentenceTransformer.encode_query` / `encode_document` put them before the text.

    Returns:
        The folder.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    # Let sentence-transformers write its own configuration (so it stays in its format), but keep our weights.
    transformer = Transformer(
        str(output_dir),
        max_seq_length=max_seq_length,
        model_kwargs={"trust_remote_code": True},
        processor_kwargs={"trust_remote_code": True},
        config_kwargs={"trust_remote_code": True},
        modality_config={"text": {"method": "forward", "method_output_name": "sentence_embedding"}},
        module_output_name="sentence_embedding",
    )
    with tempfile.TemporaryDirectory() as scratch:
        SentenceTransformer(modules=[transformer], similarity_fn_name="cosine", prompts=prompts).save(
            scratch, create_model_card=False
        )
        # sentence-transformers keeps `max_seq_length` as the tokenizer's `model_max_length`: its tokenizer config too.
        for name in (*ST_CONFIG_FILES, *(["tokenizer_config.json"] if max_seq_length is not None else [])):
            shutil.copy(Path(scratch) / name, output_dir / name)
    logger.info("Exported the sentence-transformers model (custom code) to %s", output_dir)
    return output_dir


def sentence_transformers_prompts(query_prompt: str | None, document_prompt: str | None) -> dict[str, str] | None:
    """The ``prompts`` of a sentence-transformers export: ``query`` and ``document`` where set, else None."""
    prompts = {name: text for name, text in (("query", query_prompt), ("document", document_prompt)) if text}
    return prompts or None


def export_plain(
    model: AutoMLMModel | AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    max_seq_length: int | None = None,
    prompts: dict[str, str] | None = None,
) -> Path:
    """Save the encoder as its stock architecture plus sentence-transformers pooling: no custom code needed.

    ``SentenceTransformer(dir)`` gives the same embeddings as the Auto-MLM model, and
    ``AutoModel.from_pretrained(dir)`` loads the stock encoder (e.g. `BertModel`), for teams that do not allow
    `trust_remote_code`. `prompts` as in `export_sentence_transformers`.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    encoder_model = _sentence_encoder(model)
    output_dir = Path(output_dir)
    with tempfile.TemporaryDirectory() as scratch:
        encoder_model.encoder.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        transformer = Transformer(scratch, max_seq_length=max_seq_length)
        modules = [transformer, Pooling(encoder_model.config.hidden_size, pooling_mode=encoder_model.config.pooling)]
        if encoder_model.config.normalize_embeddings:
            modules.append(Normalize())
        SentenceTransformer(modules=modules, similarity_fn_name="cosine", prompts=prompts).save(
            str(output_dir), create_model_card=False
        )
    logger.info("Exported the plain sentence-transformers model (no custom code) to %s", output_dir)
    return output_dir


# ----------------------------------------------------------------------------------------------------------------
# The exports of a run
# ----------------------------------------------------------------------------------------------------------------
def summarize(run: Run) -> dict[str, Any]:
    """The run summary: hardware, time, throughput, the last value of each loss, the best step, the history."""
    state, final = run.state, {}
    for record in reversed(state.history):
        for key in (*logged_keys(), "anchor_loss"):  # the model's terms and the one the loop adds
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


def export_run(run: Run, summary: dict[str, Any], model: AutoMLMForPreTraining) -> None:
    """Write the Hub-ready folder `final/` (and `final-plain/`), each with its model card.

    Each is written beside the old one and renamed into place: a write that fails (a full disk) leaves the previous
    export as it was.
    """
    args, state, output_dir, max_seq_length = run.args, run.state, run.output_dir, run.data_args.max_seq_length
    best_dir = output_dir / "best"
    if args.load_best_model_at_end and state.best_step is not None and best_dir.is_dir():
        logger.info("Exporting the best dev checkpoint (step %d, %s)", state.best_step, state.best_metric)
        model = AutoMLMForPreTraining.from_pretrained(best_dir)
        shutil.copy(best_dir / "eval_results.json", output_dir / "eval_results.json")
    model = model.float().eval()
    prompts = sentence_transformers_prompts(run.data_args.query_prompt, run.data_args.document_prompt)
    model_id = args.hub_model_id or output_dir.resolve().name
    run_files = {
        "training_config.json": json.dumps(run.settings, indent=2),
        "training_metrics.json": json.dumps(summary, indent=2),
        "data_stats.json": json.dumps(run.data_stats, indent=2, ensure_ascii=False),
    }
    source = backbone_source(run.backbone)  # where the starting weights came from, for the model card
    plain_id = None
    if args.export_plain:
        with written_beside(output_dir / "final-plain") as plain_dir:
            export_plain(model, run.tokenizer, plain_dir, max_seq_length=max_seq_length, prompts=prompts)
            _write_run_files(plain_dir, run_files, source)
            generate_model_card(plain_dir, model_id=f"{model_id}-plain")
        plain_id = f"{model_id}-plain" if args.hub_model_id else "../final-plain"
    with written_beside(output_dir / "final") as final_dir:
        export_sentence_transformers(model, run.tokenizer, final_dir, max_seq_length=max_seq_length, prompts=prompts)
        _write_run_files(final_dir, run_files, source)
        for name in ("eval_results.json", HEAD_SOURCE_FILE):
            if (output_dir / name).is_file():
                shutil.copy(output_dir / name, final_dir / name)
        generate_model_card(final_dir, model_id=model_id, plain_repo_id=plain_id)
    logger.info("Exported to %s", output_dir / "final")


def _write_run_files(folder: Path, files: dict[str, str], source: Path | None) -> None:
    """The run's settings, summary and data statistics, and the backbone's provenance file, into an export."""
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    if source is not None:
        shutil.copy(source, folder / source.name)


@contextlib.contextmanager
def written_beside(target: Path) -> Iterator[Path]:
    """A scratch folder next to `target` that replaces it once the block ends without error.

    A failed write (a full disk, an interrupted process) leaves `target` as it was and removes the scratch folder.
    The swap is two renames on one file system; a process killed between them leaves the previous folder as `.old`,
    which the next call puts back before anything else.
    """
    scratch = target.with_name(f".{target.name}.partial")
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)  # a swap interrupted between its two renames
    for leftover in (scratch, old):
        shutil.rmtree(leftover, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(scratch, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
    backbone = resolve_backbone(model_args.backbone)
    torch.manual_seed(seed)
    model, tokenizer = build_model(
        model_args, data_args, texts, tokenizer_dir, train_tokenizer=train_tokenizer, backbone=backbone
    )
    fill_prompts_from_backbone(backbone, data_args)
    prompts = sentence_transformers_prompts(data_args.query_prompt, data_args.document_prompt)
    return export_sentence_transformers(model.eval(), tokenizer, output_dir, data_args.max_seq_length, prompts=prompts)


def remove_training_state(output_dir: Path, *, keep_checkpoints: bool) -> None:
    """Once the exports are written, drop what only a run in progress needs: `best/` (the export is its copy) and,
    unless `keep_checkpoints`, the checkpoints with their optimizer state (the bulk of the folder)."""
    shutil.rmtree(output_dir / "best", ignore_errors=True)
    if not keep_checkpoints:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
