"""Whether a passage backs a statement a language model wrote citing it (`bot.generate`).

A model that paraphrases well also errs in ways that keep most of the passage's words: the wrong
role leads the meeting, a number or a year changes, a rule is turned around, a clause is added
that the passage never states. The verifier reads a statement beside the passage it cites through
a few signals: the share of its words the passage holds (English through the lexicon), the words
it adds (a term other passages use weighs more than a word of its own), numbers it has that the
passage has not, a negation its closest sentence lacks (or the other way round), and how close in
meaning it is to the passage's closest sentence and to the whole passage. A logistic model fitted
on labelled statement–passage pairs (`styringsbot calibrate` with a file of pairs) says how
likely the passage supports it. A statement passes at or above the fitted threshold, chosen so
that few unsupported statements pass. Words and vectors cannot tell "more complex" from "less
complex": a statement that turns one word of its passage around can still pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot import logistic
from bot.language import Lexicon, detect
from ingest.lexical import tokenize, words

if TYPE_CHECKING:
    from ingest.embeddings import Embedder

DEFAULT_PATH = Path(__file__).with_name("fitted") / "verifier.json"
FITTED_NAME = "verifier.json"
# Held out, at most this share of the unsupported statements may pass the fitted threshold. On the
# measure-only pairs, 0.05 kept 0.29 of the supported statements (0.52 of close paraphrases, 0.18
# of English ones); 0.10 keeps 0.46 and lets 0.09 of the unsupported pass.
UNSUPPORTED_PASS = 0.10
FOLDS = 5
CACHED = 2048  # passage and sentence vectors kept between statements

FEATURES = (
    "overlap",  # IDF-weighted share of the statement's content words the passage holds
    "novel_known",  # IDF weight of its words the passage lacks and other passages have (a role
    # or a term taken from elsewhere)
    "novel_unknown",  # log(1 + its words no passage has)
    "numbers_missing",  # numbers and years the statement has and the passage has not
    "negation",  # the statement negates and its closest sentence does not, or the other way
    "cos_sentence",  # cosine of the statement with the passage's closest sentence
    "cos_passage",  # cosine of the statement with the whole passage
    "english",  # the statement is English (its words are read through the lexicon)
)
COSINES = ("cos_sentence", "cos_passage")

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_NEGATION = re.compile(
    r"\b(ikke|ikkje|ingen|inga|aldri|uten|utan|not|no|never|none|without|nor|cannot)\b|n't\b",
    re.IGNORECASE,
)
_NORWEGIAN_NUMBERS = {
    "én": 1, "ein": 1, "to": 2, "tre": 3, "fire": 4, "fem": 5, "seks": 6, "sju": 7, "syv": 7,
    "åtte": 8, "ni": 9, "ti": 10, "elleve": 11, "tolv": 12, "tjue": 20, "femti": 50,
    "hundre": 100, "tusen": 1000,
}  # fmt: skip
_ENGLISH_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "fifty": 50,
    "hundred": 100, "thousand": 1000,
}  # fmt: skip
_NUMBER = re.compile(
    r"(?P<digits>\d+(?:[  .]\d{3})*)|\b("
    + "|".join(sorted({*_NORWEGIAN_NUMBERS, *_ENGLISH_NUMBERS}, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


class VerifierError(ValueError):
    """The labelled pairs cannot fit a verifier (one kind of example only, or a malformed line)."""


def numbers(text: str, english: bool = False) -> set[int]:
    """The numbers a text states, in digits or (up to a thousand) in words of its language."""
    found = set()
    named = _ENGLISH_NUMBERS if english else _NORWEGIAN_NUMBERS
    for match in _NUMBER.finditer(text):
        digits = match.group("digits")
        if digits:
            found.add(int(re.sub(r"\D", "", digits)))
        elif match.group(0).lower() in named:
            found.add(named[match.group(0).lower()])
    return found


def sentences(passage: str) -> list[str]:
    return [s for s in _SENTENCE.split(passage) if len(s.split()) >= 3] or [passage]


class Features:
    """The verifier's signals for (statement, passage) pairs. `idf` gives the index's IDF of
    each term and that of an unseen term (asked for each statement: the index may change). The
    vectors of passages and their sentences are cached (one answer's statements cite the same
    few passages)."""

    def __init__(
        self,
        embedder: Embedder,
        idf: Callable[[], tuple[Mapping[str, float], float]],
        lexicon: Lexicon | None = None,
    ) -> None:
        self.embedder = embedder
        self.idf = idf
        self.lexicon = lexicon or Lexicon.bundled()
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        known = {t: v for t in texts if (v := self._vectors.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            if len(self._vectors) > CACHED:  # a long-running service: start again
                self._vectors = {}
            for text, vector in zip(missing, self.embedder.embed_passages(missing), strict=True):
                known[text] = self._vectors[text] = vector
        return np.stack([known[t] for t in texts])

    def of(self, statement: str, passage: str) -> dict[str, float]:
        idf, unseen = self.idf()
        english = detect(statement) == "en"
        found = set(tokenize(passage))
        total = held = novel_known = 0.0
        novel_unknown = 0
        for forms in self._words(statement, english):
            known = [idf[f] for f in forms if f in idf]
            weight = max(known) if known else unseen
            total += weight
            if forms & found:
                held += weight
            elif known:
                novel_known += weight
            else:
                novel_unknown += 1
        parts = sentences(passage)
        vectors = self._embed([statement, passage, *parts])
        cosines = vectors[2:] @ vectors[0]
        closest = parts[int(np.argmax(cosines))]
        return {
            "overlap": held / total if total else 0.0,
            "novel_known": novel_known,
            "novel_unknown": math.log1p(novel_unknown),
            "numbers_missing": float(len(numbers(statement, english) - numbers(passage))),
            "negation": float(bool(_NEGATION.search(statement)) != bool(_NEGATION.search(closest))),
            "cos_sentence": float(np.max(cosines)),
            "cos_passage": float(vectors[1] @ vectors[0]),
            "english": float(english),
        }

    def _words(self, statement: str, english: bool) -> list[set[str]]:
        """The statement's content words, each as the stems it may take in the documents: an
        English word as itself (a Norwegian term kept in English text) or any Norwegian word
        the lexicon has for it."""
        found = []
        for word in dict.fromkeys(words(statement)):
            forms = {word, *self.lexicon.entries.get(word, ())} if english else {word}
            found.append(set(tokenize(" ".join(forms))))
        return [forms for forms in found if forms]


@dataclass(frozen=True)
class VerifierModel(logistic.Rule):
    """`probability`: the estimated probability that the passage supports the statement."""

    features: tuple[str, ...] = FEATURES

    def supports(self, signals: dict[str, float]) -> bool:
        return self.probability(signals) >= self.threshold

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> VerifierModel:
        return cls.pick(data_dir / FITTED_NAME, DEFAULT_PATH, embedder_id, COSINES)


@dataclass(frozen=True)
class Pair:
    """One labelled pair: does `passage` support `statement`?"""

    id: str
    statement: str
    passage: str
    supported: bool
    language: str = ""
    kind: str = ""

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Pair:
        passage = item.get("passage")
        text = passage.get("text") if isinstance(passage, dict) else passage
        statement = item.get("statement")
        if not isinstance(statement, str) or not isinstance(text, str):
            raise VerifierError(
                f"the pair {item.get('id', '?')} needs a statement and a passage text"
            )
        return cls(
            str(item.get("id", "")),
            statement,
            text,
            bool(item.get("supported")),
            str(item.get("language", "")),
            str(item.get("kind", "")),
        )


def is_pair(item: dict[str, Any]) -> bool:
    """Whether a labelled line is a statement–passage pair (not a question)."""
    return "statement" in item and "passage" in item


@dataclass
class VerifierFit:
    model: VerifierModel
    held_out: dict[str, float]  # cross-validated: supported kept, unsupported passed


def fit(
    features: Features,
    pairs: list[Pair],
    fitted_on: str,
    c: float = 1.0,
    unsupported_pass: float = UNSUPPORTED_PASS,
    folds: int = FOLDS,
) -> VerifierFit:
    """Logistic regression on the pairs' signals; the threshold is the lowest at which, held
    out (pairs of one passage kept in one fold), at most `unsupported_pass` of the unsupported
    statements pass."""
    labels = [p.supported for p in pairs]
    if len(set(labels)) < 2:
        raise VerifierError("the verifier needs supported and unsupported statements")
    passages = sorted({p.passage for p in pairs})
    # Models often repeat a sentence of the passage nearly word for word, which written
    # paraphrases never do: each passage's longest sentence joins the fit as supported by it
    # (not the threshold's choice nor the figures).
    quoted = [
        Pair("", sentence, text, True, kind="verbatim")
        for text in passages
        if (sentence := _longest(text))
    ]
    every = pairs + quoted
    rows = [
        [signals[name] for name in FEATURES]
        for signals in (features.of(p.statement, p.passage) for p in every)
    ]
    fold_of = {text: i % folds for i, text in enumerate(passages)}
    held = [0.0] * len(pairs)
    for fold in range(folds):
        train = [i for i, p in enumerate(every) if fold_of[p.passage] != fold]
        test = [i for i, p in enumerate(pairs) if fold_of[p.passage] == fold]
        if not test or len({every[i].supported for i in train}) < 2:
            continue
        weights = logistic.fit([rows[i] for i in train], [every[i].supported for i in train], c)
        for i in test:
            held[i] = logistic.probability(rows[i], **weights)
    threshold = _threshold(held, labels, unsupported_pass)
    model = VerifierModel(
        embedder=features.embedder.id,
        **logistic.fit(rows, [p.supported for p in every], c),
        threshold=threshold,
        fitted_on=fitted_on,
    )
    return VerifierFit(model, rates(held, labels, threshold))


def _longest(passage: str) -> str | None:
    """The passage's longest sentence of six words or more, without a bullet."""
    found = [s.strip(" •-–") for s in sentences(passage) if len(s.split()) >= 6]
    return max(found, key=len) if found else None


def rates(probabilities: list[float], labels: list[bool], threshold: float) -> dict[str, float]:
    supported = [p for p, y in zip(probabilities, labels, strict=True) if y]
    unsupported = [p for p, y in zip(probabilities, labels, strict=True) if not y]
    return {
        "threshold": threshold,
        "supported_kept": sum(p >= threshold for p in supported) / max(len(supported), 1),
        "unsupported_passed": sum(p >= threshold for p in unsupported) / max(len(unsupported), 1),
    }


def _threshold(probabilities: list[float], labels: list[bool], limit: float) -> float:
    """The lowest threshold (0.05 to 0.95, in steps of 0.01) at which at most `limit` of the
    unsupported statements pass."""
    unsupported = [p for p, y in zip(probabilities, labels, strict=True) if not y]
    for step in range(5, 96):
        threshold = step / 100
        if sum(p >= threshold for p in unsupported) <= limit * len(unsupported):
            return threshold
    return 0.95


def measure(features: Features, model: VerifierModel, pairs: list[Pair]) -> dict[str, Any]:
    """The verifier's figures on labelled pairs (`styringsbot eval`): the share of supported
    statements it keeps and of unsupported ones it lets pass, overall and by kind and language."""
    decided = [(p, model.supports(features.of(p.statement, p.passage))) for p in pairs]

    def figures(group: list[tuple[Pair, bool]]) -> dict[str, Any]:
        supported = [kept for p, kept in group if p.supported]
        unsupported = [kept for p, kept in group if not p.supported]
        return {
            "pairs": len(group),
            "supported_kept": sum(supported) / len(supported) if supported else None,
            "unsupported_passed": sum(unsupported) / len(unsupported) if unsupported else None,
        }

    groups: dict[str, list[tuple[Pair, bool]]] = {}
    for pair, kept in decided:
        for key in (f"kind {pair.kind}" if pair.kind else "", f"language {pair.language}"):
            if key.strip() and not key.endswith(" "):
                groups.setdefault(key, []).append((pair, kept))
    return {
        "threshold": model.threshold,
        "fitted_on": model.fitted_on,
        **figures(decided),
        "groups": {key: figures(group) for key, group in sorted(groups.items())},
    }


def table(figures: dict[str, Any]) -> str:
    """`measure`'s figures as the lines `styringsbot eval` prints."""

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"verifier (threshold {figures['threshold']:.2f}): {figures['pairs']} pairs, supported "
        f"kept {share(figures['supported_kept'])}, unsupported passed "
        f"{share(figures['unsupported_passed'])}",
        f"{'group':<28} {'n':>4} {'kept':>6} {'passed':>7}",
    ]
    for key, group in figures["groups"].items():
        lines.append(
            f"{key:<28} {group['pairs']:>4} {share(group['supported_kept']):>6} "
            f"{share(group['unsupported_passed']):>7}"
        )
    return "\n".join(lines)
