"""The model card of an exported Auto-MLM folder: data read from the folder's files, rendered from a Jinja template.

The generator reads only files (``config.json``, ``training_config.json``, ``training_metrics.json``,
``data_stats.json``, ``eval_results.json``, the sentence-transformers and tokenizer configs and the safetensors
header), so it works on any export, including one written by hand with ``save_pretrained``. A section whose file is
absent is left out; no number is ever filled in that the files do not hold.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open

from modeling_automlm import modeling_automlm as modeling
from modeling_automlm.configuration_automlm import AutoMLMConfig
from offline_backbones import SOURCE_FILE as BACKBONE_SOURCE_FILE

from .curves import plot_training_curves
from .hub import code_files
from .metadata import hub_language_codes, is_hub_model_id, model_index_results
from .tables import (
    comparison_tables,
    data_table,
    evaluation_tables,
    is_number,
    objective_table,
    settings_tables,
    training_table,
)

logger = logging.getLogger(__name__)

HEAD_SOURCE_FILE = "auto_mlm_head_source.json"
"""Provenance of a pretrained Auto-MLM head, written by the trainer next to the weights it started."""
HEAD_PROBE_KEYS = (
    "auto_mlm_heldout_accuracy",
    "auto_mlm_heldout_accuracy_other_vector",
    "auto_mlm_heldout_vector_share",
)
"""What the trainer's held-out probe of the Auto-MLM head records (see `training.head.probe_head`)."""

TEMPLATE_NAME = "model_card.jinja"
CURVES_FILE = "training_curves.png"
README_FILE = "README.md"
DEFAULT_LICENSE = "apache-2.0"

PAPER_TITLE = "Auto-MLM: Improved Contrastive Learning for Self-supervised Multi-lingual Knowledge Retrieval"
PAPER_URL = "https://arxiv.org/abs/2203.16187"
CITATION = """\
@article{xu2022automlm,
  title         = {Auto-MLM: Improved Contrastive Learning for Self-supervised Multi-lingual Knowledge Retrieval},
  author        = {Xu, Wenshen and Maimaiti, Mieradilijiang and Zheng, Yuanhang and Tang, Xin and Zhang, Ji},
  journal       = {arXiv preprint arXiv:2203.16187},
  year          = {2022},
  eprint        = {2203.16187},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL},
  url           = {https://arxiv.org/abs/2203.16187}
}"""

# A corpus smaller than this, trained from scratch, makes a demonstration model, not a production retriever.
SMALL_CORPUS_SENTENCES = 1_000_000


# ----------------------------------------------------------------------------------------------------------------
# Reading the folder
# ----------------------------------------------------------------------------------------------------------------
def count_parameters(weights_file: Path) -> dict[str, int]:
    """Count parameters per top-level module from a safetensors file, without loading any tensor.

    Args:
        weights_file: a ``.safetensors`` file.

    Returns:
        ``{top-level module name: number of parameters}``, e.g. ``{"automlm": 1_200_000, "auto_mlm_head": 90_000}``.
    """
    counts: dict[str, int] = {}
    with safe_open(weights_file, framework="pt") as weights:
        for name in weights.keys():  # noqa: SIM118 (a safetensors handle is not a mapping)
            module = name.split(".")[0]
            counts[module] = counts.get(module, 0) + math.prod(weights.get_slice(name).get_shape())
    return counts


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it and regenerate the card.") from error


# ----------------------------------------------------------------------------------------------------------------
# The card data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class AutoMLMModelCardData:
    """Everything the model card shows, read from an export folder by [`AutoMLMModelCardData.from_folder`].

    The raw file contents are kept as they are; the properties derive the metadata from them, and
    `template_values` everything the template reads (the tables are built by `model_card.tables`).

    Args:
        folder: the export folder.
        model_id: the id the usage examples load (``ORG/NAME`` on the Hub); defaults to the folder's name.
        model_name: the card's title and the `model-index` name; defaults to `model_id`.
        license: license identifier for the metadata (a Hub license id such as ``apache-2.0``).
        plain_repo_id: Hub id or path of the stock-architecture copy (no custom code), if there is one.
        config: ``config.json``.
        training_config: ``training_config.json`` (sections ``model``, ``data``, ``training``).
        training_metrics: ``training_metrics.json``.
        data_stats: ``data_stats.json``.
        eval_results: ``eval_results.json`` (a list of results).
        sentence_transformers_config: ``config_sentence_transformers.json``.
        sentence_bert_config: ``sentence_bert_config.json``.
        tokenizer_config: ``tokenizer_config.json``.
        modules: ``modules.json`` (the sentence-transformers modules).
        pooling_config: the config of the sentence-transformers Pooling module (plain export).
        parameter_counts: parameters per top-level module, from the safetensors header.
        backbone_source: ``automlm_backbone_source.json``: where converted starting weights came from (e.g. a
            dequantised 4-bit copy of a Hub model, see `offline_backbones`), with their licences.
    """

    folder: Path
    model_id: str
    model_name: str
    license: str = DEFAULT_LICENSE
    plain_repo_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] | None = None
    training_metrics: dict[str, Any] | None = None
    data_stats: dict[str, Any] | None = None
    eval_results: list[dict[str, Any]] = field(default_factory=list)
    sentence_transformers_config: dict[str, Any] | None = None
    sentence_bert_config: dict[str, Any] | None = None
    tokenizer_config: dict[str, Any] | None = None
    modules: list[dict[str, Any]] = field(default_factory=list)
    pooling_config: dict[str, Any] | None = None
    parameter_counts: dict[str, int] = field(default_factory=dict)
    backbone_source: dict[str, Any] | None = None
    head_source: dict[str, Any] | None = None

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        model_id: str | None = None,
        model_name: str | None = None,
        license: str = DEFAULT_LICENSE,
        plain_repo_id: str | None = None,
    ) -> AutoMLMModelCardData:
        """Read the card data from an export folder.

        Args:
            folder: the export folder; it must hold ``config.json``.
            model_id: the id the usage examples load; defaults to the folder's name.
            model_name: the card's title; defaults to `model_id`.
            license: license identifier for the metadata.
            plain_repo_id: Hub id or path of the plain export, shown as the no-custom-code option.

        Raises:
            FileNotFoundError: the folder or its ``config.json`` does not exist.
            ValueError: one of the JSON files is not valid JSON.
        """
        folder = Path(folder)
        if not folder.is_dir():
            state = "is a file" if folder.exists() else "does not exist"
            raise FileNotFoundError(f"{folder} {state}: pass the export folder (the one holding config.json).")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder} has no config.json: pass the folder written by the export (or by `save_pretrained`)."
            )
        eval_results = _read_json(folder / "eval_results.json") or []
        if isinstance(eval_results, dict):  # a single result written without the list
            eval_results = [eval_results]
        weights = folder / "model.safetensors"
        model_id = model_id or folder.resolve().name
        modules = [module for module in _read_json(folder / "modules.json") or [] if isinstance(module, dict)]
        pooling = [module for module in modules if str(module.get("type", "")).endswith("Pooling")]
        pooling_config = _read_json(folder / pooling[0].get("path", "") / "config.json") if pooling else None
        return cls(
            folder=folder,
            model_id=model_id,
            model_name=model_name or model_id,
            license=license,
            plain_repo_id=plain_repo_id,
            config=_read_json(folder / "config.json"),
            training_config=_read_json(folder / "training_config.json"),
            training_metrics=_read_json(folder / "training_metrics.json"),
            data_stats=_read_json(folder / "data_stats.json"),
            eval_results=[entry for entry in eval_results if isinstance(entry, dict)],
            sentence_transformers_config=_read_json(folder / "config_sentence_transformers.json"),
            sentence_bert_config=_read_json(folder / "sentence_bert_config.json"),
            tokenizer_config=_read_json(folder / "tokenizer_config.json"),
            modules=modules,
            pooling_config=pooling_config,
            parameter_counts=count_parameters(weights) if weights.is_file() else {},
            backbone_source=_read_json(folder / BACKBONE_SOURCE_FILE),
            head_source=_read_json(folder / HEAD_SOURCE_FILE),
        )

    # --- what the model is ----------------------------------------------------------------------------------------
    @property
    def is_automlm(self) -> bool:
        """Whether ``config.json`` is an Auto-MLM config (rather than the plain stock-architecture export)."""
        return self.config.get("model_type") == "automlm"

    @property
    def is_custom_code(self) -> bool:
        """Whether loading needs ``trust_remote_code`` (the config maps auto classes to code files)."""
        return bool(self.config.get("auto_map"))

    @property
    def encoder_config(self) -> dict[str, Any]:
        """The backbone's config: ``encoder_config`` of an Auto-MLM config, the config itself otherwise."""
        return self.config.get("encoder_config") or self.config

    @property
    def embedding_dimension(self) -> int | None:
        encoder = self.encoder_config
        return encoder.get("hidden_size") or encoder.get("dim") or encoder.get("d_model")

    @property
    def pooling(self) -> str | None:
        """The pooling mode: the Auto-MLM config's, or the sentence-transformers Pooling module's."""
        if self.config.get("pooling"):
            return str(self.config["pooling"])
        pooling = self.pooling_config or {}
        if pooling.get("pooling_mode"):
            return str(pooling["pooling_mode"])
        modes = [
            key[len("pooling_mode_") :] for key, value in pooling.items() if key.startswith("pooling_mode_") and value
        ]
        return ", ".join(modes) or None

    @property
    def normalized(self) -> bool:
        """Whether the embeddings are L2-normalised (by the model or by a Normalize module)."""
        has_module = any(str(module.get("type", "")).endswith("Normalize") for module in self.modules)
        return bool(self.config.get("normalize_embeddings")) or has_module

    @property
    def objective_details(self) -> str:
        """The temperature and masking rate of the objective, as a phrase (empty when not recorded)."""
        config, details = self.config, ""
        if is_number(config.get("contrastive_temperature")) and config.get("contrastive_weight"):
            details += f" (InfoNCE temperature {config['contrastive_temperature']:g})"
        if is_number(config.get("mask_probability")) and (config.get("auto_mlm_weight") or config.get("mlm_weight")):
            details += f", masking {config['mask_probability'] * 100:g}% of the tokens"
        return details

    @property
    def max_seq_length(self) -> int | None:
        length = (self.sentence_bert_config or {}).get("max_seq_length")
        if length is None:
            length = (self.tokenizer_config or {}).get("model_max_length")
        return length if is_number(length) and length < 1_000_000 else None

    @property
    def similarity_fn_name(self) -> str:
        return (self.sentence_transformers_config or {}).get("similarity_fn_name") or "cosine"

    @property
    def prompts(self) -> dict[str, str]:
        """The ``query`` and ``document`` prompts of ``config_sentence_transformers.json`` (E5-style), when saved."""
        prompts = (self.sentence_transformers_config or {}).get("prompts") or {}
        return {key: value for key in ("query", "document") if isinstance(value := prompts.get(key), str) and value}

    @property
    def backbone(self) -> str | None:
        """The ``backbone`` setting of the training config (``scratch``, a Hub id or a folder), if recorded."""
        backbone = ((self.training_config or {}).get("model") or {}).get("backbone")
        return str(backbone) if backbone is not None else None

    @property
    def trained_from_scratch(self) -> bool:
        return self.backbone == "scratch"

    @property
    def base_model(self) -> str | None:
        """The Hub id the model was initialised from; None from scratch, from a local folder or when unknown."""
        if self.backbone_source and is_hub_model_id(self.backbone_source.get("base_model")):
            return self.backbone_source["base_model"]
        return self.backbone if is_hub_model_id(self.backbone) else None

    @property
    def objective(self) -> list[tuple[float, str]]:
        """The weighted terms of the training loss, from the config, e.g. ``[(1.0, "CL"), (0.1, "Auto-MLM")]``, and
        the trainer's anchor to the starting encoder when the run used one (``training_config.json``)."""
        objective = [
            (self.config[term.weight_field], term.label)
            for term in modeling.LOSS_TERMS
            if is_number(self.config.get(term.weight_field)) and self.config[term.weight_field]
        ]
        anchor = ((self.training_config or {}).get("training") or {}).get("anchor_weight")
        if is_number(anchor) and anchor > 0:
            objective.append((anchor, "anchor (1 - cosine to the starting encoder)"))
        return objective

    @property
    def auto_mlm_head(self) -> dict[str, Any] | None:
        """The exported head's accuracy on the held-out probe (``training_metrics.json``), with the step it was
        measured at and the probe's size; None when the run did not measure it."""
        metrics = self.training_metrics or {}
        head = metrics.get("auto_mlm_head")
        if not isinstance(head, dict) or not all(is_number(head.get(key)) for key in HEAD_PROBE_KEYS):
            return None
        return {**head, "step": metrics.get("exported_step")}

    # --- data ---------------------------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        """Language tags of the training data, as recorded (``zh-Hant`` stays ``zh-Hant``)."""
        counts = (self.data_stats or {}).get("sentences_per_language")
        if counts:
            return list(counts)
        return list(((self.training_config or {}).get("data") or {}).get("languages") or [])

    @property
    def datasets(self) -> list[str]:
        """Hub ids of the training data sources (local files and package corpora have none)."""
        sources = (self.data_stats or {}).get("sources") or []
        names = [source.get("hub_id") for source in sources if isinstance(source, dict)]
        return list(dict.fromkeys(name for name in names if name))

    @property
    def total_sentences(self) -> int | None:
        stats = self.data_stats or {}
        if is_number(stats.get("total_sentences")):
            return stats["total_sentences"]
        counts = stats.get("sentences_per_language")
        return sum(counts.values()) if counts else None

    # --- metadata -----------------------------------------------------------------------------------------------
    @property
    def tags(self) -> list[str]:
        tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "automlm"]
        if len(hub_language_codes(self.languages)) > 1:
            tags.append("multilingual")
        if self.is_custom_code:
            tags.append("custom_code")
        return tags

    def own_eval_results(self) -> list[dict[str, Any]]:
        """The entries of ``eval_results.json`` that evaluate this model (not a baseline evaluated beside it).

        An entry is this model's when its ``model`` field names this folder (any path that resolves to it, relative
        to the working directory or to the folder), the folder's name, `model_id` or `model_name`; when the file
        evaluates a single model, every entry is. Others are shown only in the comparison tables.
        """
        names = {entry.get("model") for entry in self.eval_results}
        if len(names) <= 1:
            return list(self.eval_results)
        aliases = {self.folder.resolve().name, self.model_id, self.model_name, str(self.folder)}

        def is_own(model: Any) -> bool:
            if not isinstance(model, str):
                return False
            if model in aliases:
                return True
            for base in (Path.cwd(), self.folder):
                candidate = (base / model).expanduser()
                if candidate.exists() and candidate.resolve() == self.folder.resolve():
                    return True
            return False

        own = [entry for entry in self.eval_results if is_own(entry.get("model"))]
        if not own:
            logger.warning(
                "eval_results.json evaluates %s, none of which is this folder (%s): the card shows them as a "
                "comparison and its metadata carries no evaluation results.",
                sorted(str(name) for name in names),
                self.folder,
            )
        return own

    def to_card_data(self) -> ModelCardData:
        """The YAML metadata of the card."""
        eval_results = model_index_results(self.own_eval_results())
        return ModelCardData(
            language=hub_language_codes(self.languages) or None,
            license=self.license,
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            tags=self.tags,
            base_model=self.base_model,
            datasets=self.datasets or None,
            model_name=self.model_name if eval_results else None,
            eval_results=eval_results or None,
        )

    @property
    def history(self) -> list[dict[str, Any]]:
        return [entry for entry in (self.training_metrics or {}).get("history") or [] if isinstance(entry, dict)]

    def framework_versions(self) -> tuple[dict[str, str], bool]:
        """Library versions recorded in the export; the installed ones when it records none.

        Returns:
            ``(versions, recorded)``: `recorded` is False when the versions are the installed ones.
        """
        versions = {}
        recorded = (self.sentence_transformers_config or {}).get("__version__") or {}
        for key, name in (("sentence_transformers", "Sentence Transformers"), ("transformers", "Transformers")):
            if recorded.get(key):
                versions[name] = str(recorded[key])
        if "Transformers" not in versions and self.config.get("transformers_version"):
            versions["Transformers"] = str(self.config["transformers_version"])
        if recorded.get("pytorch"):
            versions["PyTorch"] = str(recorded["pytorch"])
        if versions:
            return versions, True
        for package, name in (("sentence-transformers", "Sentence Transformers"), ("transformers", "Transformers")):
            try:
                versions[name] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                continue
        return versions, False

    def parameters_summary(self) -> str | None:
        if not self.parameter_counts:
            return None
        total = sum(self.parameter_counts.values())
        encoder = self.parameter_counts.get("automlm")
        if encoder is None or encoder == total:
            return f"{total:,}"
        return (
            f"{encoder:,} in the sentence encoder, {total - encoder:,} in the pretraining heads (unused at inference)"
        )

    def limitations(self) -> list[str]:
        """Limitations that follow from what the files record."""
        notes = []
        total = self.total_sentences
        if self.trained_from_scratch:
            size = f" on {total:,} sentences" if total is not None else ""
            small = total is not None and total < SMALL_CORPUS_SENTENCES
            notes.append(
                f"This model was trained from scratch{size}"
                + (", a small corpus" if small else "")
                + ": it is a demonstration of the method and of this package, not a production retriever. For real "
                "use, start from a pretrained multilingual encoder (e.g. `--backbone xlm-roberta-base`) and train on "
                "in-domain text."
            )
        if self.languages:
            notes.append(
                f"It saw only the {len(self.languages)} language(s) listed above; quality on other languages and "
                "on scripts missing from the tokenizer's vocabulary is unknown."
            )
        if not self.eval_results:
            notes.append("No evaluation results were recorded for this export: measure it on your own data first.")
        if self.max_seq_length:
            notes.append(f"Inputs longer than {self.max_seq_length} tokens are truncated.")
        notes.append(
            "The training objective is self-supervised: sentences close in the embedding space share words and "
            "content, which is not always the relevance a retrieval task needs. Evaluate on your own queries."
        )
        return notes

    def template_values(self, *, curves_file: str | None) -> dict[str, Any]:
        """Every value the Jinja template reads, each under one name, besides the metadata."""
        versions, versions_recorded = self.framework_versions()
        stats = self.data_stats or {}
        encoder = self.encoder_config
        objective = objective_table(self.config) if self.is_automlm else None
        # The objective's fields are in the objective table already: the settings tables leave them out.
        shown = frozenset(self.config) & frozenset(spec.name for spec in AutoMLMConfig.objective_fields())
        own_results = self.own_eval_results()
        return {
            "model_id": self.model_id,
            "model_name": self.model_name,
            "license": self.license,
            "is_automlm": self.is_automlm,
            "is_custom_code": self.is_custom_code,
            "code_files": code_files(self.folder, self.config) if self.is_custom_code else [],
            "plain_repo_id": self.plain_repo_id,
            "backbone": self.backbone,
            "base_model": self.base_model,
            "backbone_source": self.backbone_source,
            "trained_from_scratch": self.trained_from_scratch,
            "encoder_type": encoder.get("model_type"),
            "num_layers": encoder.get("num_hidden_layers") or encoder.get("n_layers"),
            "vocab_size": encoder.get("vocab_size"),
            "dimension": self.embedding_dimension,
            "parameters": self.parameters_summary(),
            "pooling": self.pooling,
            "normalized": self.normalized,
            "similarity_fn_name": self.similarity_fn_name,
            "prompts": self.prompts,
            "max_seq_length": self.max_seq_length,
            "objective": " + ".join(f"{weight:g} * {name}" for weight, name in self.objective),
            "objective_details": self.objective_details,
            "auto_mlm_head": self.auto_mlm_head,
            "head_source": self.head_source,
            "objective_table": objective,
            "languages": self.languages,
            "total_sentences": self.total_sentences,
            "skipped_blank_lines": stats.get("skipped_blank_lines"),
            "duplicates_removed": stats.get("duplicates_removed"),
            # Every key the template reads, so that a source recorded without a url or licence still renders.
            "sources": [
                {"url": None, "license": None, **source}
                for source in stats.get("sources") or []
                if isinstance(source, dict) and source.get("name")
            ],
            "data_table": data_table(stats.get("sentences_per_language") or {}),
            "settings_tables": settings_tables(self.training_config or {}, skip=shown if objective else frozenset()),
            "training_table": training_table(self.training_metrics or {}),
            "curves_file": curves_file,
            "evaluation_tables": evaluation_tables(own_results or self.eval_results),
            "comparison_tables": comparison_tables(self.eval_results, own_results),
            "limitations": self.limitations(),
            "framework_versions": versions,
            "versions_recorded": versions_recorded,
            "citation": CITATION,
            "head_source_file": HEAD_SOURCE_FILE,
            "paper_title": PAPER_TITLE,
            "paper_url": PAPER_URL,
        }


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def render_model_card(data: AutoMLMModelCardData, *, curves_file: str | None = None) -> ModelCard:
    """Render the card of `data` from the packaged Jinja template.

    Args:
        data: the card data.
        curves_file: name of the training-curves PNG next to the card, or None to show no image.

    Returns:
        The `huggingface_hub.ModelCard` (its ``content`` is the README text).
    """
    template = resources.files("model_card").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")
    # `ModelCard.from_template` renders with a bare `jinja2.Template`; trimmed blocks keep the template readable and
    # StrictUndefined turns a misspelt variable into an error instead of an empty string.
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    card_data = data.to_card_data()
    text = environment.from_string(template).render(
        card_data=card_data.to_yaml(), **data.template_values(curves_file=curves_file)
    )
    return ModelCard(text)


def generate_model_card(
    folder: str | Path,
    *,
    plain_repo_id: str | None = None,
    write: bool = True,
    model_id: str | None = None,
    model_name: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> str:
    """Generate the ``README.md`` of an export folder (and its training-curves PNG).

    Reads only the folder's files, so it works on a fresh export, on an old folder (``automlm-card DIR``) and on a
    folder written by hand; sections without data are left out.

    Args:
        folder: the export folder.
        plain_repo_id: Hub id or path of the plain export (stock architecture, no custom code), shown in the usage.
        write: write ``README.md`` and ``training_curves.png`` into the folder; False only returns the text.
        model_id: the id the usage examples load (``ORG/NAME``); defaults to the folder's name.
        model_name: the card's title; defaults to `model_id`.
        license: license identifier for the metadata.

    Returns:
        The card's text (YAML metadata and Markdown).
    """
    data = AutoMLMModelCardData.from_folder(
        folder, model_id=model_id, model_name=model_name, license=license, plain_repo_id=plain_repo_id
    )
    curves_file = None
    if data.history:
        if write:
            written = plot_training_curves(data.history, data.folder / CURVES_FILE)
            curves_file = written.name if written else None
        elif (data.folder / CURVES_FILE).is_file():
            curves_file = CURVES_FILE
    card = render_model_card(data, curves_file=curves_file)
    if write:
        card.save(data.folder / README_FILE)
        logger.info("Wrote the model card to %s", data.folder / README_FILE)
    return card.content
