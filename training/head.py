"""The Auto-MLM head outside the loop: how much of a held-out sentence it rebuilds, and a head that starts trained.

`HeadProbe` fixes a set of held-out sentences and their masks once; `probe_head` measures, in eval mode and over
the whole vocabulary, the share of masked content tokens the head rebuilds from each sentence's own vector, and the
same with every vector swapped for another sentence's. The difference is what the sentence vector carries: a head
that rebuilds tokens from the position and the token prior alone scores the same with either vector.

`pretrain_head` trains the randomly initialised head once per backbone, corpus and head shape, with the encoder
frozen (its sentence vectors computed once), and caches it next to the offline backbones, so that every run starts
from a head that already predicts instead of sending a random head's gradients into the encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from model_card.card import HEAD_PROBE_KEYS, HEAD_SOURCE_FILE
from modeling_automlm import AutoMLMForPreTraining
from modeling_automlm.masking import IGNORE_INDEX, mask_tokens

from .data import AutoMLMCollator

logger = logging.getLogger(__name__)

# History keys of `probe_head`: masked content tokens of the held-out probe the head rebuilds with each sentence's own
# vector; with another sentence's vector; the difference, the part of the accuracy that comes from the vector.
HEAD_ACCURACY, HEAD_ACCURACY_OTHER, HEAD_VECTOR_SHARE = HEAD_PROBE_KEYS
HEAD_FILE = "auto_mlm_head.safetensors"
PROBE_SEED = 0
CHUNK = 64  # sentences per forward pass of the probe


@dataclass
class HeadProbe:
    """Held-out sentences, tokenized and masked once, so that every evaluation of a run scores the same inputs.

    Only content tokens are targets: never special tokens, never the prompt put before every sentence. Targets are
    replaced by the mask token (no random or kept tokens), so a target is never visible to the head.
    """

    input_ids: torch.Tensor  # (num_sentences, seq_len)
    attention_mask: torch.Tensor  # (num_sentences, seq_len)
    masked_input_ids: torch.Tensor  # (num_sentences, seq_len)
    labels: torch.Tensor  # (num_sentences, seq_len): the original id at targets, -100 elsewhere

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        *,
        prefix: str,
        max_length: int,
        mask_probability: float,
        seed: int = PROBE_SEED,
    ) -> HeadProbe:
        """Tokenize `prefix + text` for each of `texts` and mask `mask_probability` of the content tokens (at least
        one per sentence) with a generator seeded by `seed`."""
        if not texts:
            raise ValueError("The held-out probe of the Auto-MLM head needs at least one sentence.")
        collator = AutoMLMCollator(tokenizer, max_length=max_length, text_prefix=prefix)
        batch = collator([{"text": text} for text in texts])
        eligible = batch["attention_mask"].bool() & ~batch["special_tokens_mask"].bool()
        masked, labels = mask_tokens(
            batch["input_ids"],
            eligible,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            probability=mask_probability,
            replacement="mask",
            generator=torch.Generator().manual_seed(seed),
        )
        return cls(batch["input_ids"], batch["attention_mask"], masked, labels)

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def probe_texts(dev_data: str | Path, limit: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Up to `limit` queries of a BEIR dev folder (all its languages), in a fixed shuffled order, leaving out any
    text of `exclude` (the training sentences): held-out sentences for `HeadProbe`."""
    import random

    from evaluation.data import find_languages, load_queries

    queries = {
        text
        for folder in find_languages(dev_data).values()
        for text in load_queries(folder / "queries.jsonl").values()
    }
    texts = sorted(queries - set(exclude))
    random.Random(PROBE_SEED).shuffle(texts)
    return texts[:limit]


@torch.no_grad()
def sentence_vectors(
    model: AutoMLMForPreTraining, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """`(num_sentences, hidden)` pooled, unnormalised vectors (what the head reads), `CHUNK` sentences at a time, on
    the model's device, in the model's current mode."""
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.automlm(
                input_ids=input_ids[i : i + CHUNK].to(device), attention_mask=attention_mask[i : i + CHUNK].to(device)
            ).pooler_output
            for i in range(0, len(input_ids), CHUNK)
        ]
    )


@torch.no_grad()
def probe_head(model: AutoMLMForPreTraining, probe: HeadProbe) -> dict[str, float]:
    """Whole-vocabulary accuracy of the Auto-MLM head on `probe`, in eval mode (the caller restores train mode).

    Returns:
        `{HEAD_ACCURACY: ..., HEAD_ACCURACY_OTHER: ..., HEAD_VECTOR_SHARE: ...}`. The other sentence's vector is
        the next one's in the probe (the last takes the first's).
    """
    if model.auto_mlm_head is None:
        raise ValueError("The model has no Auto-MLM head (auto_mlm_weight is 0): there is nothing to probe.")
    model.eval()
    device = next(model.parameters()).device
    ids, attention, masked, labels = (
        t.to(device) for t in (probe.input_ids, probe.attention_mask, probe.masked_input_ids, probe.labels)
    )
    vectors = sentence_vectors(model, ids, attention)  # (num_sentences, hidden)
    correct = {HEAD_ACCURACY: 0.0, HEAD_ACCURACY_OTHER: 0.0}
    for key, given in ((HEAD_ACCURACY, vectors), (HEAD_ACCURACY_OTHER, vectors.roll(-1, dims=0))):
        for i in range(0, len(ids), CHUNK):
            rows = slice(i, i + CHUNK)
            targets = int((labels[rows] != IGNORE_INDEX).sum())
            _, accuracy = model.auto_mlm_head_loss(masked[rows], attention[rows], labels[rows], given[rows])
            correct[key] += float(accuracy) * targets
    total = max(probe.num_targets, 1)
    result = {key: value / total for key, value in correct.items()}
    result[HEAD_VECTOR_SHARE] = result[HEAD_ACCURACY] - result[HEAD_ACCURACY_OTHER]
    return result


# ----------------------------------------------------------------------------------------------------------------
# A head that starts trained
# ----------------------------------------------------------------------------------------------------------------
HEAD_RECIPE_VERSION = 1  # bump when `pretrain_head` changes what it computes: cached heads are then rebuilt
HEAD_CACHE_ENV = "AUTOMLM_HEAD_CACHE"


@dataclass(frozen=True)
class HeadRecipe:
    """How `pretrain_head` trains a head: AdamW at `learning_rate` (linear warm-up over the first 10% of the steps,
    then linear decay), `batch_size` sentences a step, sentences and masks drawn with a generator seeded by `seed`."""

    steps: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    max_sentences: int = 20_000  # a larger corpus is sampled down (with `seed`): encoding it whole would dominate

    def sample(self, texts: Sequence[str]) -> list[str]:
        """The sentences the head is trained on: all of `texts`, or `max_sentences` of them drawn with `seed`."""
        if len(texts) <= self.max_sentences:
            return list(texts)
        import random

        keep = sorted(random.Random(self.seed).sample(range(len(texts)), self.max_sentences))
        return [texts[i] for i in keep]

    @property
    def training_fields(self) -> dict[str, Any]:
        """What shapes the training once the sentences are drawn (the fingerprint covers the sentences)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "seed": self.seed}  # fmt: skip


def head_cache_root() -> Path:
    """``$AUTOMLM_HEAD_CACHE``, else ``$HF_HOME/automlm/heads`` (beside the offline backbones)."""
    from huggingface_hub import constants

    if os.environ.get(HEAD_CACHE_ENV):
        return Path(os.environ[HEAD_CACHE_ENV])
    return Path(constants.HF_HOME) / "automlm" / "heads"


def _digest(*parts: Any) -> str:
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            sha.update(part.detach().contiguous().cpu().numpy().tobytes())
        else:
            sha.update(json.dumps(part, sort_keys=True, default=str).encode())
    return sha.hexdigest()


def head_fingerprint(
    model: AutoMLMForPreTraining, texts: Sequence[str], prefix: str, max_length: int, recipe: HeadRecipe
) -> str:
    """What a pretrained head depends on: the encoder's weights, the head's shape and masking, the text, the
    recipe. Two runs that agree on all of it share one cached head."""
    config = model.config
    head_fields = {name: getattr(config, name) for name in HEAD_CONFIG_FIELDS}
    weights = [tensor for _, tensor in sorted(model.automlm.state_dict().items())]
    # Where the encoder was loaded from is not what it is: the weights below say that.
    encoder_config = {k: v for k, v in config.encoder_config.to_dict().items() if k != "_name_or_path"}
    return _digest(
        HEAD_RECIPE_VERSION,
        encoder_config,
        head_fields,
        list(texts),
        prefix,
        max_length,
        recipe.training_fields,
        *weights,
    )


HEAD_CONFIG_FIELDS = (
    "pooling",
    "mask_probability",
    "masking_scheme",
    "mask_replacement",
    "head_num_layers",
    "head_fusion",
    "head_input",
    "head_num_attention_heads",
    "head_intermediate_size",
    "tie_head_embeddings",
    "mask_token_id",
    "special_token_ids",
)


def _linear_schedule(step: int, steps: int) -> float:
    warmup = max(1, steps // 10)
    return (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup))


def pretrain_head(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    prefix: str,
    max_length: int,
    recipe: HeadRecipe,
    probe: HeadProbe | None = None,
    cache_root: Path | None = None,
) -> dict[str, Any]:
    """Give `model.auto_mlm_head` the weights of a head trained on `texts` with the encoder frozen.

    The encoder encodes `texts` once (eval mode); then only the head is trained, on those fixed sentence vectors,
    for `recipe.steps` steps, with the run's own masking and a softmax over the tokens that occur in `texts` (every
    target is among them; at multilingual-e5-small's 250k tokens this is what makes the step cheap). The result is
    cached in `cache_root` (default `head_cache_root()`) under a fingerprint of everything it depends on, written
    beside and renamed into place, so an interrupted build leaves nothing and the next run with the same encoder,
    text and head reuses it.

    Returns:
        The provenance of the head (also `HEAD_SOURCE_FILE` in the cache folder): what it was trained on and how,
        and its accuracy on `probe` when one is given.
    """
    head = model.auto_mlm_head
    if head is None:
        raise ValueError("`head_pretraining_steps` needs an Auto-MLM head: set `auto_mlm_weight` > 0.")
    if model.config.head_input != "token_embeddings":
        raise ValueError(
            "`head_pretraining_steps` trains the head on fixed sentence vectors, which needs "
            "`head_input='token_embeddings'`; set `head_pretraining_steps` to 0 for `head_input='contextual'`."
        )
    texts = recipe.sample(texts)
    key = head_fingerprint(model, texts, prefix, max_length, recipe)
    folder = (cache_root or head_cache_root()) / f"auto-mlm-head-{key[:20]}"
    if (folder / HEAD_SOURCE_FILE).is_file() and (folder / HEAD_FILE).is_file():
        head.load_state_dict(load_file(folder / HEAD_FILE))
        provenance = json.loads((folder / HEAD_SOURCE_FILE).read_text())
        logger.info("Auto-MLM head: reusing the head pretrained in %s", folder)
        return provenance

    start = time.perf_counter()
    logger.info("Auto-MLM head: training it once on %d sentences with the encoder frozen (%d steps)", len(texts),
                recipe.steps)  # fmt: skip
    was_training = model.training
    whole_words = model.config.masking_scheme == "whole_word"
    collator = AutoMLMCollator(tokenizer, max_length=max_length, text_prefix=prefix, whole_word_masking=whole_words)
    batch = collator([{"text": text} for text in texts])
    device = next(model.parameters()).device
    model.eval()
    ids, attention, special = batch["input_ids"], batch["attention_mask"], batch["special_tokens_mask"]
    vectors = sentence_vectors(model, ids, attention)  # (num_texts, hidden)
    vocabulary = torch.unique(ids[attention.bool() & ~special.bool()]).to(device)  # sorted
    # The head's dropout draws from the global generator: fork it, so that the run goes on with the same random
    # state whether the head was trained here or read from the cache (and the head is the same either way).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(recipe.seed)
        losses = _train_head(model, recipe, batch, vectors, vocabulary, tokenizer.padding_side)
    provenance: dict[str, Any] = {
        "recipe_version": HEAD_RECIPE_VERSION,
        "fingerprint": key,
        "sentences": len(texts),
        "prefix": prefix,
        "max_seq_length": max_length,
        "vocabulary_tokens": int(vocabulary.numel()),
        **{f"recipe_{name}": value for name, value in recipe.training_fields.items()},
        "final_train_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "seconds": round(time.perf_counter() - start, 1),
        "encoder_frozen": True,
    }
    if probe is not None:
        provenance.update(probe_head(model, probe))
        provenance["probe_sentences"] = len(probe.input_ids)
    model.train(was_training)
    _save_atomically(folder, head.state_dict(), provenance)
    logger.info("Auto-MLM head: trained in %.0f s and cached in %s", provenance["seconds"], folder)
    return provenance


def _train_head(
    model: AutoMLMForPreTraining,
    recipe: HeadRecipe,
    batch: dict[str, torch.Tensor],
    vectors: torch.Tensor,
    vocabulary: torch.Tensor,
    padding_side: str,
) -> list[float]:
    """`recipe.steps` AdamW steps of the head alone on the fixed `vectors` of the sentences of `batch` (the
    collator's output for all of them); returns the losses."""
    ids, attention = batch["input_ids"], batch["attention_mask"]
    head = model.auto_mlm_head
    embeddings = model.get_input_embeddings()
    embedding_weight = embeddings.weight.detach()
    device = embedding_weight.device
    head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear_schedule(step, recipe.steps))
    generator = torch.Generator().manual_seed(recipe.seed)
    losses = []
    for _ in range(recipe.steps):
        rows = torch.randint(len(ids), (recipe.batch_size,), generator=generator)
        # Trim the padding after the batch's longest sentence (the head's layers would pay for it).
        length = int(attention[rows].sum(dim=1).max()) if padding_side == "right" else ids.shape[1]
        rows_of = {key: value[rows, :length] for key, value in batch.items()}  # (batch_size, length) each
        masked, labels = model.mask(
            rows_of["input_ids"],
            rows_of["attention_mask"],
            rows_of.get("word_ids"),
            rows_of["special_tokens_mask"],
            generator=generator,
        )
        batch_attention = rows_of["attention_mask"]
        with torch.no_grad():
            token_states = embeddings(masked.to(device))  # (batch, length, hidden)
        loss, _ = head(
            token_states, vectors[rows.to(device)], batch_attention.to(device), labels.to(device), embedding_weight,
            vocabulary,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if len(losses) % 250 == 0:
            logger.info("Auto-MLM head: step %d of %d, loss %.3f", len(losses), recipe.steps, sum(losses[-50:]) / 50)
    head.zero_grad(set_to_none=True)  # the run's first step must not add to this training's last gradients
    return losses


def _save_atomically(folder: Path, state_dict: dict[str, torch.Tensor], provenance: dict[str, Any]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.parent / f".{folder.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, building / HEAD_FILE)
        (building / HEAD_SOURCE_FILE).write_text(json.dumps(provenance, indent=2))
        try:
            os.replace(building, folder)
        except OSError:
            if not (folder / HEAD_SOURCE_FILE).is_file():  # not a concurrent winner: something else is in the way
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
