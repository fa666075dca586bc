"""The lexical side of the index: BM25 over Norwegian-stemmed words without stop words."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_NORWEGIAN

    return frozenset(STOPWORDS_NORWEGIAN) | frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import Stemmer

    return Stemmer.Stemmer("norwegian")


def words(text: str) -> list[str]:
    """Lower-cased words of a text, stop words removed."""
    stop = _stopwords()
    return [w for w in _WORD.findall(text.lower()) if w not in stop]


def tokenize(text: str) -> list[str]:
    """Stemmed content words: the terms BM25 indexes and queries with."""
    return _stemmer().stemWords(words(text))


class LexicalIndex:
    """BM25 over a fixed list of chunk texts, saved to and loaded from a folder."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self._model = model

    @classmethod
    def build(cls, texts: list[str]) -> LexicalIndex:
        import bm25s

        model = bm25s.BM25(k1=1.2, b=0.75)
        corpus = [tokenize(t) or [""] for t in texts]
        if corpus:
            model.index(corpus, show_progress=False)
        return cls(model)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        return cls(bm25s.BM25.load(str(folder)))

    def save(self, folder: Path) -> None:
        self._model.save(str(folder))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk, in index order."""
        terms = tokenize(query)
        if not terms:
            return np.zeros(self._size(), dtype=np.float32)
        return np.asarray(self._model.get_scores(terms), dtype=np.float32)

    def _size(self) -> int:
        return int(self._model.scores["num_docs"])
