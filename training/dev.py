"""The dev evaluation during training: retrieval on the dev data, the probe of the Auto-MLM head, and the choice of
the best step (saved under `best/`, the candidate for the export)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import PreTrainedTokenizerBase

from modeling_automlm import AutoMLMForPreTraining

from .export import written_beside
from .head import HEAD_ACCURACY, HEAD_ACCURACY_OTHER, probe_head
from .state import Run

logger = logging.getLogger(__name__)


def make_encode_fn(
    model: AutoMLMForPreTraining, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Callable[[list[str]], torch.Tensor]:
    """An `encode(texts) -> (n, dim)` function over the model in eval mode (the caller restores train mode).

    It encodes what it is given in one call: the evaluation already batches the texts (sorted by length).
    """
    device = next(model.parameters()).device

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model.automlm(**batch.to(device)).sentence_embedding.float().cpu()

    return encode


def dev_evaluate(
    model: AutoMLMForPreTraining,
    tokenizer: PreTrainedTokenizerBase,
    dev_data: str,
    max_length: int,
    query_prompt: str = "",
    document_prompt: str = "",
) -> dict[str, Any]:
    """Retrieval metrics on every language of a BEIR folder, in the structure `automlm-eval` writes."""
    from evaluation.evaluate import evaluate_encoder

    encode = make_encode_fn(model, tokenizer, max_length)
    results = evaluate_encoder(
        encode,
        dev_data,
        model_name="dev",
        max_seq_length=max_length,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )
    results["split"] = "dev"
    return results


def whole_model(run: Run) -> AutoMLMForPreTraining | None:
    """The model with whole parameters on the main process (None on the others), to evaluate or export.

    Under FSDP each process holds a shard of every parameter: every process must call this (it gathers them) and
    the main process gets a plain copy. Otherwise it is `run.unwrapped` itself.
    """
    accelerator = run.accelerator
    if accelerator.distributed_type != DistributedType.FSDP:
        return run.unwrapped if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(run.model)  # a collective; the whole weights land on the main process
    if not accelerator.is_main_process:
        return None
    model = AutoMLMForPreTraining(run.unwrapped.config)
    model.load_state_dict(state_dict)
    return model.to(accelerator.device)


def evaluate(run: Run) -> None:
    """Dev evaluation on the main process, recorded in the history; the best model is saved under `best/`."""
    accelerator, data_args, state, metric = run.accelerator, run.data_args, run.state, run.args.metric_for_best_model
    model = whole_model(run)  # every process: under FSDP this gathers the shards
    if accelerator.is_main_process:
        results = dev_evaluate(
            model,
            run.tokenizer,
            data_args.dev_data,
            data_args.max_seq_length,
            query_prompt=data_args.query_prompt,
            document_prompt=data_args.document_prompt,
        )
        value = results["macro"][metric]
        state.record({f"dev_{metric}": value})
        head = probe_head(model, run.probe) if run.probe is not None else {}
        state.record(head)
        (run.output_dir / "eval_results.json").write_text(json.dumps([results], indent=2))  # the latest evaluation
        per_language = {
            f"dev/{lang}/{metric}": scores[metric] for lang, scores in results.get("per_language", {}).items()
        }
        macro = {f"dev/{k}": v for k, v in results["macro"].items()}
        accelerator.log({**macro, **per_language, **{f"dev/{k}": v for k, v in head.items()}}, step=state.step)
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step = value, state.step
            with written_beside(run.output_dir / "best") as best_dir:  # a kill mid-write keeps the previous best
                model.save_pretrained(best_dir)
                (best_dir / "eval_results.json").write_text(json.dumps([results], indent=2))
        # One line per evaluation: the per-language scores are in eval_results.json and TensorBoard.
        line = f"step {state.step}: dev {metric} {value:.4f} (best {state.best_metric:.4f} at step {state.best_step})"
        if head:
            line += (
                f"; Auto-MLM head rebuilds {head[HEAD_ACCURACY]:.1%} of held-out masked tokens "
                f"({head[HEAD_ACCURACY_OTHER]:.1%} with another sentence's vector)"
            )
        logger.info(line)
    accelerator.wait_for_everyone()
    # Every process needs the same best step (checkpoint retention protects it).
    # Step 0 (the untouched model) can be the best: -1 stands for "none yet".
    best = torch.tensor([-1 if state.best_step is None else state.best_step], device=accelerator.device)
    best = accelerator.gather(best).max().reshape(1) if accelerator.num_processes > 1 else best
    state.best_step = None if int(best[0].item()) < 0 else int(best[0].item())
