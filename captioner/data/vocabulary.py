"""Words to token ids and back.

Captions are lower-cased and split on anything that is not a letter, digit or
apostrophe, so "A dog, running!" becomes ["a", "dog", "running"]. A plain regex
needs no downloaded tokenizer data and behaves the same everywhere.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Iterable, Sequence

import numpy as np

PAD, START, END, UNKNOWN = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNKNOWN)  # ids 0..3, in this order

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """An ordered word list; a word's id is its position."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {words[:4]}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary must not repeat words")
        self.words = words
        self.ids = {word: index for index, word in enumerate(words)}

    pad_id, start_id, end_id, unknown_id = range(4)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Keep words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = collections.Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIAL_TOKENS) + [w for w in kept if w not in SPECIAL_TOKENS])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """`<start> words... <end>`, unknown words as `<unk>`, cut to `max_length` words."""
        words = tokenize(caption)
        if max_length is not None:
            words = words[:max_length]
        return [self.start_id] + [self.ids.get(w, self.unknown_id) for w in words] + [self.end_id]

    def decode(self, token_ids: Iterable[int]) -> list[str]:
        """Words up to the first `<end>`, without `<start>` and `<pad>`."""
        words = []
        for token_id in token_ids:
            token_id = int(token_id)
            if token_id == self.end_id:
                break
            if token_id in (self.start_id, self.pad_id):
                continue
            words.append(self.words[token_id])
        return words

    def encode_batch(self, captions: Sequence[str], max_length: int) -> np.ndarray:
        """(count, max_length + 2) int32 ids, padded with `<pad>` (id 0)."""
        batch = np.zeros((len(captions), max_length + 2), dtype=np.int32)
        for row, caption in enumerate(captions):
            ids = self.encode(caption, max_length)
            batch[row, : len(ids)] = ids
        return batch

    def save(self, path) -> None:
        from captioner.utils.atomic import atomic_write_text

        atomic_write_text(path, json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path) -> "Vocabulary":
        with open(path, encoding="utf-8") as file:
            return cls(json.load(file)["words"])
