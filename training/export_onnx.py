"""Export a plain sentence-transformers folder to ONNX, fp32 and dynamically quantised int8, for CPU serving.

The files land in the folder's ``onnx/`` subfolder, where sentence-transformers looks for them::

    python -m training.export_onnx outputs/my-model/final-plain

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer("outputs/my-model/final-plain", backend="onnx")  # onnx/model.onnx, fp32
    model = SentenceTransformer(
        "outputs/my-model/final-plain", backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx"}
    )

Only a folder without custom code exports: training writes one next to ``final/``, ``final-plain/`` (the encoder
as its stock architecture, BERT or XLM-R, plus sentence-transformers' `Pooling` and `Normalize`, which run in
torch after the ONNX encoder).

How: sentence-transformers exports a folder to ONNX when it loads one with ``backend="onnx"`` and finds no ONNX
file, through optimum's exporter; no optimum exporter released so far runs with transformers 5.24 (the one declared
for transformers 5 patches transformers' attention-mask functions with their 4.x signature). So the fp32 graph is
written here with PyTorch's own exporter, with the interface optimum's ``feature-extraction`` export has (inputs
named as the tokenizer's outputs, dynamic batch and sequence axes, output ``last_hidden_state``), and loaded back
through sentence-transformers' ONNX backend; the int8 file is then written by sentence-transformers'
`export_dynamic_quantized_onnx_model` (optimum's `ORTQuantizer`, i.e. ONNX Runtime's dynamic quantisation; weights
int8 per output channel, activations quantised on the fly).

Needs the ``onnx`` extra: ``pip install "automlm[onnx]"``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from optimum.onnxruntime.configuration import QuantizationConfig

logger = logging.getLogger(__name__)

ONNX_SUBFOLDER = "onnx"
ONNX_FILE_NAME = "model.onnx"
EXTRA_HINT = 'pip install "automlm[onnx]"  (from a checkout: pip install -e ".[onnx]")'
QuantizationTarget = Literal["arm64", "avx2", "avx512", "avx512_vnni"]
QUANTIZATION_TARGETS: tuple[str, ...] = ("arm64", "avx2", "avx512", "avx512_vnni")
# Module -> what provides it (the extra installs all of them).
_REQUIRED_MODULES = {
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript (PyTorch's ONNX exporter)",
    "optimum.onnxruntime": "an optimum-onnx distribution (sentence-transformers' ONNX backend)",
}
# Tokenizer outputs the encoder graph takes as inputs, in this order.
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_SAMPLE_TEXTS = ["a short sample", "a somewhat longer sample sentence to trace the padded batch with"]


class MissingExtraError(ImportError):
    """A package of the ``onnx`` extra is not installed."""


def _require_onnx_packages() -> None:
    for module, provider in _REQUIRED_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingExtraError(
                f"ONNX export needs `{module}` ({provider}), which is missing or failed to import ({error}): "
                f"{EXTRA_HINT}"
            ) from error


def check_plain_folder(model_dir: Path) -> None:
    """Fail early, with the fix, on a folder that does not export: none, not sentence-transformers, custom code.

    Raises:
        FileNotFoundError: `model_dir` is not a sentence-transformers folder.
        ValueError: the model ships custom code (e.g. our ``final/``), or its encoder is not at the folder's root.
    """
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a sentence-transformers folder (no modules.json): pass the plain export written by "
            "training, OUTPUT_DIR/final-plain."
        )
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if "auto_map" in config or config.get("model_type") == "automlm":
        raise ValueError(
            f"{model_dir} holds a model with custom code (model_type {config.get('model_type')!r}), which ONNX "
            "export does not support: export the stock-architecture folder written next to it, "
            "OUTPUT_DIR/final-plain."
        )
    modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    if not modules or modules[0].get("path", "") != "" or not config:
        raise ValueError(
            f"{model_dir} does not hold its transformer module at its root (modules.json, config.json), where "
            "sentence-transformers' ONNX backend and training's final-plain put it."
        )


class _LastHiddenState(torch.nn.Module):
    """The encoder as optimum's ``feature-extraction`` graph sees it: tokenizer outputs in, last_hidden_state out."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.encoder(**inputs).last_hidden_state  # (batch, seq, hidden)


def export_fp32_onnx(model_dir: Path, output_file: Path) -> Path:
    """Trace the folder's encoder with PyTorch's ONNX exporter into `output_file` (dynamic batch and length)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", backend="torch")
    transformer = model[0]
    encoder = transformer.auto_model.eval()
    if not type(encoder).__module__.startswith("transformers."):
        raise ValueError(
            f"{model_dir} loads {type(encoder).__name__} from {type(encoder).__module__}, not a stock transformers "
            "architecture: export OUTPUT_DIR/final-plain instead."
        )
    features = model.preprocess(_SAMPLE_TEXTS)  # a padded batch of 2: neither axis is traced as a constant
    inputs = {name: features[name] for name in _INPUT_NAMES if name in features}
    if list(inputs)[:2] != ["input_ids", "attention_mask"]:
        raise ValueError(
            f"the tokenizer of {model_dir} returns {sorted(features)}; expected input_ids, attention_mask."
        )
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    output_file.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about its own internals (shared axis names, pytree deprecations): nothing to act on.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        torch.onnx.export(
            _LastHiddenState(encoder).eval(),
            (),
            str(output_file),
            kwargs=inputs,
            input_names=list(inputs),
            output_names=["last_hidden_state"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in inputs},
            dynamo=True,
            external_data=False,  # one self-contained file (models up to 2 GB)
            verbose=False,
        )
    return output_file


def quantization_config(quantization_target: QuantizationTarget = "avx2") -> tuple[QuantizationConfig, str]:
    """optimum's dynamic-quantisation config for a CPU family, and the file suffix that names it.

    ``"avx512"``, ``"avx512_vnni"`` and ``"arm64"`` are optimum's presets as sentence-transformers applies them
    (``model_qint8_<target>.onnx``). ``"avx2"``, the default, is optimum's avx2 preset with signed weights in 7 bits
    (``model_qint8_avx2.onnx``) instead of unsigned 8-bit ones (``model_quint8_avx2.onnx``): unsigned activations
    times signed weights is ONNX Runtime's recommended format, and ran the multilingual-e5-small encoder 1.7x faster
    than the unsigned-by-unsigned one (docs/BENCHMARKS.md; measured on an AVX-512 VNNI CPU); on CPUs without VNNI
    (AVX2, plain AVX-512) ONNX Runtime computes it with VPMADDUBSW, whose 16-bit sums can saturate, which the 7-bit
    weight range prevents (ONNX Runtime's advice for those CPUs). The file runs on any x86-64 CPU with AVX2.

    Returns:
        ``(QuantizationConfig, file suffix)``: the int8 file is ``model_<suffix>.onnx``.
    """
    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if quantization_target == "avx2":
        config = replace(
            AutoQuantizationConfig.avx2(is_static=False, reduce_range=True), weights_dtype=QuantType.QInt8
        )
    else:
        config = getattr(AutoQuantizationConfig, quantization_target)(is_static=False)
    return config, f"{config.weights_dtype.name.lower()}_{quantization_target}"


def int8_file_name(quantization_target: QuantizationTarget = "avx2") -> str:
    """The int8 file's name in ``onnx/``, e.g. ``model_qint8_avx2.onnx``."""
    return f"model_{quantization_config(quantization_target)[1]}.onnx"


def export_onnx(
    model_dir: str | Path, *, quantize: bool = True, quantization_target: QuantizationTarget = "avx2"
) -> list[Path]:
    """Write ``onnx/model.onnx`` (fp32) and, with `quantize`, a dynamically quantised int8 file into `model_dir`.

    Args:
        model_dir: a sentence-transformers folder without custom code, e.g. training's ``OUTPUT_DIR/final-plain``.
        quantize: also write the int8 file.
        quantization_target: the CPU family the int8 file is tuned for (see `quantization_config`): ``"avx2"``
            (any x86-64 of the last decade, ``onnx/model_qint8_avx2.onnx``), ``"avx512"``, ``"avx512_vnni"`` or
            ``"arm64"`` (``onnx/model_qint8_<target>.onnx``).

    Returns:
        The files written, fp32 first. Existing files of the same names are replaced; other files are left alone.

    Raises:
        FileNotFoundError: `model_dir` is not a sentence-transformers folder.
        ValueError: the model ships custom code (pass ``final-plain``), or `quantization_target` is unknown.
        MissingExtraError: a package of the ``onnx`` extra is missing.
    """
    model_dir = Path(model_dir)
    if quantization_target not in QUANTIZATION_TARGETS:
        raise ValueError(f"quantization_target must be one of {QUANTIZATION_TARGETS}, got {quantization_target!r}.")
    check_plain_folder(model_dir)
    _require_onnx_packages()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    onnx_dir = model_dir / ONNX_SUBFOLDER
    fp32_file = onnx_dir / ONNX_FILE_NAME
    with tempfile.TemporaryDirectory(dir=model_dir) as scratch:  # same filesystem: the move is atomic
        export_fp32_onnx(model_dir, Path(scratch) / ONNX_FILE_NAME)
        onnx_dir.mkdir(exist_ok=True)
        shutil.move(Path(scratch) / ONNX_FILE_NAME, fp32_file)
    logger.info("Wrote %s", fp32_file)
    written = [fp32_file]
    if quantize:
        onnx_model = SentenceTransformer(
            str(model_dir),
            device="cpu",
            backend="onnx",
            model_kwargs={"file_name": f"{ONNX_SUBFOLDER}/{fp32_file.name}"},
        )
        config, suffix = quantization_config(quantization_target)
        export_dynamic_quantized_onnx_model(onnx_model, config, str(model_dir), file_suffix=suffix)
        int8_file = onnx_dir / f"model_{suffix}.onnx"
        logger.info("Wrote %s", int8_file)
        written.append(int8_file)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m training.export_onnx MODEL_DIR [--no-quantize]`: bad input ends it with one line, no traceback."""
    parser = argparse.ArgumentParser(prog="python -m training.export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model_dir", help="a sentence-transformers folder without custom code, e.g. OUTPUT_DIR/final-plain"
    )
    parser.add_argument("--no-quantize", action="store_true", help="write only the fp32 file")
    parser.add_argument(
        "--quantization-target", choices=QUANTIZATION_TARGETS, default="avx2", help="CPU the int8 file is tuned for"
    )
    args = parser.parse_args(argv)
    # Warnings from every library, progress from this module only (ONNX Runtime's quantiser logs each tensor at INFO).
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING, stream=sys.stderr)
    logger.setLevel(logging.INFO)
    for noisy in ("sentence_transformers", "optimum", "onnxscript", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        files = export_onnx(
            args.model_dir, quantize=not args.no_quantize, quantization_target=args.quantization_target
        )
    except (ValueError, FileNotFoundError, MissingExtraError) as error:
        raise SystemExit(f"export_onnx: {error}") from None
    for path in files:
        print(path)


if __name__ == "__main__":
    main()
