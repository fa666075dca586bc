"""When to say "the documents do not answer this": a logistic rule over what retrieval and the
reader found.

The signals ask three things: is the *topic* in the documents (the best cosine, the share of the
question's words the first passages hold, words the index has never seen, a name inside the
question it never mentions), is the *answer* there
(the reader's best sentence, whether any candidate holds the asked-for answer type, a year the
question names that no passage covers, a question about "today"), and is the question *like* the
labelled ones the documents answer or like those they do not ("who signs …", "what did … cost",
"how does Bergen …": the question memory). The weights are fitted
(`styringsbot calibrate`) on labelled questions, near-domain ones among them, and measured on sets
they never saw. A fit for the current index in the data dir takes precedence over the shipped
default, which was fitted on the seed corpus with the default embedder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot import logistic

FEATURES = (
    "dense_top",  # best cosine similarity of the question with a passage
    "coverage_top3",  # best IDF-weighted share of the question's words among the first three
    "unknown_share",  # IDF-weighted share of the question's words the index has never seen
    "english",  # English question (its words are not the documents' words)
    "unknown_name",  # it names something the index never mentions ("Bergen", "GDPR")
    "reader_top",  # the reader's estimate that its best sentence answers (logit)
    "type_support",  # a sentence about the question holds the asked-for answer type
    "type_unsupported",  # it asks for a name, number, date … and no sentence about it has one
    "lead_coverage",  # share of the question's words the best sentence and its heading hold
    "year_missing",  # the question names a year that no passage read covers
    "present",  # the question asks about "today"/"now"; the documents describe a past year
    "errand",  # the question asks how to do something for oneself ("hvordan søker jeg …")
    "guided",  # the role guide answers it (a defined term, a card field, a classification)
    "like_answered",  # nearer the labelled questions the documents answer than those they do not
)
DEFAULT_PATH = Path(__file__).with_name("fitted") / "abstention.json"
FITTED_NAME = "abstention.json"
MEMORY_DEFAULT = Path(__file__).with_name("fitted") / "questions.npz"
MEMORY_NAME = "questions.npz"
NEIGHBOURS = 5  # how many of the nearest labelled questions of each kind a question is compared to


@dataclass(frozen=True)
class QuestionMemory:
    """The labelled questions of a calibration, as the embedder sees them (their query vectors),
    and whether the documents answer each. A new question's `like_answered` is the mean cosine of
    its NEIGHBOURS nearest answered questions minus that of its nearest unanswered ones: positive
    when it is phrased like what the documents answer, negative when like what they do not.

    An unanswered question whose reason another signal names (a name the index never mentions,
    a year no passage covers) is left out of the comparison: its vector carries its topic, which
    the documents may well answer ("Hvor mange ansatte hadde Oslo kommune i 2023?" is no reason
    to turn away "Hvor mange ansatte har Oslo kommune?")."""

    embedder: str
    vectors: np.ndarray  # one unit vector per labelled question
    answered: np.ndarray  # bool, per labelled question
    questions: tuple[str, ...]
    explained: np.ndarray | None = None  # bool: unanswered for a reason another signal names

    def _compared(self) -> np.ndarray:
        """Which labelled questions the signal compares with (bool, per question)."""
        if self.explained is None:
            return np.ones(len(self.answered), dtype=bool)
        return self.answered | ~self.explained

    def like_answered(self, vector: np.ndarray | None, among: np.ndarray | None = None) -> float:
        """The signal for a query vector, compared with the labelled questions `among` (indices;
        all of them when None). 0 when there is nothing to compare with."""
        if vector is None:
            return 0.0
        vectors, answered, compared = self.vectors, self.answered, self._compared()
        if among is not None:
            vectors, answered, compared = vectors[among], answered[among], compared[among]
        answered, unanswered = answered & compared, ~answered & compared
        if not answered.any() or not unanswered.any():
            return 0.0
        similarity = vectors @ np.asarray(vector, vectors.dtype)
        return float(_top_mean(similarity[answered]) - _top_mean(similarity[unanswered]))

    def nearest(self, vector: np.ndarray | None, n: int = 2) -> list[tuple[str, bool, float]]:
        """The `n` nearest labelled questions of each kind: (question, answered, cosine)."""
        if vector is None or not len(self.questions):
            return []
        similarity = self.vectors @ np.asarray(vector, self.vectors.dtype)
        found: list[tuple[str, bool, float]] = []
        compared = self._compared()
        for kind in (True, False):
            rows = np.flatnonzero((self.answered == kind) & compared)
            seen: set[str] = set()  # a question labelled in two files is shown once
            for row in rows[np.argsort(-similarity[rows], kind="stable")]:
                if len(seen) == n:
                    break
                if self.questions[row] not in seen:
                    seen.add(self.questions[row])
                    found.append((self.questions[row], kind, round(float(similarity[row]), 4)))
        return found

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            embedder=np.array(self.embedder),
            vectors=self.vectors.astype(np.float16),
            answered=self.answered.astype(bool),
            questions=np.array(self.questions, dtype=str),
            explained=~self._compared(),
        )

    @classmethod
    def load(cls, path: Path) -> QuestionMemory:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                str(data["embedder"]),
                data["vectors"].astype(np.float32),
                data["answered"].astype(bool),
                tuple(str(q) for q in data["questions"]),
                data["explained"].astype(bool) if "explained" in data else None,
            )

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> QuestionMemory | None:
        """The memory calibrated in the data dir, else the shipped one, for this embedder only:
        another embedder's vectors cannot be compared (the signal is then 0)."""
        for path in (data_dir / MEMORY_NAME, MEMORY_DEFAULT):
            if path.exists():
                try:
                    memory = cls.load(path)
                except (OSError, ValueError, KeyError):
                    continue
                if memory.embedder == embedder_id:
                    return memory
        return None


def _top_mean(similarity: np.ndarray) -> float:
    k = min(NEIGHBOURS, len(similarity))
    return float(np.partition(similarity, -k)[-k:].mean())


@dataclass(frozen=True)
class AbstentionModel(logistic.Rule):
    """`probability`: the estimated probability that the documents answer the question."""

    features: tuple[str, ...] = FEATURES

    def abstains(self, signals: dict[str, float]) -> bool:
        return self.probability(signals) < self.threshold

    @classmethod
    def load(cls, path: Path) -> AbstentionModel:
        # Rules fitted before the reader existed name no features: the four retrieval signals.
        return cls(**cls.read(path, FEATURES[:4]))

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> AbstentionModel:
        return cls.pick(data_dir / FITTED_NAME, DEFAULT_PATH, embedder_id, ("dense_top",))


def fit(
    signals: list[dict[str, float]],
    answerable: list[bool],
    embedder: str,
    fitted_on: str,
    c: float = 1.0,
    threshold: float = 0.5,
) -> AbstentionModel:
    """Class-balanced, L2-regularized logistic regression on standardized signals."""
    if len(set(answerable)) < 2:
        raise ValueError("calibration needs both answerable and out-of-scope questions")
    rows = [[s.get(name, 0.0) for name in FEATURES] for s in signals]
    return AbstentionModel(
        embedder=embedder,
        **logistic.fit(rows, answerable, c),
        threshold=threshold,
        fitted_on=fitted_on,
    )
