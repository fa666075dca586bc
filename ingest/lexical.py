"""The lexical side of the index: BM25 over Norwegian-stemmed words, compounds split into parts.

Norwegian writes its key terms as long compounds ("etatsstyringsmøtet", "topplederprogrammet"); a
user's compound often differs from the document's in one part or in its inflection. Each word that
can be read as a compound of the corpus's own words is indexed and queried as the whole word plus
its parts, the way Koehn and Knight (2003) split German: the segmentation whose parts are most
frequent in the corpus wins, and a frequent word stays whole.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
WORDS_FILE = "words.json"
MIN_COMPOUND = 7  # shorter words are not split
MIN_PART = 3
MIN_SHORT_PART_FREQUENCY = 3  # a three-letter part ("mål", "råd") must be common in the corpus
LINKING = ("s", "e")  # the joints of Norwegian compounds: styring-s-møte, tjenest-e-…


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
    """Stemmed content words, without compound splitting."""
    return _stemmer().stemWords(words(text))


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each alphabetic word occurs: the vocabulary compounds are split against."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w in _WORD.findall(text.lower()) if w.isalpha())
    return counts


class CompoundSplitter:
    """Splits a word into parts that occur as words of the corpus (inflected last part allowed)."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts
        stemmer = _stemmer()
        self._stem_counts: Counter[str] = Counter()
        for word, n in counts.items():
            if len(word) >= MIN_PART + 1:
                self._stem_counts[stemmer.stemWord(word)] += n
        self._stop = _stopwords()
        self._cache: dict[str, tuple[str, ...]] = {}
        self._tails: dict[str, tuple[float, list[str]] | None] = {}

    def split(self, word: str) -> tuple[str, ...]:
        """The parts of `word`, or `(word,)` when it is best left whole."""
        if len(word) < MIN_COMPOUND or not word.isalpha():
            return (word,)
        if word not in self._cache:
            best = self._best(word, last=True)
            self._cache[word] = tuple(best[1]) if best else (word,)
        return self._cache[word]

    def _frequency(self, part: str, last: bool) -> int:
        if part in self._stop or len(part) < MIN_PART:
            return 0
        n = self._counts.get(part, 0)
        if last and len(part) > MIN_PART:  # the head of a compound carries the inflection
            n = max(n, self._stem_counts.get(_stemmer().stemWord(part), 0))
        if len(part) == MIN_PART and n < MIN_SHORT_PART_FREQUENCY:
            return 0
        return n

    def _best(self, word: str, last: bool) -> tuple[float, list[str]] | None:
        """Highest geometric mean of part frequencies over the segmentations of `word`."""
        options: list[tuple[float, list[str]]] = []
        whole = self._frequency(word, last)
        if whole:
            options.append((math.log(whole), [word]))
        for cut in range(MIN_PART, len(word) - MIN_PART + 1):
            head = word[:cut]
            head_frequency = self._frequency(head, last=False)
            if not head_frequency:
                continue
            rest = word[cut:]
            tails = [rest]
            if rest[0] in LINKING:
                tails.append(rest[1:])
            for tail in tails:
                if len(tail) < MIN_PART:
                    continue
                found = self._best_tail(tail)
                if found:
                    mean, parts = found
                    score = (math.log(head_frequency) + mean * len(parts)) / (1 + len(parts))
                    options.append((score, [head, *parts]))
        return max(options, key=lambda option: (option[0], -len(option[1]))) if options else None

    def _best_tail(self, tail: str) -> tuple[float, list[str]] | None:
        if tail not in self._tails:
            self._tails[tail] = self._best(tail, last=True)
        return self._tails[tail]


class Analyzer:
    """Text → index terms."""

    def __init__(self, splitter: CompoundSplitter | None = None, bigrams: bool = True) -> None:
        self.splitter = splitter
        self.bigrams = bigrams

    def terms(self, text: str) -> list[str]:
        """Stems, the stems of compound parts, and pairs of neighbouring stems ("instruks
        virksomhetsstyring"), which reward a passage that has the question's phrase."""
        stemmer = _stemmer()
        plain = words(text)
        stems = stemmer.stemWords(plain)
        terms = list(stems)
        if self.splitter is not None:
            for word in plain:
                parts = self.splitter.split(word)
                if len(parts) > 1:
                    terms.extend(stemmer.stemWords(list(parts)))
        if self.bigrams:
            terms.extend(f"{a}_{b}" for a, b in pairwise(stems))
        return terms


class LexicalIndex:
    """BM25 over a fixed list of chunk texts, saved to and loaded from a folder."""

    def __init__(self, model, counts: Counter[str] | None, bigrams: bool = True) -> None:  # type: ignore[no-untyped-def]
        self._model = model
        self._counts = counts
        splitter = CompoundSplitter(counts) if counts is not None else None
        self.analyzer = Analyzer(splitter, bigrams)

    @classmethod
    def build(cls, texts: list[str], compounds: bool = True, bigrams: bool = True) -> LexicalIndex:
        """`compounds` and `bigrams` off: the plain stemmed BM25 (for comparisons)."""
        import bm25s

        counts = word_counts(texts) if compounds else None
        analyzer = Analyzer(CompoundSplitter(counts) if counts is not None else None, bigrams)
        model = bm25s.BM25(k1=1.2, b=0.75)
        corpus = [analyzer.terms(t) or [""] for t in texts]
        if corpus:
            model.index(corpus, show_progress=False)
        return cls(model, counts, bigrams)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        words_path = folder / WORDS_FILE
        if not words_path.exists():
            raise FileNotFoundError(words_path)
        counts = Counter(json.loads(words_path.read_text(encoding="utf-8")))
        return cls(bm25s.BM25.load(str(folder)), counts)

    def save(self, folder: Path) -> None:
        self._model.save(str(folder))
        if self._counts is not None:
            (folder / WORDS_FILE).write_text(
                json.dumps(dict(self._counts), ensure_ascii=False), encoding="utf-8"
            )

    @property
    def counts(self) -> Counter[str] | None:
        """How often each word of the corpus occurs (None for an index without compounds)."""
        return self._counts

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk, in index order."""
        return self.scores_for_terms(self.analyzer.terms(query))

    def scores_for_terms(self, terms: list[str]) -> np.ndarray:
        if not terms:
            return np.zeros(self._size(), dtype=np.float32)
        return np.asarray(self._model.get_scores(terms), dtype=np.float32)

    def document_frequencies(self) -> dict[str, int]:
        """In how many chunks each indexed term occurs (read from the index's postings)."""
        counts = np.diff(np.asarray(self._model.scores["indptr"]))
        return {t: int(counts[i]) for t, i in self._model.vocab_dict.items() if t and counts[i]}

    def holds(self, term: str, position: int) -> bool:
        """Whether the chunk at `position` has `term` (a binary search in the term's postings)."""
        column = self._model.vocab_dict.get(term)
        if column is None or not term:
            return False
        indptr, indices = self._model.scores["indptr"], self._model.scores["indices"]
        postings = indices[indptr[column] : indptr[column + 1]]
        at = int(np.searchsorted(postings, position))
        return at < len(postings) and int(postings[at]) == position

    def _size(self) -> int:
        return int(self._model.scores["num_docs"])
