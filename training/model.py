"""The model a run trains and its tokenizer: the one place where the `--backbone` setting is resolved and loaded.

`resolve_backbone` turns the name into where it loads from (once per run); `build_model`, `fill_prompts_from_backbone`
and `backbone_source` take that resolved name.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase

from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from offline_backbones import SOURCE_FILE as BACKBONE_SOURCE_FILE
from offline_backbones.e5_small import ST_CONFIG_FILE

from .arguments import DataArguments, ModelArguments
from .tokenization import train_wordpiece_tokenizer

logger = logging.getLogger(__name__)

SCRATCH = "scratch"
BACKBONE_RESOLVERS = "automlm.backbone_resolvers"
_UNREACHABLE: set[str] = set()  # names the Hub did not answer for in this process: not probed twice

_HOW_TO_FIX = "pass an existing folder, a Hub id such as xlm-roberta-base, or 'scratch'"


def resolve_backbone(backbone: str) -> str:
    """Where to load `backbone` from: the name itself, or a local copy supplied by an installed resolver.

    A resolver is a function ``(name, *, hub_unreachable: bool) -> str`` registered in the entry-point group
    ``automlm.backbone_resolvers`` (the ``offline_backbones`` package registers one that builds
    multilingual-e5-small from bundled weights). Resolvers are asked first as they are (they swap the name when
    offline mode is set), then, if the name still cannot be loaded from the Hub or its cache, with
    ``hub_unreachable=True``. Without installed resolvers, for a local folder and for ``scratch`` the name comes
    back unchanged.
    """
    if backbone == SCRATCH:
        return backbone
    resolvers = [entry_point.load() for entry_point in entry_points(group=BACKBONE_RESOLVERS)]
    if not resolvers or Path(backbone).expanduser().exists():
        return backbone
    for resolver in resolvers:
        resolved = resolver(backbone, hub_unreachable=False)
        if resolved != backbone:
            return resolved
    try:
        if backbone not in _UNREACHABLE:
            AutoConfig.from_pretrained(backbone)
            return backbone
    except OSError:
        _UNREACHABLE.add(backbone)
    for resolver in resolvers:
        resolved = resolver(backbone, hub_unreachable=True)
        if resolved != backbone:
            logger.warning("%s cannot be reached on the Hub; using the local copy %s", backbone, resolved)
            return resolved
    return backbone


def build_model(
    model_args: ModelArguments,
    data_args: DataArguments,
    texts: list[str],
    tokenizer_dir: Path,
    *,
    train_tokenizer: bool,
    backbone: str,
) -> tuple[AutoMLMForPreTraining, PreTrainedTokenizerBase]:
    """The model these settings train, with the objective of `model_args`, and its tokenizer.

    ``--backbone`` is ``scratch`` (a new encoder of the configured shape with the run's own tokenizer, see
    [`build_tokenizer`]), the folder or Hub id of an encoder (its weights and tokenizer are used), or the folder or
    Hub id of an Auto-MLM model (training continues from it). `AutoMLMForPreTraining.from_backbone` builds all three.
    `backbone` is where `--backbone` loads from (`resolve_backbone`); errors name `--backbone` as the user spelled it.

    Raises:
        FileNotFoundError, ValueError: the backbone cannot be loaded; the message names it and the fix.
    """
    objective = model_args.config_fields()
    if model_args.backbone == SCRATCH:
        tokenizer = build_tokenizer(model_args, data_args, texts, tokenizer_dir, train_new=train_tokenizer)
        encoder_config = scratch_encoder_config(model_args, data_args, tokenizer)
        return AutoMLMForPreTraining.from_backbone(encoder_config, tokenizer, **objective), tokenizer
    with _clean_loading_errors(model_args.backbone):
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        return AutoMLMForPreTraining.from_backbone(backbone, tokenizer, **objective), tokenizer


def is_automlm_checkpoint(backbone: str) -> bool:
    """Whether `backbone` (a folder or a cached Hub id) is an Auto-MLM model, whose heads are already trained."""
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
    else:
        cached = try_to_load_from_cache(backbone, "config.json") if backbone != SCRATCH else None
        path = Path(cached) if isinstance(cached, str) else folder / "config.json"
    if not path.is_file():
        return False
    with contextlib.suppress(ValueError):
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") == AutoMLMConfig.model_type
    return False


def fill_prompts_from_backbone(backbone: str, data_args: DataArguments) -> None:
    """Set `query_prompt` / `document_prompt` left unset (None) to the backbone's own sentence-transformers prompts
    (``query`` and ``document`` or ``passage`` in its ``config_sentence_transformers.json``, as E5 has), and an unset
    `text_prefix` to the query prompt. A backbone without prompts, or from scratch, leaves them empty. `backbone` is
    the resolved name (`resolve_backbone`)."""
    prompts: dict[str, str] = {}
    if backbone != SCRATCH:
        with contextlib.suppress(OSError, ValueError):
            prompts = _sentence_transformers_prompts(backbone)
    if data_args.query_prompt is None:
        data_args.query_prompt = prompts.get("query", "")
    if data_args.document_prompt is None:
        data_args.document_prompt = prompts.get("document", prompts.get("passage", ""))
    if data_args.text_prefix is None:
        data_args.text_prefix = data_args.query_prompt


def _sentence_transformers_prompts(backbone: str) -> dict[str, str]:
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        path = folder / ST_CONFIG_FILE
    else:
        cached = try_to_load_from_cache(backbone, ST_CONFIG_FILE)
        path = Path(cached) if isinstance(cached, str) else folder / ST_CONFIG_FILE
    if not path.is_file():
        return {}
    prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}
    return {str(name): str(text) for name, text in prompts.items()}


def backbone_source(backbone: str) -> Path | None:
    """The file describing where a converted backbone's weights came from (e.g. a dequantised 4-bit copy), if any;
    `backbone` is the resolved name (`resolve_backbone`)."""
    if backbone == SCRATCH:
        return None
    source = Path(backbone).expanduser() / BACKBONE_SOURCE_FILE
    return source if source.is_file() else None


def build_tokenizer(
    model_args: ModelArguments, data_args: DataArguments, texts: list[str], run_tokenizer_dir: Path, *, train_new: bool
) -> PreTrainedTokenizerBase:
    """The tokenizer of a run from scratch: trained on `texts` when `train_new` (and saved in `run_tokenizer_dir`),
    else loaded from there.

    Training a tokenizer is not reproducible across processes (the trainer breaks ties in hash order), so every
    process of a run, and a resumed run, reads the one the main process trained.
    """
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


def scratch_encoder_config(
    model_args: ModelArguments, data_args: DataArguments, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedConfig:
    """The encoder config of a model from scratch: the shape of `model_args`, the vocabulary of `tokenizer`."""
    return AutoConfig.for_model(
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


@contextlib.contextmanager
def _clean_loading_errors(backbone: str) -> Iterator[None]:
    """Turn what loading `backbone` raises for a missing folder or an unreachable Hub id into one line naming the
    problem and the fix. Errors about the backbone itself (a decoder, a tokenizer without a mask token) pass."""
    folder = Path(backbone).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--backbone {backbone}: the folder holds no config.json, so no model; {_HOW_TO_FIX}.")
    if not folder.exists():
        try:
            validate_repo_id(backbone)
        except HFValidationError:
            raise FileNotFoundError(f"--backbone {backbone}: no such folder; {_HOW_TO_FIX}.") from None
    try:
        yield
    except OSError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        if folder.exists():
            raise ValueError(f"--backbone {backbone}: {first_line}; {_HOW_TO_FIX}.") from None
        if is_offline_mode():
            raise ValueError(
                f"--backbone {backbone}: not a local folder, and not in the local Hub cache (HF_HUB_OFFLINE=1 "
                f"forbids downloading it); download it once with network access, or {_HOW_TO_FIX}."
            ) from None
        raise ValueError(
            f"--backbone {backbone}: not a local folder, and the Hub says: {first_line}; {_HOW_TO_FIX}."
        ) from None
