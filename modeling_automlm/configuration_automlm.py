"""Configuration of the Auto-MLM sentence encoder (Xu et al., 2022).

This file ships next to the weights for ``trust_remote_code``: it may import only the standard library, ``torch``
and the public API of ``transformers``.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from transformers import AutoConfig, PreTrainedConfig

PoolingMode = Literal["mean", "cls", "max"]
MaskingScheme = Literal["random", "whole_word"]
MaskReplacement = Literal["bert", "mask"]
HeadFusion = Literal["prepend", "add", "concat"]
HeadInput = Literal["token_embeddings", "contextual"]

AUTO_MAP: dict[str, str] = {
    "AutoConfig": "configuration_automlm.AutoMLMConfig",
    "AutoModel": "modeling_automlm.AutoMLMModel",
    "AutoModelForPreTraining": "modeling_automlm.AutoMLMForPreTraining",
}

# Fields that describe the backbone and its tokenizer rather than the training objective: they are filled in when
# the model is built, never set by hand in a training run.
BACKBONE_FIELDS = ("encoder_config", "mask_token_id", "special_token_ids")


@dataclass(frozen=True)
class ConfigField:
    """One field of [`AutoMLMConfig`] as its ``__init__`` signature and its docstring declare it.

    The trainer's settings and the model card are derived from these, so each field's name, type, default, choices
    and description are written once, in `AutoMLMConfig`.
    """

    name: str
    type: Any
    default: Any
    help: str

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values of a ``Literal`` field, else None."""
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None

    @property
    def summary(self) -> str:
        """The first sentence of the description."""
        for match in re.finditer(r"\.(\s|$)", self.help):
            if not self.help[: match.start()].endswith(("e.g", "i.e")):
                return self.help[: match.start() + 1]
        return self.help


def _docstring_args(docstring: str) -> dict[str, str]:
    """``{name: description}`` from the ``Args:`` section of a transformers-style docstring."""
    lines = docstring.partition("Args:")[2].splitlines()
    entries: dict[str, list[str]] = {}
    for line in lines:
        header = re.match(r"^ {8}(\w+) \(.*\):\s*$", line)
        if header:
            entries[header.group(1)] = []
        elif line.startswith(" " * 12) and entries:
            entries[next(reversed(entries))].append(line.strip())
    return {name: re.sub(r"``(.+?)``", r"`\1`", " ".join(text)) for name, text in entries.items()}


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")


def _check_count(name: str, value: Any, note: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0{note}, got {value!r}.")


def _check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"`{name}` must be a number in {bracket}{low}, {high}], got {value!r}.")


class AutoMLMConfig(PreTrainedConfig):
    r"""Configuration of [`AutoMLMModel`] and [`AutoMLMForPreTraining`].

    The model composes any Hugging Face encoder (``encoder_config``, built with ``AutoModel.from_config``) with a
    pooling layer and, for pretraining, two light heads. Everything inference needs lives here, so ``config.json``
    alone rebuilds the model.

    The paper (Xu et al., 2022) publishes neither code nor the values below; where it gives no value the default is
    this project's choice, measured in ``docs/RESULTS.md``.

    Each field is declared once, here: `automlm-train`'s settings and the model card take the names, types, defaults
    and descriptions of the objective's fields from the signature of ``__init__`` and the entries below
    ([`AutoMLMConfig.objective_fields`]), so keep the ``name (`type`, ...):`` layout of each entry.

    Args:
        encoder_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the backbone encoder (BERT, XLM-R, DistilBERT, ModernBERT, ...). A dict needs a
            ``model_type`` key. Defaults to a ``bert`` config with the library's defaults.
        pooling (`str`, *optional*, defaults to `"mean"`):
            How token states become the sentence vector: ``"mean"`` (over non-padding tokens), ``"cls"`` (first
            token) or ``"max"``. Mean pooling is our choice: it is robust for models trained from scratch and the
            paper does not say which it used.
        normalize_embeddings (`bool`, *optional*, defaults to `True`):
            L2-normalise ``sentence_embedding`` so that a dot product is the cosine similarity.
        contrastive_weight (`float`, *optional*, defaults to 1.0):
            Weight of the contrastive (InfoNCE) loss. ``0`` gives the "Auto-MLM alone" baseline and skips the
            second dropout view.
        contrastive_temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature of InfoNCE (SimCSE's value; the paper gives none). Not called ``temperature``:
            that name is a generation parameter in transformers.
        gather_across_processes (`bool`, *optional*, defaults to `True`):
            In a multi-process run, use the sentences of every process as negatives (gathered with gradients).
            Every process must then see the same per-device batch size.
        auto_mlm_weight (`float`, *optional*, defaults to 0.1):
            The lambda of ``CL + lambda * Auto-MLM``. ``0`` gives SimCSE (CL alone). The paper gives no value.
        auto_mlm_gradient_share (`float`, *optional*):
            Caps the Auto-MLM term's gradient at the sentence vector at this share of the contrastive term's
            gradient there (L2 norms over the batch, or over each chunk with GradCache, in one backward pass); the
            head and the embedding rows it reads still get the term's whole gradient. Unset (the default), nothing
            is capped. Once CL has solved its in-batch task its gradient nearly vanishes while the Auto-MLM term's
            does not, and on a whole corpus the uncapped term then reshapes the encoder's layers and gives the gain
            back (docs/RESULTS.md, "The whole-corpus study"); the cap keeps the term from outweighing CL. Needs
            ``contrastive_weight`` > 0.
        mlm_weight (`float`, *optional*, defaults to 0.0):
            Weight of a plain MLM loss on the encoder's own contextual states of the masked sentence (the
            "CL + MLM" baseline). Costs one more encoder pass over the masked sentence, batched with the CL views.
        mask_probability (`float`, *optional*, defaults to 0.3):
            Probability that a token (or a word, with whole-word masking) is selected for prediction. Every
            sentence gets at least one selected token. The paper gives no value; twice BERT's 0.15, as RetroMAE
            masks more on its decoder's side: the head then sees fewer neighbours of each masked token and has to
            read the sentence vector (docs/RESULTS.md).
        masking_scheme (`str`, *optional*, defaults to `"random"`):
            ``"random"`` selects tokens independently; ``"whole_word"`` selects words and masks all their tokens
            (needs ``word_ids`` from the data collator).
        mask_replacement (`str`, *optional*, defaults to `"mask"`):
            ``"mask"`` always replaces a selected token by the mask token; ``"bert"`` does so 80% of the time, puts
            a random token 10% and keeps it 10%. BERT's mix keeps an encoder that reads masked text useful on
            unmasked text; the default Auto-MLM head is not the encoder and reads no masked text through it, so
            every target is hidden from it. Set ``"bert"`` for the plain MLM baseline as BERT trains it.
        head_num_layers (`int`, *optional*, defaults to 1):
            Transformer layers of the Auto-MLM head. ``0`` is allowed with ``"add"`` and ``"concat"`` fusion: each
            position is then predicted from the sentence vector and its own (masked) embedding alone.
        head_fusion (`str`, *optional*, defaults to `"concat"`):
            How the sentence vector meets the masked token embeddings in the head: ``"prepend"`` (an extra first
            position the tokens attend to), ``"add"`` (added to every position) or ``"concat"`` (concatenated to
            every position, then projected). The paper does not say; ``"concat"`` was best or tied on the two
            knowledge-retrieval sets of our ablation (``"add"`` was best on chatterbot-qa; docs/RESULTS.md).
        head_input (`str`, *optional*, defaults to `"token_embeddings"`):
            What the head reads for each position. ``"token_embeddings"``: the encoder's (non-contextual) input
            embeddings of the masked sentence, so the sentence vector must carry the content; this is the method
            and costs no encoder pass. ``"contextual"``: the encoder's contextual states of the masked sentence (an
            ablation; costs one more encoder pass).
        head_num_attention_heads (`int`, *optional*):
            Attention heads of the head's layers. Defaults to the encoder's ``num_attention_heads``.
        head_intermediate_size (`int`, *optional*):
            Feed-forward size of the head's layers. Defaults to four times the hidden size.
        tie_head_embeddings (`bool`, *optional*, defaults to `True`):
            Compute the heads' vocabulary logits with the encoder's input embedding matrix (no extra vocab-sized
            matrix). ``False`` gives each head its own output projection.
        head_vocab_sample_size (`int`, *optional*, defaults to 8192):
            Vocabulary rows each masked position is scored against in training (sampled softmax); ``0`` scores the
            whole vocabulary. The default makes a step of the method cost what a step of CL alone costs at a 250k
            vocabulary (docs/BENCHMARKS.md); a smaller vocabulary is scored whole. The candidates are the batch's
            distinct target tokens plus as many other tokens as make up this number, drawn uniformly without
            replacement from the rest of the vocabulary with torch's global random generator (so a seed, and a
            resumed run's restored random state, replay them); when the distinct targets alone reach this number
            they are the only candidates. Logits are computed against the candidates' embedding rows only, so a
            step costs ``hidden x head_vocab_sample_size`` multiply-adds per masked position instead of
            ``hidden x vocab_size``, and only candidate rows get a gradient from the heads. No log-Q correction is
            applied: with uniform sampling it subtracts the same constant from every candidate's logit, which
            cancels in the softmax (Jean et al., 2015). In eval mode the heads score the whole vocabulary, so the
            reported loss and masked-token accuracy stay comparable across settings.
        mask_token_id (`int`, *optional*):
            The tokenizer's mask token. Required when ``auto_mlm_weight`` or ``mlm_weight`` is positive;
            [`AutoMLMForPreTraining.from_backbone`] and the trainer fill it from the tokenizer.
        special_token_ids (`list[int]`, *optional*):
            Token ids never selected for masking (CLS, SEP, BOS, EOS, PAD, ...). Filled from the tokenizer.
    """

    model_type = "automlm"
    sub_configs = {"encoder_config": AutoConfig}

    def __init__(
        self,
        encoder_config: PreTrainedConfig | dict[str, Any] | None = None,
        pooling: PoolingMode = "mean",
        normalize_embeddings: bool = True,
        contrastive_weight: float = 1.0,
        contrastive_temperature: float = 0.05,
        gather_across_processes: bool = True,
        auto_mlm_weight: float = 0.1,
        auto_mlm_gradient_share: float | None = None,
        mlm_weight: float = 0.0,
        mask_probability: float = 0.3,
        masking_scheme: MaskingScheme = "random",
        mask_replacement: MaskReplacement = "mask",
        head_num_layers: int = 1,
        head_fusion: HeadFusion = "concat",
        head_input: HeadInput = "token_embeddings",
        head_num_attention_heads: int | None = None,
        head_intermediate_size: int | None = None,
        tie_head_embeddings: bool = True,
        head_vocab_sample_size: int = 8192,
        mask_token_id: int | None = None,
        special_token_ids: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if encoder_config is None:
            encoder_config = AutoConfig.for_model("bert")
        elif isinstance(encoder_config, dict):
            encoder_config = dict(encoder_config)
            if "model_type" not in encoder_config:
                raise ValueError("`encoder_config` given as a dict needs a `model_type` key (e.g. 'bert').")
            encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        elif not isinstance(encoder_config, PreTrainedConfig):
            raise ValueError(
                f"`encoder_config` must be a transformers config or a dict, got {type(encoder_config).__name__}."
            )
        self.encoder_config = encoder_config
        self.pooling = pooling
        self.normalize_embeddings = normalize_embeddings
        self.contrastive_weight = contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.gather_across_processes = gather_across_processes
        self.auto_mlm_weight = auto_mlm_weight
        self.auto_mlm_gradient_share = auto_mlm_gradient_share
        self.mlm_weight = mlm_weight
        self.mask_probability = mask_probability
        self.masking_scheme = masking_scheme
        self.mask_replacement = mask_replacement
        self.head_num_layers = head_num_layers
        self.head_fusion = head_fusion
        self.head_input = head_input
        self.head_num_attention_heads = head_num_attention_heads
        self.head_intermediate_size = head_intermediate_size
        self.tie_head_embeddings = tie_head_embeddings
        self.head_vocab_sample_size = head_vocab_sample_size
        self.mask_token_id = mask_token_id
        self.special_token_ids = list(special_token_ids) if special_token_ids is not None else []
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        # The heads tie to the embeddings functionally; transformers' own tying machinery is not used.
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        self.validate_fields()

    # --- convenience views of the encoder config ---------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.encoder_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.encoder_config.vocab_size

    @property
    def initializer_range(self) -> float:
        return getattr(self.encoder_config, "initializer_range", 0.02)

    @property
    def uses_masking(self) -> bool:
        """Whether a forward pass of [`AutoMLMForPreTraining`] masks tokens."""
        return self.auto_mlm_weight > 0 or self.mlm_weight > 0

    @classmethod
    def objective_fields(cls) -> tuple[ConfigField, ...]:
        """The fields that define the training objective and the pooling (all but `BACKBONE_FIELDS`), in signature
        order, with the type and default of ``__init__`` and the description of the class docstring."""
        return _objective_fields(cls)

    def validate_fields(self) -> None:
        """Check every field; raise a `ValueError` naming the field and the allowed values."""
        for spec in self.objective_fields():
            if spec.choices is not None:
                _check_choice(spec.name, getattr(self, spec.name), spec.choices)
        for name in ("contrastive_weight", "auto_mlm_weight", "mlm_weight"):
            _check_range(name, getattr(self, name), 0.0, float("inf"))
        if self.contrastive_weight == 0 and self.auto_mlm_weight == 0 and self.mlm_weight == 0:
            raise ValueError(
                "At least one of `contrastive_weight`, `auto_mlm_weight` and `mlm_weight` must be positive."
            )
        if self.auto_mlm_gradient_share is not None:
            _check_range("auto_mlm_gradient_share", self.auto_mlm_gradient_share, 0.0, float("inf"))
            if self.contrastive_weight == 0:
                raise ValueError(
                    "`auto_mlm_gradient_share` caps the Auto-MLM gradient at a share of the contrastive term's, "
                    "which is off (`contrastive_weight=0`): set a positive `contrastive_weight` or leave the share "
                    "unset."
                )
        _check_range("contrastive_temperature", self.contrastive_temperature, 0.0, float("inf"), low_open=True)
        _check_range("mask_probability", self.mask_probability, 0.0, 1.0, low_open=True)
        _check_count("head_num_layers", self.head_num_layers)
        _check_count("head_vocab_sample_size", self.head_vocab_sample_size, " (0: score the whole vocabulary)")
        if self.head_num_layers == 0 and self.head_fusion == "prepend":
            raise ValueError(
                "`head_fusion='prepend'` needs `head_num_layers >= 1` (the tokens must attend to the sentence "
                "vector); use `head_fusion='add'` or `'concat'` for a head without layers."
            )
        if not isinstance(self.normalize_embeddings, bool):
            raise ValueError(f"`normalize_embeddings` must be True or False, got {self.normalize_embeddings!r}.")
        hidden = getattr(self.encoder_config, "hidden_size", None)
        if hidden is None:
            raise ValueError(
                f"`encoder_config` ({self.encoder_config.model_type}) has no `hidden_size`; use a text encoder "
                "config such as BERT, XLM-R, DistilBERT or ModernBERT."
            )
        heads = self.head_num_attention_heads or getattr(self.encoder_config, "num_attention_heads", None)
        if self.head_num_layers > 0 and (heads is None or hidden % heads != 0):
            raise ValueError(
                f"`head_num_attention_heads` ({heads}) must divide the hidden size ({hidden}); set it explicitly."
            )


@functools.cache
def _objective_fields(config_class: type[AutoMLMConfig]) -> tuple[ConfigField, ...]:
    types = typing.get_type_hints(config_class.__init__)
    descriptions = _docstring_args(config_class.__doc__ or "")
    parameters = inspect.signature(config_class.__init__).parameters.values()
    return tuple(
        ConfigField(name=p.name, type=types[p.name], default=p.default, help=descriptions.get(p.name, ""))
        for p in parameters
        if p.default is not inspect.Parameter.empty
        and p.kind is p.POSITIONAL_OR_KEYWORD
        and p.name not in BACKBONE_FIELDS
    )
