"""Export a trained Auto-MLM model as Hub-ready sentence-transformers folders."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from modeling_automlm import AutoMLMForPreTraining, AutoMLMModel

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
        for name in ST_CONFIG_FILES:
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
