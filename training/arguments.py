"""Typed settings of `automlm-train`, parsed from YAML/JSON files and the command line with `HfArgumentParser`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser

from modeling_automlm.configuration_automlm import AutoMLMConfig

from . import cli

EMBEDDED_CORPUS = "chatterbot-corpus"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def with_objective_fields(cls: type) -> type:
    """Add one setting per objective field of [`AutoMLMConfig`] to `cls` (before `@dataclass` runs): the name, type,
    default and help text are the config's own (its ``__init__`` signature and docstring), so they are written once.
    A ``Literal`` type becomes the argument's choices."""
    for spec in AutoMLMConfig.objective_fields():
        cls.__annotations__[spec.name] = spec.type
        # argparse formats help strings with `%`: keep the config's "80%" literal.
        setattr(cls, spec.name, field(default=spec.default, metadata={"help": spec.help.replace("%", "%%")}))
    return cls


@dataclass
@with_objective_fields
class ModelArguments:
    """What to train: the backbone and the Auto-MLM objective (every objective field of `AutoMLMConfig`, such as
    `pooling`, `auto_mlm_weight` or `head_fusion`, is a setting of the same name, added by `with_objective_fields`).
    """

    backbone: str = field(
        default="intfloat/multilingual-e5-small",
        metadata={
            "help": "A Hub id or folder of an encoder (e.g. xlm-roberta-base; intfloat/multilingual-e5-small is "
            "built from bundled weights when the Hub is out of reach, with the offline-backbone extra), a folder of "
            "an Auto-MLM model to continue from, or 'scratch' for a new encoder of the shape below."
        },
    )
    model_type: str = field(default="bert", metadata={"help": "Architecture of a model trained from scratch."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of a model trained from scratch."})
    hidden_size: int = field(default=256, metadata={"help": "Hidden size of a model trained from scratch."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of a model trained from scratch."})
    intermediate_size: int = field(default=1024, metadata={"help": "Feed-forward size of a model from scratch."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout of a model trained from scratch."})
    tokenizer_vocab_size: int = field(
        default=16000, metadata={"help": "Vocabulary of the WordPiece tokenizer trained for a model from scratch."}
    )

    def config_fields(self) -> dict[str, Any]:
        """The `AutoMLMConfig` fields set here."""
        return {spec.name: getattr(self, spec.name) for spec in AutoMLMConfig.objective_fields()}

    def __post_init__(self) -> None:
        _require(self.backbone.strip() != "", "`backbone` is empty: use 'scratch' or a model id or folder.")
        for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
            _require(getattr(self, name) > 0, f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
            f"({self.num_attention_heads}).",
        )
        _require(self.tokenizer_vocab_size >= 100, "`tokenizer_vocab_size` must be at least 100.")
        _require(0.0 <= self.hidden_dropout_prob < 1.0, "`hidden_dropout_prob` must be in [0, 1).")
        # Validate the objective now, before any data is read (AutoMLMConfig names the bad field).
        AutoMLMConfig(**self.config_fields())


@dataclass
class DataArguments:
    """Where the unlabelled text comes from and how it is sampled."""

    train_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Text sources: .txt (one sentence per line), .jsonl, .csv, .tsv, .parquet files, folders of "
            f"those, or '{EMBEDDED_CORPUS}' (the multilingual utterances shipped by that package, less those of "
            "the held-out chatterbot-qa pairs; the default when neither this nor `dataset_name` is set, and then "
            "`dev_data` defaults to that set's dev split)."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A dataset on the Hub (or a local folder) read with `datasets.load_dataset`."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of `dataset_name`."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_name`."})
    streaming: bool = field(default=False, metadata={"help": "Stream `dataset_name` instead of loading it."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text in tabular files."})
    language_column: str | None = field(
        default=None, metadata={"help": "Column holding a language code; default: the file name (e.g. de.txt)."}
    )
    max_seq_length: int = field(default=32, metadata={"help": "Longer sentences are truncated to this many tokens."})
    language_sampling_alpha: float = field(
        default=1.0,
        metadata={"help": "Language-balanced sampling p_l ~ n_l^alpha (XLM-R uses 0.3); 1.0 keeps the corpus as is."},
    )
    deduplicate: bool = field(default=True, metadata={"help": "Drop exact duplicate sentences of a language."})
    max_train_sentences: int | None = field(default=None, metadata={"help": "Keep at most this many sentences."})
    dev_data: str | None = field(
        default=None,
        metadata={
            "help": "BEIR folder (one subfolder per language) for the periodic dev evaluation, or "
            f"'{EMBEDDED_CORPUS}' for the dev split of the chatterbot-qa pairs (built once from that package)."
        },
    )
    query_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Text put before queries at inference (E5: 'query: '), saved as the export's `query` prompt "
            "for `encode_query`, and the first view's prefix of `contrastive_views` prompts/crop. Default: the "
            "backbone's own `query` prompt (config_sentence_transformers.json), else none."
        },
    )
    document_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Text put before documents at inference (E5: 'passage: '), saved as the `document` prompt for "
            "`encode_document`, and the second view's prefix of `contrastive_views` prompts/crop. Default: the "
            "backbone's own `document` (or `passage`) prompt, else none."
        },
    )
    text_prefix: str | None = field(
        default=None,
        metadata={
            "help": "Text put before every training sentence with `contrastive_views: dropout`. Default: the query "
            "prompt (E5 uses 'query: ' for symmetric tasks)."
        },
    )
    contrastive_views: Literal["dropout", "prompts", "crop"] = field(
        default="dropout",
        metadata={
            "help": "The two views of a sentence: `dropout` (the same text twice, SimCSE), `prompts` (query prompt "
            "+ text vs document prompt + text), `crop` (query prompt + a random span vs document prompt + text)."
        },
    )
    crop_min_ratio: float = field(default=0.1, metadata={"help": "Shortest `crop` span, as a share of the tokens."})
    crop_max_ratio: float = field(default=0.5, metadata={"help": "Longest `crop` span, as a share of the tokens."})

    def __post_init__(self) -> None:
        if not self.train_files and self.dataset_name is None:
            self.train_files = [EMBEDDED_CORPUS]
        if self.dev_data is None and self.train_files == [EMBEDDED_CORPUS] and self.dataset_name is None:
            self.dev_data = EMBEDDED_CORPUS  # the embedded corpus comes with its own dev split
        _require(self.max_seq_length >= 8, f"`max_seq_length` must be at least 8, got {self.max_seq_length}.")
        _require(
            0.0 < self.language_sampling_alpha <= 1.0,
            f"`language_sampling_alpha` must be in (0, 1], got {self.language_sampling_alpha}.",
        )
        _require(not self.streaming or self.dataset_name is not None, "`streaming` needs `dataset_name`.")
        if self.dev_data is not None and self.dev_data != EMBEDDED_CORPUS:
            _require(
                Path(self.dev_data).exists(),
                f"`dev_data` folder {self.dev_data} does not exist: pass a BEIR folder, or '{EMBEDDED_CORPUS}' for "
                "the dev split of the chatterbot-qa pairs.",
            )
        _require(
            0.0 < self.crop_min_ratio <= self.crop_max_ratio <= 1.0,
            f"`crop_min_ratio` and `crop_max_ratio` must satisfy 0 < min <= max <= 1, got {self.crop_min_ratio} and "
            f"{self.crop_max_ratio}.",
        )


@dataclass
class PretrainingArguments:
    """How to train: optimisation, precision, checkpoints, logging and evaluation."""

    output_dir: str = field(default="outputs/automlm-default", metadata={"help": "Where everything is written."})
    seed: int = field(default=42, metadata={"help": "Random seed (data order, masks, dropout, init)."})
    max_steps: int = field(default=80, metadata={"help": "Optimizer steps; 0 means use `num_train_epochs`."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs, when `max_steps` is 0."})
    max_time_s: float | None = field(
        default=None, metadata={"help": "Stop cleanly (and export) after this many seconds of training."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sentences per device and micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(
        default=2.5e-6,
        metadata={
            "help": "Peak learning rate (AdamW). The default suits adapting a pretrained encoder (the best rate on "
            "two dev splits, docs/RESULTS.md 'The learning rate, chosen on two dev splits'); training from scratch "
            "needs far more, e.g. 3e-4."
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables."})
    lr_scheduler_type: Literal["linear", "cosine", "constant_with_warmup"] = field(
        default="linear", metadata={"help": "Decay after warmup."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up."})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="no", metadata={"help": "Autocast precision (bf16 on GPUs; it is slower on most CPUs)."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    gradient_cache_chunk_size: int | None = field(
        default=None, metadata={"help": "Compute the contrastive batch in chunks of this size (GradCache)."}
    )
    max_nonfinite_steps: int = field(
        default=10, metadata={"help": "Skip steps with a non-finite loss; stop after this many in total."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimizer steps."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every N optimizer steps; 0 disables."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest removed first)."})
    resume: bool = field(default=False, metadata={"help": "Continue from the latest complete checkpoint."})
    keep_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "Keep the checkpoints (with their optimizer state) once the run is complete and exported; by "
            "default they are removed then (they stay while the run can still be resumed)."
        },
    )
    eval_steps: int = field(
        default=40,
        metadata={"help": "Dev evaluation at step 0 and every N steps (when `dev_data` is set); 0: off."},
    )
    metric_for_best_model: str = field(default="ndcg@10", metadata={"help": "Dev metric that picks the best step."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Export the best dev checkpoint."})
    report_to: Literal["tensorboard", "none"] = field(default="tensorboard", metadata={"help": "Trackers."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads per process."})
    cpu: bool = field(default=False, metadata={"help": "Train on CPU even if a GPU is present."})
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the word embedding table fixed (96 M of multilingual-e5-small's 118 M parameters)."},
    )
    head_warmup_steps: int = field(
        default=0, metadata={"help": "During the first N steps only the Auto-MLM / MLM heads are updated."}
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the Auto-MLM / MLM heads, which start from random weights while the "
            "encoder is pretrained; default: `learning_rate`. Same warm-up and schedule."
        },
    )
    head_pretraining_steps: int = field(
        default=1000,
        metadata={
            "help": "Start the Auto-MLM head from one trained for this many steps on the training text with the "
            "encoder frozen (sentence vectors computed once; cached beside the offline backbones and reused by every "
            "run with the same encoder, text and head); 0: a random head."
        },
    )
    head_probe_sentences: int = field(
        default=512,
        metadata={
            "help": "Held-out sentences (queries of `dev_data`) on which every dev evaluation measures how many "
            "masked tokens the Auto-MLM head rebuilds, with each sentence's own vector and with another's; 0: off."
        },
    )
    log_gradient_norms: bool = field(
        default=False,
        metadata={
            "help": "At each logging step, also log the norm of each loss term's gradient at the encoder's layers "
            "(grad_norm_cl, grad_norm_auto_mlm, grad_ratio_auto_mlm): one more backward pass per term there."
        },
    )
    anchor_weight: float = field(
        default=0.0,
        metadata={
            "help": "Hold the sentence embeddings near the starting encoder's: add anchor_weight x mean(1 - cosine) "
            "between each training sentence's embedding (not explicit positives') and a frozen copy of the encoder "
            "as it started (no dropout); 0: off."
        },
    )
    export_plain: bool = field(default=True, metadata={"help": "Also export a stock-architecture copy (no code)."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "The Hub repo the export is meant for (ORG/NAME), named in its model card."}
    )

    def __post_init__(self) -> None:
        _require(
            not Path(self.output_dir).exists() or Path(self.output_dir).is_dir(),
            f"`output_dir` {self.output_dir} is a file, not a folder: choose another --output_dir (the file was left "
            "as it is).",
        )
        _require(self.max_steps >= 0, "`max_steps` must be >= 0.")
        _require(self.max_steps > 0 or self.num_train_epochs > 0, "Set `max_steps` or `num_train_epochs` > 0.")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
            _require(getattr(self, name) >= 1, f"`{name}` must be >= 1, got {getattr(self, name)}.")
        _require(self.learning_rate > 0, f"`learning_rate` must be positive, got {self.learning_rate}.")
        _require(0.0 <= self.warmup_ratio < 1.0, f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        _require(self.save_total_limit >= 1, "`save_total_limit` must be >= 1.")
        _require(self.max_nonfinite_steps >= 0, "`max_nonfinite_steps` must be >= 0.")
        _require(self.head_warmup_steps >= 0, f"`head_warmup_steps` must be >= 0, got {self.head_warmup_steps}.")
        _require(
            self.head_learning_rate is None or self.head_learning_rate > 0,
            f"`head_learning_rate` must be positive (or unset to use `learning_rate`), got {self.head_learning_rate}.",
        )
        _require(
            self.head_pretraining_steps >= 0,
            f"`head_pretraining_steps` must be >= 0 (0: a random head), got {self.head_pretraining_steps}.",
        )
        _require(
            self.head_probe_sentences >= 0,
            f"`head_probe_sentences` must be >= 0 (0: no probe), got {self.head_probe_sentences}.",
        )
        _require(self.anchor_weight >= 0, f"`anchor_weight` must be >= 0 (0 turns it off), got {self.anchor_weight}.")
        _require(
            not (self.anchor_weight > 0 and self.gradient_cache_chunk_size),
            "`anchor_weight` does not work with `gradient_cache_chunk_size` yet: unset `gradient_cache_chunk_size` "
            "or set `anchor_weight` to 0.",
        )
        _require(
            not (self.log_gradient_norms and self.gradient_cache_chunk_size),
            "`log_gradient_norms` does not work with `gradient_cache_chunk_size`: unset one of them.",
        )
        if self.gradient_cache_chunk_size is not None:
            _require(self.gradient_cache_chunk_size >= 1, "`gradient_cache_chunk_size` must be >= 1.")
            _require(
                self.mixed_precision != "fp16",
                "`gradient_cache_chunk_size` does not support fp16 loss scaling: use --mixed_precision bf16 or no.",
            )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, PretrainingArguments)
SECTIONS = {"model": ModelArguments, "data": DataArguments, "training": PretrainingArguments}


def _flatten(settings: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept flat files and files with `model:`, `data:`, `training:` sections; reject unknown keys."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SECTIONS and isinstance(value, dict):
            known = {f.name for f in fields(SECTIONS[key])}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"{source}: unknown setting(s) {unknown} in section `{key}`; known: {sorted(known)}.")
            flat.update(value)
        else:
            flat[key] = value
    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; run `automlm-train --help` for the list.")
    return flat


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a flat dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Settings file {path} not found; pass an existing YAML or JSON file to --config.")
    try:
        text = path.read_text(encoding="utf-8")
        settings = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else f" (line {getattr(error, 'lineno', '?')})"
        raise ValueError(
            f"{path}{line}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}; fix the file."
        ) from None
    except (PermissionError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path}: cannot be read ({type(error).__name__}); check its permissions and encoding."
        ) from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(settings).__name__}.")
    return _flatten(settings, str(path))


class HelpFormatter(cli.HelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """One spelling per option, the defaults shown, the example kept as written."""


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    """Parse `[--config FILE ...] [--field value ...]`: the files' values in order (a later file overrides an earlier
    one, e.g. a protocol file then a variant file), overridden by the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(
        ARGUMENT_CLASSES,
        prog="automlm-train",
        description="Self-supervised Auto-MLM pretraining: from unlabelled text to a Hub-ready sentence encoder.",
        epilog="Example:\n  automlm-train --config configs/default.yaml --output_dir outputs/my-run",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", type=str, action="append", help="YAML or JSON settings file (repeatable).")
    settings: dict[str, Any] = {}
    while "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
            raise ValueError("--config needs a file path.")
        settings.update(load_settings_file(argv[index + 1]))
        del argv[index : index + 2]
    parser.set_defaults(**settings)
    # The namespace of `--config` comes back as a fourth item.
    model_args, data_args, training_args, *_ = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


def settings_dict(
    model_args: ModelArguments, data_args: DataArguments, training_args: PretrainingArguments
) -> dict[str, dict[str, Any]]:
    """The settings as saved next to the model (`training_config.json`), one section per class."""
    return {"model": asdict(model_args), "data": asdict(data_args), "training": asdict(training_args)}
