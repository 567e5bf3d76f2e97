"""The whole-corpus study (issue 21, point 3): the method and CL alone trained for 1,500 steps on all of LibreOffice
help's unlabelled text, at two rates, the dev split evaluated every 100 steps.

Five commands:

- ``python -m comparison.long_run sample-dev``: the dev split the runs evaluate on. libreoffice-help's own dev split
  has 32 languages with about 1,800 queries and 2,000 pages each (some 120,000 texts an evaluation, over ten minutes on
  one core): sixteen evaluations a run would cost more than the training. The sample keeps 8 languages, 250 queries
  each and, per language, their pages plus other pages up to 1,000, drawn with a fixed seed.
- ``python -m comparison.long_run train SYSTEM``: train ``cl_automlm`` (the default) or ``cl_only`` at 1e-5, then
  2.5e-6; a run with a checkpoint continues from it (``--resume``), a finished one is skipped; ``--seed N`` runs
  another seed beside the first (``<system>-lr<rate>-seed<N>``).
- ``python -m comparison.long_run curves``: dev nDCG@10 against the step, both systems, one chart per rate, from each
  run's history (its export when finished, else its newest checkpoint), and a table of where each run stands.
- ``python -m comparison.long_run score``: every finished run's dev-best step (its ``final/``) and last step (its
  newest checkpoint, exported once to ``last/``) on the test split of all 32 languages, against the untouched encoder
  (exported once to ``untouched/``), with paired bootstrap intervals, and how far each moved from the untouched
  encoder (``comparison.drift`` on a sample of the training text) and with what gradient each loss term moves it.
- ``python -m comparison.long_run table-or-layers RUN``: where a finished run's change lives: the dev score of its last
  step with the untouched encoder's embedding table put back, and of the untouched encoder with the run's table.
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comparison.drift import TrainingSample
from evaluation.data import find_languages, load_beir, write_beir
from training import cli

logger = logging.getLogger(__name__)

PROG = "python -m comparison.long_run"
GRADIENT_KEYS = ("grad_norm_cl", "grad_norm_auto_mlm", "grad_ratio_auto_mlm")
STUDY_CONFIGS = (Path("configs/default.yaml"), Path("configs/long-run/libreoffice.yaml"))
CAPPED_SHARE = "0.25"
"""`auto_mlm_gradient_share` of the capped system: the Auto-MLM gradient at the sentence vector at most 1/4 of CL's."""
SYSTEMS = {  # the default, CL alone, and the default with the Auto-MLM gradient capped
    "cl_automlm": [],
    "cl_only": ["--auto_mlm_weight", "0"],
    "cl_automlm_capped": ["--auto_mlm_gradient_share", CAPPED_SHARE],
}
SYSTEM_NAMES = {  # their names in the charts' legends
    "cl_automlm": "the default (CL + 0.1 x Auto-MLM)",
    "cl_only": "CL alone",
    "cl_automlm_capped": f"the default, Auto-MLM gradient capped at {CAPPED_SHARE} x CL's",
}
PAIRS = (("cl_automlm", "cl_only"), ("cl_automlm_capped", "cl_only"), ("cl_automlm_capped", "cl_automlm"))
"""The systems the test report compares, each run with the other's at the same rate, seed and step choice."""
RATES = ("1e-5", "2.5e-6")
LANGUAGES = ("en", "de", "es", "fr", "ja", "pt-BR", "ru", "zh-Hans")
METRIC = "dev_ndcg@10"


def sample_dev(
    source: Path,
    output: Path,
    languages: Sequence[str] = LANGUAGES,
    queries_per_language: int = 250,
    documents_per_language: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Write a sample of the BEIR folders under `source` (one per language) to `output`; returns the counts.

    Each language keeps `queries_per_language` queries drawn with `seed`, every page relevant to one of them, and
    other pages up to `documents_per_language`: the distractors of a full-size corpus, fewer of them.
    """
    folders = find_languages(source)
    missing = [lang for lang in languages if lang not in folders]
    if missing:
        raise ValueError(f"{source} has no folder for {missing}; build it with automlm-build-benchmark first.")
    counts = {}
    for lang in languages:
        queries, corpus, qrels = load_beir(folders[lang])
        rng = random.Random(f"{seed}-{lang}")
        chosen = sorted(rng.sample(sorted(qrels), min(queries_per_language, len(qrels))))
        relevant = {doc for qid in chosen for doc in qrels[qid]}
        others = sorted(set(corpus) - relevant)
        extra = rng.sample(others, max(0, min(len(others), documents_per_language - len(relevant))))
        documents = sorted(relevant | set(extra))
        write_beir(
            output / lang,
            {qid: queries[qid] for qid in chosen},
            {doc: corpus[doc] for doc in documents},
            {qid: qrels[qid] for qid in chosen},
        )
        counts[lang] = {"queries": len(chosen), "documents": len(documents)}
    return counts


def run_name(system: str, rate: str, seed: int | None = None) -> str:
    """``<system>-lr<rate>`` (the trainer's default seed, 42), or ``<system>-lr<rate>-seed<seed>``."""
    return f"{system}-lr{rate}" + ("" if seed is None else f"-seed{seed}")


def parse_run_name(name: str) -> tuple[str, str, int | None] | None:
    """``(system, rate, seed)`` of a `run_name`; None for any other folder name."""
    match = re.fullmatch(r"(?P<system>\w+)-lr(?P<rate>.+?)(?:-seed(?P<seed>\d+))?", name)
    if match is None:
        return None
    return match["system"], match["rate"], None if match["seed"] is None else int(match["seed"])


def train_command(system: str, rate: str, runs_dir: Path, dev_data: Path, seed: int | None = None) -> list[str]:
    """The `automlm-train` command of one run; with `--resume` when the run has a checkpoint (it continues there)."""
    from training.checkpoints import complete_checkpoints

    output_dir = runs_dir / run_name(system, rate, seed)
    command = [
        sys.executable, "-m", "training.train", "--config", "configs/default.yaml",
        "--config", "configs/long-run/libreoffice.yaml", "--dev_data", str(dev_data), "--learning_rate", rate,
        *SYSTEMS[system], *([] if seed is None else ["--seed", str(seed)]), "--output_dir", str(output_dir),
    ]  # fmt: skip
    return [*command, "--resume"] if complete_checkpoints(output_dir / "checkpoints") else command


def train(system: str, runs_dir: Path, dev_data: Path, seed: int | None = None, rates: Sequence[str] = RATES) -> None:
    """Train (or continue) `system` at each of `rates` in turn, skipping finished runs; each run's console goes to
    `<run>.log` beside it."""
    for rate in rates:
        output_dir = runs_dir / run_name(system, rate, seed)
        if (output_dir / "final" / "training_metrics.json").is_file():
            continue
        runs_dir.mkdir(parents=True, exist_ok=True)
        command = train_command(system, rate, runs_dir, dev_data, seed)
        logger.info("%s", " ".join(command))
        with output_dir.with_suffix(".log").open("a") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def run_history(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The history of a run and where it was read: its export's summary when it finished, else the progress saved in
    its newest checkpoint (what `--resume` would continue from)."""
    summary = run_dir / "final" / "training_metrics.json"
    if summary.is_file():
        return json.loads(summary.read_text())["history"], "finished"
    from training.checkpoints import complete_checkpoints

    if not complete_checkpoints(run_dir / "checkpoints"):
        return [], "no checkpoint yet"
    _, state = newest_progress(run_dir)
    return state["history"], f"at step {state['step']}"


def newest_progress(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The run's newest intact checkpoint and the progress saved in it (`TrainingState`: its step, its history)."""
    import torch

    from training.checkpoints import newest_intact_checkpoint

    newest, _ = newest_intact_checkpoint(run_dir / "checkpoints")
    return newest, torch.load(newest / "custom_checkpoint_0.pkl", weights_only=False)


def dev_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``[(step, dev nDCG@10)]`` of every dev evaluation in `history`."""
    return [(record["step"], record[METRIC]) for record in history if METRIC in record]


def curves(runs_dir: Path, figures_dir: Path | None) -> str:
    """A markdown table of the runs under `runs_dir` (``<system>-lr<rate>``) and, with `figures_dir`, one chart per
    rate; returns the table."""
    rows = ["| run | status | dev nDCG@10 at step 0 | best (step) | last (step) |", "| --- | --- | --- | --- | --- |"]
    by_rate: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and parse_run_name(p.name)):
        history, status = run_history(run_dir)
        curve = dev_curve(history)
        system, rate, seed = parse_run_name(run_dir.name)
        by_rate.setdefault(rate, {})[system if seed is None else f"{system} seed {seed}"] = curve
        if not curve:
            rows.append(f"| {run_dir.name} | {status} | - | - | - |")
            continue
        best = max(curve, key=lambda point: point[1])
        start = dict(curve).get(0)
        rows.append(
            f"| {run_dir.name} | {status} | {'-' if start is None else f'{start:.4f}'} | {best[1]:.4f} ({best[0]}) "
            f"| {curve[-1][1]:.4f} ({curve[-1][0]}) |"
        )
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        for rate, systems in by_rate.items():
            _plot(systems, f"learning rate {rate}", figures_dir / f"dev-ndcg-lr{rate}.png")
    return "\n".join(rows)


def _plot(systems: dict[str, list[tuple[int, float]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    colours = {system: f"C{index}" for index, system in enumerate(SYSTEMS)}
    for label, curve in sorted(systems.items()):
        if curve:  # one colour per system, one line style per seed
            system, _, seed = label.partition(" seed ")
            style = ("-", "--", ":", "-.")[int(seed or 0) % 4]
            steps, values = zip(*curve, strict=True)
            name = SYSTEM_NAMES.get(system, system) + (f", seed {seed}" if seed else "")
            axis.plot(steps, values, style, marker="o", markersize=3, color=colours.get(system), label=name)
    axis.set(xlabel="optimizer step (32 sentences)", ylabel="dev nDCG@10 (macro, 8 languages)", title=title)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    logger.info("Wrote %s", path)


def export_last(run_dir: Path) -> tuple[Path, int]:
    """Export the last step of the finished run in `run_dir` (its newest intact checkpoint) to ``<run>/last``, a
    folder like its ``final/`` (the dev-best step's); returns the folder and the step. An existing export is reused.

    Raises:
        ValueError: the newest checkpoint is not the step the run ended at (its checkpoints were not kept).
    """
    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    from modeling_automlm import AutoMLMForPreTraining
    from training.export import export_sentence_transformers, written_beside

    final, last = run_dir / "final", run_dir / "last"
    ended = json.loads((final / "training_metrics.json").read_text(encoding="utf-8"))["steps"]
    if (last / "config.json").is_file():
        return last, ended
    newest, progress = newest_progress(run_dir)
    step = progress["step"]
    if step != ended:
        raise ValueError(
            f"{run_dir}: the newest checkpoint is step {step}, the run ended at step {ended}; train with "
            "keep_checkpoints: true (configs/long-run/libreoffice.yaml does) to score the last step."
        )
    model = AutoMLMForPreTraining.from_pretrained(final)
    load_model(model, newest / "model.safetensors")  # every weight, the heads included: `final/` has the same shape
    max_seq_length = json.loads((final / "training_config.json").read_text(encoding="utf-8"))["data"]["max_seq_length"]
    prompts = json.loads((final / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("prompts")
    with written_beside(last) as folder:
        export_sentence_transformers(
            model.eval(), AutoTokenizer.from_pretrained(final), folder, max_seq_length, prompts=prompts
        )
    return last, step


def table_or_layers(run_dir: Path, untouched: Path, dev_data: Path) -> dict[str, float]:
    """Where a finished run's change to the encoder lives: dev nDCG@10 of its last step as trained, with the untouched
    encoder's input-embedding table put back, and of the untouched encoder (`untouched`) with the run's table.

    The Auto-MLM term reaches the table directly (the masked tokens' embeddings, the tied output projection) and the
    layers only through the sentence vector, so the split says which of the two paths a run's gain or harm took.
    """
    import torch
    from transformers import AutoTokenizer

    from modeling_automlm import AutoMLMForPreTraining
    from training.dev import dev_evaluate

    last, _ = export_last(run_dir)
    settings = json.loads((run_dir / "final" / "training_config.json").read_text(encoding="utf-8"))
    prompts = json.loads((last / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("prompts") or {}
    tokenizer = AutoTokenizer.from_pretrained(last)
    trained = AutoMLMForPreTraining.from_pretrained(last).eval()
    reference = AutoMLMForPreTraining.from_pretrained(untouched).eval()
    trained_table = trained.automlm.encoder.get_input_embeddings().weight
    reference_table = reference.automlm.encoder.get_input_embeddings().weight
    if trained_table.shape != reference_table.shape:
        raise ValueError(
            f"{run_dir.name}'s embedding table is {tuple(trained_table.shape)}, {untouched}'s "
            f"{tuple(reference_table.shape)}: compare a run with the encoder it started from."
        )

    def dev(model: AutoMLMForPreTraining) -> float:
        results = dev_evaluate(
            model,
            tokenizer,
            str(dev_data),
            settings["data"]["max_seq_length"],
            query_prompt=prompts.get("query", ""),
            document_prompt=prompts.get("document", ""),
        )
        return results["macro"][METRIC.removeprefix("dev_")]

    scores = {"untouched": dev(reference), "as trained": dev(trained)}
    with torch.no_grad():
        trained_values = trained_table.detach().clone()
        trained_table.copy_(reference_table)
        scores["untouched table"] = dev(trained)
        reference_table.copy_(trained_values)
        scores["untouched layers, trained table"] = dev(reference)
    return scores


def gradient_norms(
    model_dir: Path, sample: TrainingSample, batches: int = 8, batch_size: int = 32
) -> dict[str, float]:
    """Each loss term's gradient norm at the encoder's layers (`training.gradients.term_gradient_norms`), and the
    Auto-MLM term's over CL's, averaged over `batches` batches of `sample`'s sentences, for the model in `model_dir`
    (an `AutoMLMForPreTraining` folder) with its own objective, in training mode, masks and dropout seeded."""
    import torch
    from transformers import AutoTokenizer

    from modeling_automlm import AutoMLMForPreTraining
    from training.data import AutoMLMCollator
    from training.gradients import term_gradient_norms

    if len(sample.texts) < batches * batch_size:
        raise ValueError(
            f"{batches} batches of {batch_size} need {batches * batch_size} sentences, not {len(sample.texts)}."
        )
    model = AutoMLMForPreTraining.from_pretrained(model_dir).train()
    collator = AutoMLMCollator(
        AutoTokenizer.from_pretrained(model_dir),
        max_length=sample.max_seq_length,
        whole_word_masking=model.config.masking_scheme == "whole_word",
        text_prefix=sample.prefix,
    )
    torch.manual_seed(0)
    means: dict[str, float] = {}
    for start in range(0, batches * batch_size, batch_size):
        batch = collator([{"text": text} for text in sample.texts[start : start + batch_size]])
        for key, value in term_gradient_norms(model, model(**batch)).items():
            means[key] = means.get(key, 0.0) + value / batches
    return means


def score(runs_dir: Path, test_data: Path, sentences: int = 1000, seed: int = 0) -> str:
    """Score every finished run under `runs_dir` at its dev-best and last steps on `test_data` (a folder of language
    folders), against the untouched encoder; returns a markdown report and writes the numbers to
    ``<runs_dir>/scores.json`` (each model's evaluation, drift and gradient norms are cached under
    ``<runs_dir>/test/``: a later call measures only the runs finished since)."""
    from comparison.drift import drift, load_encoder, sample_sentences
    from comparison.runner import evaluate_one
    from comparison.untrained import export_from_settings
    from evaluation.compare import compare_results
    from evaluation.report import markdown_table

    sample = sample_sentences(STUDY_CONFIGS, sentences, seed)
    texts, max_seq_length = sample.prefixed, sample.max_seq_length
    untouched = runs_dir / "untouched" / "final"
    if not (untouched / "config.json").is_file():
        export_from_settings(list(STUDY_CONFIGS), None, untouched.parent)
    models = {"untouched": (untouched, 0)}  # name -> (folder, step)
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "final" / "training_metrics.json").is_file()):
        summary = json.loads((run_dir / "final" / "training_metrics.json").read_text(encoding="utf-8"))
        models[f"{run_dir.name} dev-best"] = (run_dir / "final", summary["exported_step"])
        models[f"{run_dir.name} last"] = export_last(run_dir)
    results, moved, reference = {}, {}, None
    for name, (folder, _) in models.items():
        key = name.replace(" ", "-")
        out = runs_dir / "test" / f"{key}.json"
        results[name] = evaluate_one(str(folder), "libreoffice-help", test_data, None, out, max_seq_length)
        cached = runs_dir / "test" / f"{key}-moved-{len(texts)}.json"  # drift and gradients, once per model
        if not cached.is_file():
            if reference is None:
                reference = load_encoder(untouched, max_seq_length)(texts)
            embeddings = reference if name == "untouched" else load_encoder(folder, max_seq_length)(texts)
            measured = drift(reference, embeddings)
            if name != "untouched":  # its head is a random one, not the pretrained head the method's runs start from
                measured |= gradient_norms(folder, sample)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
        moved[name] = json.loads(cached.read_text(encoding="utf-8"))
    rows, numbers = [], {}
    for name, (_, step) in models.items():
        _, _, _, gain, interval, _ = compare_results(results[name], results["untouched"])[-1]
        numbers[name] = {"step": step, "test_ndcg@10": results[name]["macro"]["ndcg@10"], **moved[name]}
        norms = [f"{moved[name][key]:.3g}" if key in moved[name] else "-" for key in GRADIENT_KEYS]
        cosine, spread = f"{moved[name]['cos_to_reference']:.3f}", f"{moved[name]['uniformity']:.2f}"
        rows.append([name, step, f"{numbers[name]['test_ndcg@10']:.4f}", f"{gain} {interval}", cosine, spread, *norms])
    headers = ["model", "step", "test nDCG@10", "minus untouched [95%]", "cosine to untouched", "uniformity",
               "gradient norm: CL", "weighted Auto-MLM", "ratio"]  # fmt: skip
    report = [markdown_table(rows, headers)]
    pairs = []
    for name in models:
        run, _, choice = name.partition(" ")
        parsed = parse_run_name(run)
        for system, baseline in PAIRS if parsed else ():
            other = f"{run_name(baseline, parsed[1], parsed[2])} {choice}"
            if parsed[0] == system and other in results:
                _, _, _, difference, interval, _ = compare_results(results[name], results[other])[-1]
                pairs.append([f"{name} minus {other}", f"{difference} {interval}"])
    if pairs:
        report.append(markdown_table(pairs, ["pair (same rate, same step choice)", "test nDCG@10 [95%]"]))
    (runs_dir / "scores.json").write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    return "\n\n".join(report)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=PROG,
        description="The whole-corpus study: sample its dev split, train, chart and score its runs.",
        example=f"{PROG} curves --runs_dir runs/long-run --figures_dir docs/figures/long-run",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "train",
        help="train (or continue) one system at both rates (or the --rate ones)",
        example=f"{PROG} train cl_only --runs_dir runs/long-run",
    )
    run.add_argument("system", choices=sorted(SYSTEMS))
    run.add_argument("--runs_dir", type=Path, default=Path("runs/long-run"))
    run.add_argument("--dev_data", type=Path, default=Path("data/libreoffice-help-dev-sample"))
    run.add_argument(
        "--seed", type=int, help="another seed than the trainer's default (42): runs <system>-lr<rate>-seed<N>"
    )
    run.add_argument(
        "--rate", choices=RATES, action="append", help="only this learning rate (repeatable; default: both, in turn)"
    )
    sample = commands.add_parser(
        "sample-dev", help="sample the dev split the runs evaluate on", example=f"{PROG} sample-dev"
    )
    sample.add_argument("--source", type=Path, default=Path("data/libreoffice-help/dev"))
    sample.add_argument("--output", type=Path, default=Path("data/libreoffice-help-dev-sample"))
    chart = commands.add_parser(
        "curves",
        help="dev nDCG@10 against the step, one chart per rate",
        example=f"{PROG} curves --runs_dir runs/long-run --figures_dir docs/figures/long-run",
    )
    chart.add_argument("--runs_dir", type=Path, required=True, help="the folder of the <system>-lr<rate> runs")
    chart.add_argument("--figures_dir", type=Path, help="where the charts go (none without it)")
    test = commands.add_parser(
        "score",
        help="test scores of each finished run's dev-best and last steps, and their drift",
        example=f"{PROG} score --runs_dir runs/long-run",
    )
    test.add_argument("--runs_dir", type=Path, required=True, help="the folder of the <system>-lr<rate> runs")
    test.add_argument("--test_data", type=Path, default=Path("data/libreoffice-help"), help="its language folders")
    test.add_argument("--sentences", type=int, default=1000, help="training sentences the drift is measured on")
    split = commands.add_parser(
        "table-or-layers",
        help="dev nDCG@10 of a run's last step with the untouched embedding table, and the reverse",
        example=f"{PROG} table-or-layers cl_automlm-lr1e-5 --runs_dir runs/long-run",
    )
    split.add_argument("run", help="a finished run's folder name under --runs_dir, e.g. cl_automlm-lr1e-5")
    split.add_argument("--runs_dir", type=Path, required=True, help="the folder of the <system>-lr<rate> runs")
    split.add_argument("--dev_data", type=Path, default=Path("data/libreoffice-help-dev-sample"))
    return parser


@cli.entry_point(PROG)
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "sample-dev":
        print(json.dumps(sample_dev(cli.existing_folder(args.source, "--source"), args.output), indent=1))
    elif args.command == "train":
        train(
            args.system,
            cli.output_folder(args.runs_dir, "--runs_dir"),
            cli.existing_folder(args.dev_data, "--dev_data"),
            args.seed,
            args.rate or RATES,
        )
    elif args.command == "table-or-layers":
        runs_dir = cli.existing_folder(args.runs_dir, "--runs_dir")
        run_dir, untouched = runs_dir / args.run, runs_dir / "untouched" / "final"
        for folder, how in ((run_dir / "final", f"train it first ({PROG} train)"), (untouched, f"run {PROG} score")):
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} holds no model: {how}.")
        scores = table_or_layers(run_dir, untouched, cli.existing_folder(args.dev_data, "--dev_data"))
        print(f"| {args.run}, last step | dev nDCG@10 |\n| --- | --- |")
        print("\n".join(f"| {name} | {value:.4f} |" for name, value in scores.items()))
    elif args.command == "score":
        runs_dir = cli.existing_folder(args.runs_dir, "--runs_dir")
        print(score(runs_dir, cli.existing_folder(args.test_data, "--test_data"), args.sentences))
    else:
        print(curves(cli.existing_folder(args.runs_dir, "--runs_dir"), args.figures_dir))


if __name__ == "__main__":
    raise SystemExit(main())
