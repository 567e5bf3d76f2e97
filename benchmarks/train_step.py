"""Training-step cost of the Auto-MLM objective against contrastive learning alone, measured in one run.

Variants, all on the same encoder (shared weights) and the same batch:

- ``cl``: contrastive learning alone (SimCSE; ``auto_mlm_weight=0``).
- ``cl+mlm``: plus plain MLM on the encoder's states of the masked sentence, batched with the two CL views, logits
  at masked positions only (``auto_mlm_weight=0, mlm_weight=w``).
- ``cl+auto-mlm``: the method with the default config (the head reads token embeddings: no encoder pass of its own).
- ``cl+auto-mlm:sampled``: the same with a sampled softmax (``head_vocab_sample_size=--sample-size``): each masked
  position is scored against the batch's target tokens plus uniform negatives, not the whole vocabulary.
  ``cl+mlm:sampled`` (not run by default) does the same for plain MLM.
- ``naive``: CL plus MLM the way SimCSE adds it: a separate encoder call over the masked sentence and vocabulary
  logits at every position.

``--embeddings trained frozen`` runs every variant twice: with the word embeddings trained (the default; AdamW
updates the whole table) and frozen (``requires_grad=False``, as ``automlm-train --freeze_word_embeddings``), in
the same round-robin; ``x cl`` compares each variant with ``cl`` under the same option.

``--ablations`` adds the same objective with a cheaper head or fewer masked positions (``auto-mlm:mask_p=0.05``:
``mask_probability=0.05``), and the vocabulary logits alone.

A step is zero_grad, forward, backward and an AdamW step. The variants run round-robin (the order rotating every
round) and the medians are reported, so that a noisy machine slows every variant alike. Peak memory is measured in a
fresh subprocess per variant (see ``--help`` of ``--memory``).

By default the script runs the quick comparison (under 10 minutes on 2 CPU cores at the multilingual-e5-small
shape): ``cl`` against ``cl+auto-mlm`` at the embedded default's batch (32 sentences of 32 tokens), no memory
probes. ``--full`` runs the whole table (every main variant, batch 64 x 64 tokens, memory probes) unless the
options say otherwise.

Example:
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --shape multilingual-e5-small
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --full --repeats 7
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --full --vocab-size 250002 --repeats 5
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --full --ablations --profile
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --full --shape multilingual-e5-small --batch-size 32 \
        --seq-len 64 --variants cl cl+mlm cl+auto-mlm cl+auto-mlm:sampled --embeddings trained frozen --repeats 5 \
        --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F
from transformers import BertConfig, PreTrainedConfig, XLMRobertaConfig

from evaluation.report import markdown_table
from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from modeling_automlm.masking import IGNORE_INDEX
from modeling_automlm.modeling_automlm import AutoMLMPredictionHead, masked_lm_loss

SHAPES: dict[str, dict[str, int]] = {
    # A 4-layer, 256-wide BERT: the shape of configs/scratch-mini.yaml (there with 16k tokens), once the default.
    "default": {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024, "vocab": 32000},
    "xlmr-base": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "vocab": 250002},
    # intfloat/multilingual-e5-small: a BERT model with XLM-R's vocabulary; 96 M of its 118 M parameters are the
    # word embeddings.
    "multilingual-e5-small": {"layers": 12, "hidden": 384, "heads": 12, "intermediate": 1536, "vocab": 250037},
}
SAMPLED = ":sampled"  # suffix of a variant whose heads use a sampled softmax (`--sample-size` candidates)
FROZEN = "/frozen"  # suffix of a variant run with the word embeddings frozen
MAIN_VARIANTS = ("cl", "cl+mlm", "cl+auto-mlm", f"cl+auto-mlm{SAMPLED}", "naive")
QUICK_VARIANTS = ("cl", "cl+auto-mlm")
# (quick, full) defaults of the options `--full` switches
QUICK_AND_FULL: dict[str, tuple[object, object]] = {
    "batch_size": (32, 64),
    "seq_len": (32, 64),
    "variants": (list(QUICK_VARIANTS), list(MAIN_VARIANTS)),
    "memory": ("none", "rss"),
}
# Where the extra time of Auto-MLM goes: the same objective with cheaper heads, and the vocabulary logits alone.
ABLATIONS: dict[str, dict[str, object]] = {
    "auto-mlm:head_layers=0": {"head_num_layers": 0, "head_fusion": "add"},
    "auto-mlm:mask_p=0.05": {"mask_probability": 0.05},
    "auto-mlm:head_ffn=hidden": {"head_intermediate_size": -1},  # -1: replaced by the hidden size
}
LOGITS_ONLY = "vocab-logits-only"


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """`--shape` and the overrides of its fields (read back with `shape_of`)."""
    parser.add_argument("--shape", choices=sorted(SHAPES), default="default", help="encoder shape")
    parser.add_argument("--layers", type=int, help="override the shape's number of layers")
    parser.add_argument("--hidden", type=int, help="override the shape's hidden size")
    parser.add_argument("--heads", type=int, help="override the shape's attention heads")
    parser.add_argument("--intermediate", type=int, help="override the shape's feed-forward size")
    parser.add_argument("--vocab-size", type=int, help="override the shape's vocabulary size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the whole table: variants {list(MAIN_VARIANTS)}, batch 64 x 64 tokens, memory probes (default: the "
        f"quick comparison, {list(QUICK_VARIANTS)} at 32 x 32 tokens, no memory probes)",
    )
    parser.add_argument("--batch-size", type=int, help="sentences per batch (quick: 32, --full: 64)")
    parser.add_argument("--seq-len", type=int, help="tokens per sentence (quick: 32, --full: 64)")
    parser.add_argument("--mlm-weight", type=float, default=0.1, help="weight of the MLM term (cl+mlm, naive)")
    parser.add_argument(
        "--sample-size",
        type=int,
        default=8192,
        help=f"head_vocab_sample_size of the {SAMPLED} variants: candidates each masked position is scored against",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (for GPUs; slow on AVX2 CPUs)")
    parser.add_argument(
        "--variants",
        nargs="+",
        help=f"among {MAIN_VARIANTS} and cl+mlm{SAMPLED}; a {FROZEN} suffix freezes the word embeddings (quick: "
        f"{list(QUICK_VARIANTS)}, --full: all but cl+mlm{SAMPLED})",
    )
    parser.add_argument(
        "--embeddings",
        nargs="+",
        choices=["trained", "frozen"],
        default=["trained"],
        help=f"run each variant with the word embeddings trained, frozen (the {FROZEN} variants), or both",
    )
    parser.add_argument("--ablations", action="store_true", help=f"also time {[*ABLATIONS, LOGITS_ONLY]}")
    parser.add_argument(
        "--memory",
        choices=["rss", "none"],
        help="quick: none, --full: rss. CPU: peak resident memory of one step, in a fresh subprocess per variant "
        "(VmHWM after resetting it through /proc/self/clear_refs), over the resident memory just before the step, "
        "with parameters, gradients and AdamW state already allocated. CUDA: torch.cuda.max_memory_allocated, in "
        "this process.",
    )
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of cl+auto-mlm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one variant, print its memory
    args = parser.parse_args(argv)
    for name, (quick, full) in QUICK_AND_FULL.items():
        if getattr(args, name) is None:
            setattr(args, name, full if args.full else quick)
    return args


# ------------------------------------------------------------------------------------------------------------------
# Models and batches
# ------------------------------------------------------------------------------------------------------------------
def shape_of(args: argparse.Namespace) -> dict[str, int]:
    shape = dict(SHAPES[args.shape])
    for key, override in (
        ("layers", args.layers),
        ("hidden", args.hidden),
        ("heads", args.heads),
        ("intermediate", args.intermediate),
        ("vocab", args.vocab_size),
    ):
        if override is not None:
            shape[key] = override
    return shape


def encoder_config_of(args: argparse.Namespace) -> PreTrainedConfig:
    """An XLM-R config for the XLM-R shape, else a BERT config (random weights, no download)."""
    shape = shape_of(args)
    common = {
        "num_hidden_layers": shape["layers"],
        "hidden_size": shape["hidden"],
        "num_attention_heads": shape["heads"],
        "intermediate_size": shape["intermediate"],
        "vocab_size": shape["vocab"],
    }
    if args.shape == "xlmr-base":
        return XLMRobertaConfig(max_position_embeddings=max(514, args.seq_len + 2), **common)
    return BertConfig(max_position_embeddings=max(512, args.seq_len), pad_token_id=0, **common)


def special_ids_of(encoder_config: PreTrainedConfig) -> tuple[int, list[int]]:
    """`(mask_token_id, special_token_ids)`: BERT-style [PAD]=0, [CLS]=2, [SEP]=3, [MASK]=4; XLM-R's own layout."""
    if encoder_config.model_type == "xlm-roberta":
        return encoder_config.vocab_size - 1, [0, 1, 2]  # <mask> is the last id; <s>, <pad>, </s>
    return 4, [0, 2, 3]


def automlm_config(args: argparse.Namespace, **fields: object) -> AutoMLMConfig:
    encoder_config = encoder_config_of(args)
    mask_token_id, special_token_ids = special_ids_of(encoder_config)
    if fields.get("head_intermediate_size") == -1:
        fields["head_intermediate_size"] = encoder_config.hidden_size
    return AutoMLMConfig(
        encoder_config=encoder_config, mask_token_id=mask_token_id, special_token_ids=special_token_ids, **fields
    )


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch_size` full-length sentences (no padding): a start token, random ids, an end token."""
    encoder_config = encoder_config_of(args)
    _, special = special_ids_of(encoder_config)
    generator = torch.Generator().manual_seed(args.seed)
    first_free = max(special) + 3  # above the special and mask ids of both layouts
    ids = torch.randint(
        first_free, encoder_config.vocab_size - 1, (args.batch_size, args.seq_len), generator=generator
    )
    if encoder_config.model_type == "xlm-roberta":
        ids[:, 0], ids[:, -1] = 0, 2
    else:
        ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


@dataclass
class Variant:
    """A named training objective: `loss(batch)` runs its forward pass; `frozen_embeddings` keeps the word
    embeddings out of the step (no gradient, no AdamW update)."""

    name: str
    model: AutoMLMForPreTraining
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    frozen_embeddings: bool = False

    def set_embeddings_trainable(self) -> None:
        """The variants share one encoder: set its word embeddings' `requires_grad` for this variant's step."""
        self.model.get_input_embeddings().weight.requires_grad_(not self.frozen_embeddings)


def naive_masked_lm_loss(
    model: AutoMLMForPreTraining, head: AutoMLMPredictionHead, batch: dict[str, torch.Tensor], mlm_weight: float
) -> torch.Tensor:
    """CL + MLM as SimCSE adds it: a separate encoder call over the masked sentence, logits at every position."""
    cl = model(**batch).loss  # the two dropout views, batched
    masked, labels = model.mask(batch["input_ids"], batch["attention_mask"])
    states = model.automlm(input_ids=masked, attention_mask=batch["attention_mask"]).last_hidden_state
    logits = head(states, model.get_input_embeddings().weight)  # (batch, seq_len, vocab_size)
    mlm = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
    return cl + mlm_weight * mlm


def logits_only_loss(model: AutoMLMForPreTraining, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Only the Auto-MLM head's vocabulary logits (and their backward) at the masked positions of `batch`.

    The embedding matrix enters as a copy outside the optimizer: its gradient is computed as in the real step, but
    its AdamW update, which every variant does anyway, is left out.
    """
    head = model.auto_mlm_head
    _, labels = model.mask(batch["input_ids"], batch["attention_mask"])
    selected = labels != IGNORE_INDEX
    states = torch.randn(int(selected.sum()), model.config.hidden_size, device=labels.device, requires_grad=True)
    weight = model.get_input_embeddings().weight.detach().requires_grad_()
    loss, _ = masked_lm_loss(head.predictor, states, labels[selected], weight)
    return loss


def objective_fields(args: argparse.Namespace, objective: str) -> dict[str, object]:
    """The `AutoMLMConfig` fields of a variant, named without its `FROZEN` suffix."""
    fields_of: dict[str, dict[str, object]] = {
        "cl": {"auto_mlm_weight": 0.0},
        "naive": {"auto_mlm_weight": 0.0},
        "cl+mlm": {"auto_mlm_weight": 0.0, "mlm_weight": args.mlm_weight},
        "cl+auto-mlm": {},
        LOGITS_ONLY: {},
        **ABLATIONS,
    }
    for name in ("cl+mlm", "cl+auto-mlm"):
        fields_of[name + SAMPLED] = {**fields_of[name], "head_vocab_sample_size": args.sample_size}
    if objective not in fields_of:
        raise ValueError(f"Unknown variant {objective!r}; choose among {list(fields_of)}, with {FROZEN!r} or not.")
    return dict(fields_of[objective])


def build_variants(args: argparse.Namespace, names: list[str], device: torch.device) -> dict[str, Variant]:
    """One model per objective, all sharing the first one's encoder (so that only the objectives differ); a
    variant and its `FROZEN` twin share their model too."""
    torch.manual_seed(args.seed)
    shared = None
    models: dict[str, AutoMLMForPreTraining] = {}
    variants: dict[str, Variant] = {}
    for name in names:
        objective = name.removesuffix(FROZEN)
        if objective not in models:
            with device:  # initialise on the device: much faster on a GPU for a 250k vocabulary
                model = AutoMLMForPreTraining(automlm_config(args, **objective_fields(args, objective)))
            if shared is None:
                shared = model.automlm
            else:
                model.automlm = shared
            if objective == "naive":
                model.add_module("naive_mlm_head", AutoMLMPredictionHead(model.config))  # seen by the optimizer
            models[objective] = model.to(device).train()
        model = models[objective]
        if objective == "naive":

            def loss(batch, model=model):
                return naive_masked_lm_loss(model, model.naive_mlm_head, batch, args.mlm_weight)

        elif objective == LOGITS_ONLY:

            def loss(batch, model=model):
                return logits_only_loss(model, batch)

        else:

            def loss(batch, model=model):
                return model(**batch).loss

        variants[name] = Variant(name, model, loss, frozen_embeddings=name != objective)
    return variants


def make_optimizer(variants: dict[str, Variant]) -> torch.optim.Optimizer:
    """One AdamW over every parameter; a step updates only those with a gradient, i.e. the running variant's."""
    parameters = {id(p): p for v in variants.values() for p in v.model.parameters()}
    fused = next(iter(parameters.values())).device.type == "cuda"
    return torch.optim.AdamW(parameters.values(), lr=1e-5, fused=fused or None)


# ------------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    variant: Variant,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    bf16: bool,
    keep_grads: bool = False,
) -> torch.Tensor:
    """zero_grad, forward (under bf16 autocast when asked), backward, AdamW step; returns the loss. With
    `variant.frozen_embeddings` the word embeddings get no gradient, so AdamW skips them.

    `keep_grads` zeroes the gradients in place instead of freeing them (for memory probes: their memory is then
    allocated before the step, like the parameters').
    """
    variant.set_embeddings_trainable()
    optimizer.zero_grad(set_to_none=not keep_grads)
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = variant.loss(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


def time_variants(
    variants: dict[str, Variant],
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    *,
    repeats: int,
    warmup: int,
    bf16: bool,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per step of every variant, round-robin, the starting variant rotating every round.

    `cpu_times`, when given, receives the process's CPU seconds of each timed step (`time.process_time`): on a CPU
    shared with other jobs, unlike the wall-clock time, it leaves out the time the step waited for a core.
    """
    device = batch["input_ids"].device
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            train_step(variants[name], optimizer, batch, bf16)
            synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
                if cpu_times is not None:
                    cpu_times.setdefault(name, []).append(time.process_time() - cpu_start)
    return times


def count_selected(model: AutoMLMForPreTraining, batch: dict[str, torch.Tensor], draws: int = 20) -> float:
    """Mean number of positions selected for prediction per batch (the rows the vocabulary logits are computed for)."""
    counts = [(model.mask(batch["input_ids"], batch["attention_mask"])[1] != IGNORE_INDEX).sum() for _ in range(draws)]
    return float(torch.stack(counts).float().mean())


# ------------------------------------------------------------------------------------------------------------------
# FLOPs (what the MFU figures count)
# ------------------------------------------------------------------------------------------------------------------
def encoder_flops_per_token(layers: int, hidden: int, intermediate: int, seq_len: int) -> float:
    """Training FLOPs (forward + backward = 3x forward, 2 FLOPs per multiply-add) of one token through the layers.

    Counts the layers' matmuls (Q, K, V and output projections: 4 hidden^2; feed-forward: 2 hidden * intermediate)
    and the attention matmuls (scores and weighted sum: 2 seq_len * hidden). Not counted: embeddings lookups,
    LayerNorm, softmax, GELU, dropout, biases.
    """
    forward = layers * (2 * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * seq_len * hidden)
    return 3.0 * forward


def prediction_flops(config: AutoMLMConfig, num_positions: float, frozen_embeddings: bool = False) -> float:
    """Training FLOPs of a prediction head at `num_positions` positions: the transform (hidden^2) and the vocabulary
    projection (hidden * the rows scored: the vocabulary, or the `head_vocab_sample_size` sampled candidates, which
    the distinct targets of a batch exceed only when they outnumber them). With frozen word embeddings the tied
    projection's weight gradient is not computed: 2x forward instead of 3x."""
    hidden, vocab, sample = config.hidden_size, config.vocab_size, config.head_vocab_sample_size
    rows = min(sample, vocab) if sample > 0 else vocab
    projection_passes = 2.0 if frozen_embeddings and config.tie_head_embeddings else 3.0
    return 2 * num_positions * (3.0 * hidden**2 + projection_passes * hidden * rows)


def train_flops(
    config: AutoMLMConfig, batch_size: int, seq_len: int, num_selected: float, frozen_embeddings: bool = False
) -> float:
    """Model FLOPs of one training step of `config`'s objective (see `encoder_flops_per_token` for what counts).

    - Encoder: the two CL views (and the masked sentence for plain MLM or a contextual head): `batch * seq_len`
      tokens each.
    - Auto-MLM head (default, token-embedding input): the sentence projection; its layers over
      `batch * (seq_len + 1)` positions (the sentence vector is prepended), except the last layer's attention output
      projection and feed-forward, which run at the `num_selected` masked positions only (`AutoMLMHead.forward`);
      at those positions the prediction transform and the tied vocabulary projection (`prediction_flops`).
      Without layers, the head builds and predicts the masked positions only.
    - Plain MLM head: the prediction transform and vocabulary projection at the masked positions.
    """
    encoder = config.encoder_config
    hidden = config.hidden_size
    passes = 2 if config.contrastive_weight > 0 else 1
    contextual_masked = config.mlm_weight > 0 or (config.auto_mlm_weight > 0 and config.head_input == "contextual")
    passes += int(contextual_masked)
    per_token = encoder_flops_per_token(
        encoder.num_hidden_layers, hidden, encoder.intermediate_size, seq_len
    )  # one sentence token
    flops = passes * batch_size * seq_len * per_token
    predictor = prediction_flops(config, num_selected, frozen_embeddings)
    if config.auto_mlm_weight > 0:
        flops += 3.0 * 2 * batch_size * hidden**2 + predictor  # sentence projection, prediction at masked positions
        fused_positions = num_selected
        if config.head_num_layers > 0:
            head_positions = seq_len + (1 if config.head_fusion == "prepend" else 0)
            head_intermediate = config.head_intermediate_size or 4 * hidden
            layers = encoder_flops_per_token(config.head_num_layers, hidden, head_intermediate, head_positions)
            flops += batch_size * head_positions * layers
            # The last layer's attention output projection and feed-forward at the positions it gives no output for.
            skipped = batch_size * head_positions - num_selected
            flops -= 3.0 * 2 * skipped * (hidden**2 + 2 * hidden * head_intermediate)
            fused_positions = batch_size * seq_len
        if config.head_fusion == "concat":
            flops += 3.0 * 2 * fused_positions * 2 * hidden**2
    if config.mlm_weight > 0:
        flops += predictor
    return flops


def variant_flops(variant: Variant, batch_size: int, seq_len: int, num_selected: float) -> float:
    """Model FLOPs of one step of a benchmark variant (`train_flops`, plus the naive reference's extra pass)."""
    config, frozen = variant.model.config, getattr(variant, "frozen_embeddings", False)
    objective = variant.name.removesuffix(FROZEN)
    if objective == LOGITS_ONLY:
        return prediction_flops(config, num_selected)  # against a trainable copy of the embeddings
    flops = train_flops(config, batch_size, seq_len, num_selected, frozen)
    if objective == "naive":
        encoder = config.encoder_config
        hidden = config.hidden_size
        per_token = encoder_flops_per_token(encoder.num_hidden_layers, hidden, encoder.intermediate_size, seq_len)
        flops += batch_size * seq_len * per_token + prediction_flops(config, batch_size * seq_len, frozen)
    return flops


# ------------------------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+)", status.read(), re.MULTILINE).group(1))


def peak_memory(step: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak memory while `step()` runs, in MiB: `peak_mib` in all, `step_mib` over the memory just before it.

    CUDA: `torch.cuda.max_memory_allocated`. CPU: the process's peak resident set (VmHWM, reset through
    `/proc/self/clear_refs` just before), which counts torch's buffers and everything else the process touches;
    run it in a fresh process with `MALLOC_MMAP_THRESHOLD_` set (see `run_probes`) so that freed buffers leave
    the resident set instead of hiding in the heap.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mib": peak / 2**20, "step_mib": (peak - before) / 2**20}
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM (the peak resident set) to the current resident set
    before = _proc_status_kib("VmRSS")
    step()
    peak = _proc_status_kib("VmHWM")
    return {"peak_mib": peak / 1024, "step_mib": (peak - before) / 1024}


def memory_probe(args: argparse.Namespace) -> dict[str, float]:
    """Peak memory of one step of one variant (run in a fresh process; see `--memory`)."""
    device = torch.device(args.device)
    variants = build_variants(args, [args.memory_probe], device)
    optimizer = make_optimizer(variants)
    batch = make_batch(args, device)
    variant = variants[args.memory_probe]
    # Allocate the gradients and the AdamW state first, so that the step's peak is its activations and temporaries
    # (none for frozen word embeddings).
    variant.set_embeddings_trainable()
    for parameter in variant.model.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return peak_memory(lambda: train_step(variant, optimizer, batch, args.bf16, keep_grads=True), device)


def run_probes(script: str, argv: list[str], flag: str, names: list[str], threads: int) -> dict[str, dict]:
    """Run `script argv flag name` in a fresh process for each name, one at a time; parse its last line as JSON.

    The processes get a fixed glibc mmap threshold: buffers of 64 KiB and more get their own mapping, returned to
    the system when freed, so that the resident set follows what is live (glibc would otherwise raise the threshold
    and keep freed buffers in its heap, hiding later peaks).
    """
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
    for name in names:
        command = [sys.executable, os.path.abspath(script), *argv, flag, name]
        completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"{flag} {name} failed:\n{completed.stderr[-3000:]}")
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    return results


# ------------------------------------------------------------------------------------------------------------------
# Profile
# ------------------------------------------------------------------------------------------------------------------
def profile(variants: dict[str, Variant], optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """Print the top operators (self time) of a few cl+auto-mlm steps, grouped by input shape."""
    from torch.profiler import ProfilerActivity, profile

    variant = variants["cl+auto-mlm"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if batch["input_ids"].is_cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            train_step(variant, optimizer, batch, bf16=False)
    sort_by = "self_cuda_time_total" if batch["input_ids"].is_cuda else "self_cpu_time_total"
    print(prof.key_averages(group_by_input_shape=True).table(sort_by=sort_by, row_limit=25, max_name_column_width=40))


# ------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return
    device = torch.device(args.device)
    objectives = list(args.variants) + ([*ABLATIONS, LOGITS_ONLY] if args.ablations else [])
    names = list(
        dict.fromkeys(
            name if option == "trained" or name.endswith(FROZEN) else name + FROZEN
            for option in args.embeddings
            for name in objectives
        )
    )
    variants = build_variants(args, names, device)
    optimizer = make_optimizer(variants)
    batch = make_batch(args, device)
    shape = shape_of(args)
    selected = {name: count_selected(variant.model, batch) for name, variant in variants.items()}
    print(
        f"shape {args.shape} {shape}, batch {args.batch_size} x seq {args.seq_len}, device {device}, "
        f"threads {torch.get_num_threads()}, bf16 {args.bf16}, masked positions/batch ~{max(selected.values()):.0f}, "
        f"sampled softmax candidates {args.sample_size}, repeats {args.repeats} (+{args.warmup} warm-up), "
        f"torch {torch.__version__}"
    )
    cpu_times: dict[str, list[float]] = {}
    times = time_variants(
        variants, optimizer, batch, repeats=args.repeats, warmup=args.warmup, bf16=args.bf16, cpu_times=cpu_times
    )
    memory = {}
    if args.memory != "none":
        probe_names = [name for name in names if name.removesuffix(FROZEN) in MAIN_VARIANTS]
        probe_argv = [a for a in argv if a not in ("--profile", "--ablations")]
        memory = run_probes(__file__, probe_argv, "--memory-probe", probe_names, args.threads)
    flops = {name: variant_flops(variants[name], args.batch_size, args.seq_len, selected[name]) for name in names}
    tokens = args.batch_size * args.seq_len
    rows = []
    for name in names:
        frozen = variants[name].frozen_embeddings
        base = "cl" + (FROZEN if frozen else "")  # cl with the same word-embedding option
        median = statistics.median(times[name])
        ratio = f"{median / statistics.median(times[base]):.3f}" if base in times else "-"
        cpu_ratio = "-"
        if base in times and device.type == "cpu":  # per round, so that each step is compared with a close one
            cpu_ratio = f"{statistics.median(a / b for a, b in zip(cpu_times[name], cpu_times[base])):.3f}"
        flop_ratio = f"{flops[name] / flops[base]:.3f}" if base in flops else "-"
        mem = memory.get(name)
        peak, step = (f"{mem['peak_mib']:.0f}", f"{mem['step_mib']:.0f}") if mem else ("-", "-")
        rows.append([
            name.removesuffix(FROZEN), "frozen" if frozen else "trained", f"{median * 1e3:.1f}",
            f"{min(times[name]) * 1e3:.1f}", ratio, cpu_ratio, flop_ratio, f"{tokens / median:.0f}",
            f"{flops[name] / median / 1e9:.1f}", peak, step,
        ])  # fmt: skip
    headers = [
        "variant", "word embeddings", "median ms", "min ms", "x cl", "CPU x cl", "FLOPs x cl", "tokens/s", "GFLOP/s",
        "peak MiB", "step MiB",
    ]  # fmt: skip
    print(markdown_table(rows, headers))
    print(
        "x cl: median step time over that of cl with the same word embeddings (trained or frozen); CPU x cl: the "
        "median over rounds of the step's process CPU time over that of cl in the same round (CPU device only: leaves "
        "out the time a step waited for a core while other jobs ran); FLOPs x cl: model FLOPs over those of that cl "
        "(what is counted: train_flops in this file). tokens/s: input sentence tokens (batch x seq_len) per second; "
        "each sentence is encoded twice for CL. step MiB: peak memory of one step over the memory just before it "
        "(parameters, gradients, AdamW state already allocated; none for frozen word embeddings)."
    )
    if args.profile:
        profile(variants, optimizer, batch)


if __name__ == "__main__":
    main()
