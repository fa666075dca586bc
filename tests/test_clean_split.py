"""Cleaning (boilerplate, hyphenation, wrap), splitting into chunks, and the manifest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.clean import (
    clean_pages,
    dehyphenate,
    find_boilerplate,
    normalize,
    reflow,
    strip_boilerplate,
)
from ingest.loaders import load
from ingest.manifest import Manifest, ManifestError, title_from_filename
from ingest.model import Chunk, Page, Source
from ingest.split import split_pages

SEED = Path(__file__).resolve().parents[1] / "knowledge"
STYRINGSDIALOGEN = SEED / "styringsdialogen-sann-gjor-vi-det-her-2019.txt"


# --- normalize -------------------------------------------------------------------------------


def test_normalize_whitespace_bullets_and_soft_hyphens() -> None:
    text = "Mål\u00adstyring\u00a0 og  tillit  \r\n\uf0b7 punkt\t\tto\fside\u2028linje"

    assert normalize(text) == "Målstyring og tillit\n• punkt to\nside\nlinje"


def test_normalize_composes_unicode() -> None:
    decomposed = "a\u030ar"  # "å" as a + combining ring
    assert normalize(decomposed) == "år"


# --- boilerplate -----------------------------------------------------------------------------


def _template_pages() -> list[str]:
    pages = []
    for i in range(10):
        lines = [f"Lysbilde om tema {i}", f"Innhold som bare står her nummer {i}"]
        if i < 8:
            lines += ["Oslo kommune", "Det er lov å endre bakgrunnsfarge."]
        if i in (2, 5):
            lines.append("Tillit er et prinsipp")  # content repeated on two pages only
        pages.append("\n".join(lines))
    return pages


def test_find_boilerplate_finds_template_lines() -> None:
    found = find_boilerplate(_template_pages())

    assert "oslo kommune" in found  # keys are case-folded
    assert "det er lov å endre bakgrunnsfarge." in found


def test_find_boilerplate_ignores_lines_on_one_or_two_pages() -> None:
    found = find_boilerplate(_template_pages())

    assert "tillit er et prinsipp" not in found
    assert not any(key.startswith(("lysbilde om tema", "innhold som")) for key in found)


def test_find_boilerplate_matches_case_and_spacing_insensitively() -> None:
    pages = ["OSLO  KOMMUNE\nA", "Oslo kommune\nB", "oslo Kommune\nC"]

    assert find_boilerplate(pages) == {"oslo kommune"}


def test_find_boilerplate_needs_a_share_of_the_pages() -> None:
    # On 3 of 20 pages (15 %) a line is not boilerplate; on 4 of 20 (20 %) it is.
    pages = [f"Side {i} med eget innhold" for i in range(20)]
    pages = [p + ("\nTre ganger" if i < 3 else "") for i, p in enumerate(pages)]
    pages = [p + ("\nFire ganger" if i < 4 else "") for i, p in enumerate(pages)]

    found = find_boilerplate(pages)

    assert "fire ganger" in found
    assert "tre ganger" not in found


def test_find_boilerplate_needs_three_pages() -> None:
    assert find_boilerplate(["Mal\nEn", "Mal\nTo"]) == set()
    assert find_boilerplate(["Mal\nEn", "Mal\nTo", "Mal\nTre"]) == {"mal"}


def test_find_boilerplate_ignores_lines_without_word_characters() -> None:
    pages = ["• \n---\nA", "• \n---\nB", "• \n---\nC"]

    assert find_boilerplate(pages) == set()


def test_strip_boilerplate_removes_lines() -> None:
    boilerplate = {"oslo kommune", "det er lov å endre bakgrunnsfarge."}
    text = "Formål\nOslo  Kommune\nTekst om formål.\nDet er lov å endre bakgrunnsfarge."

    assert strip_boilerplate(text, boilerplate) == "Formål\nTekst om formål."


def test_strip_boilerplate_cuts_boilerplate_running_into_a_real_line() -> None:
    boilerplate = {"tekst/logo", "ha negativ"}

    assert strip_boilerplate("tekst/logo Formål", boilerplate) == "Formål"
    assert strip_boilerplate("ha negativ tekst/logo", boilerplate) == "tekst/logo"
    # only a prefix is cut, never the middle or the end of a line
    assert strip_boilerplate("Formål tekst/logo", boilerplate) == "Formål tekst/logo"


def test_strip_boilerplate_without_boilerplate_is_identity() -> None:
    text = "tekst/logo Formål\n\nAnnet"
    assert strip_boilerplate(text, set()) == text


def test_clean_pages_few_pages_keep_repeated_lines() -> None:
    cleaned = clean_pages(["Oslo kommune\nEn", "Oslo kommune\nTo"])

    assert all("Oslo kommune" in page for page in cleaned)


def test_clean_pages_extra_boilerplate() -> None:
    cleaned = clean_pages(["Konfidensielt\nInnhold her."], extra_boilerplate={"konfidensielt"})

    assert cleaned == ["Innhold her."]


# --- the seed presentation -------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_slides() -> tuple[list[Page], list[str]]:
    pages = load(STYRINGSDIALOGEN).pages
    return pages, clean_pages([p.text for p in pages])


def test_seed_template_text_is_gone(seed_slides: tuple[list[Page], list[str]]) -> None:
    _, cleaned = seed_slides

    assert len(cleaned) == 15
    for text in cleaned:
        assert "Det er lov å endre" not in text
        assert "bakgrunnsfarge" not in text
        assert "tekst/logo" not in text


def test_seed_slide_11_content_survives(seed_slides: tuple[list[Page], list[str]]) -> None:
    pages, cleaned = seed_slides
    slide = cleaned[10]

    assert pages[10].number == 11
    assert slide.splitlines()[0] == "Etatsstyringsmøte"  # was "tekst/logo Etatsstyringsmøte"
    assert "Ledes av kommunaldirektør" in slide
    assert "inntil fire møter i året" in slide


def test_seed_content_is_not_taken_for_boilerplate(
    seed_slides: tuple[list[Page], list[str]],
) -> None:
    _, cleaned = seed_slides
    everything = "\n".join(cleaned)

    assert "ikke virksomhetsstyring" in everything
    assert "mål- og resultatstyring" in everything
    assert "Rapportering" in everything  # "Rapport\n-ering" in the extraction


def test_seed_slides_split_into_cited_chunks(seed_slides: tuple[list[Page], list[str]]) -> None:
    pages, cleaned = seed_slides
    source = Source("styringsdialogen.txt", "Styringsdialogen", kind="presentation")

    chunks = split_pages(source, pages, cleaned)

    locations = {c.location for c in chunks}
    assert "lysbilde 11" in locations
    assert "lysbilde 14" not in locations  # "Tittellysbilde gul 2"
    assert "lysbilde 15" not in locations  # "Takk for oss !"
    slide_11 = [c for c in chunks if c.location == "lysbilde 11"]
    assert {c.heading for c in slide_11} == {"Etatsstyringsmøte"}
    assert any("inntil fire møter i året" in c.text for c in slide_11)
    assert all("bakgrunnsfarge" not in c.text for c in chunks)


# --- hyphenation and line wrap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lovlige farge-\nkombinasjoner.", "lovlige fargekombinasjoner."),
        ("Etatsstyrings-\n\nmøter", "Etatsstyringsmøter"),
        ("Rapport\n-ering", "Rapportering"),
        ("prosjektkarakt\n-er)", "prosjektkarakter)"),
    ],
)
def test_dehyphenate_joins_broken_words(text: str, expected: str) -> None:
    assert dehyphenate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "om mål-\nog resultatstyring",
        "barne-\neller ungdomsskole",
        "Oslo-\nKommune",  # a capital after the break: a name or a new line, not a broken word
        "Dialogsløyfe –\n-Tilliten må gå begge veier.",
        "Innledning\n\n-Omtaler den skriftlige delen",
    ],
)
def test_dehyphenate_keeps_real_hyphens(text: str) -> None:
    assert dehyphenate(text) == text


def test_dehyphenate_keeps_dash_list_items() -> None:
    assert dehyphenate("Tiltak\n-Bedre dialog\n-Mer tillit") == "Tiltak\n-Bedre dialog\n-Mer tillit"


def test_reflow_joins_wrapped_lines() -> None:
    text = "Legge til rette for en mer samordnet\npraksis i Oslo kommune"

    assert reflow(text) == "Legge til rette for en mer samordnet praksis i Oslo kommune"


def test_reflow_keeps_bullets_sentences_and_headings() -> None:
    text = (
        "# Overskrift\nstarter med liten\n"
        "Første setning.\nneste linje etter punktum\n"
        "• første punkt som\nfortsetter her\n"
        "• andre punkt\n"
        "Stor bokstav blir stående"
    )

    assert reflow(text).split("\n") == [
        "# Overskrift",
        "starter med liten",
        "Første setning.",
        "neste linje etter punktum",
        "• første punkt som fortsetter her",
        "• andre punkt",
        "Stor bokstav blir stående",
    ]


def test_reflow_paragraph_breaks() -> None:
    # One blank line still lets a lowercase line continue; two or more keep the break (max two).
    assert reflow("Mål og\n\nresultat") == "Mål og resultat"
    assert reflow("Mål og\n\n\nresultat") == "Mål og\n\n\nresultat"
    assert reflow("Første\n\n\n\n\nAndre") == "Første\n\n\nAndre"
    assert reflow("Første\n\nAndre") == "Første\n\nAndre"


# --- splitting -------------------------------------------------------------------------------

_SLIDE_FOUR = (
    "Etatsstyringsmøte\n\n"
    "Hovedtilnærming er inntil fire møter i året.\n"
    "• Ledes av kommunaldirektør. Fra BYR: ledergruppe.\n"
    "• Hovedvekt på måloppnåelse, resultater og risiko."
)
_SLIDE_FIVE = "Takk!"
_SLIDE_SEVEN = "Kontaktmøter\n\n" + "\n".join(
    f"• Punkt {i} sier at kontaktmøter med politisk ledelse krever god rolleforståelse."
    for i in range(60)
)
_SLIDE_NINE = (
    "• kort punkt uten overskrift om tillitsbasert styring\n"
    "• enda et punkt om dialog mellom nivåene"
)


def _presentation() -> tuple[Source, list[Page], list[str]]:
    source = Source("mappe/dialog.pptx", "Styringsdialogen", kind="presentation")
    texts = [_SLIDE_FOUR, _SLIDE_FIVE, _SLIDE_SEVEN, _SLIDE_NINE]
    pages = [Page(text, number=n) for text, n in zip(texts, (4, 5, 7, 9), strict=True)]
    return source, pages, texts


def test_split_presentation_locations_are_real_slide_numbers() -> None:
    source, pages, texts = _presentation()

    chunks = split_pages(source, pages, texts)

    assert chunks
    assert all(re.fullmatch(r"lysbilde \d+", c.location or "") for c in chunks)
    assert {c.location for c in chunks} == {"lysbilde 4", "lysbilde 7", "lysbilde 9"}
    assert all(c.source == "mappe/dialog.pptx" for c in chunks)
    assert all(c.title == "Styringsdialogen" for c in chunks)


def test_split_skips_pages_with_almost_no_letters() -> None:
    source, pages, texts = _presentation()

    chunks = split_pages(source, pages, texts)

    assert "lysbilde 5" not in {c.location for c in chunks}
    assert all("Takk!" not in c.text for c in chunks)


def test_split_chunks_never_span_pages() -> None:
    source, pages, texts = _presentation()
    by_slide = dict(zip((f"lysbilde {p.number}" for p in pages), texts, strict=True))

    chunks = split_pages(source, pages, texts)

    for chunk in chunks:
        page_text = by_slide[chunk.location]
        for line in chunk.text.split("\n"):
            assert line in page_text
        others = [t for loc, t in by_slide.items() if loc != chunk.location]
        assert not any(chunk.text in other for other in others)


def test_split_heading_is_first_line_of_slide() -> None:
    source, pages, texts = _presentation()

    chunks = split_pages(source, pages, texts)

    headings = {c.location: c.heading for c in chunks}
    assert headings["lysbilde 4"] == "Etatsstyringsmøte"
    assert all(c.heading == "Kontaktmøter" for c in chunks if c.location == "lysbilde 7")
    assert headings["lysbilde 9"] is None  # a bullet is not a heading


def test_split_page_heading_wins_over_first_line() -> None:
    source = Source("a.pptx", "Tittel", kind="presentation")
    page = Page(_SLIDE_FOUR, number=2, heading="Satt overskrift")

    (chunk,) = split_pages(source, [page], [_SLIDE_FOUR])

    assert chunk.heading == "Satt overskrift"


def test_split_short_slide_is_one_chunk() -> None:
    source, pages, texts = _presentation()

    chunks = split_pages(source, pages, texts)

    slide_four = [c for c in chunks if c.location == "lysbilde 4"]
    assert len(slide_four) == 1
    assert slide_four[0].text == _SLIDE_FOUR


def test_split_long_slide_into_bounded_chunks_at_bullets() -> None:
    source, pages, texts = _presentation()

    chunks = [c for c in split_pages(source, pages, texts) if c.location == "lysbilde 7"]

    assert len(_SLIDE_SEVEN) > 4000
    assert len(chunks) >= 3
    assert all(240 <= len(c.text) <= 1600 for c in chunks)
    for chunk in chunks:
        assert chunk.text[0].isupper() or chunk.text.startswith("• ")
        assert chunk.text.endswith("rolleforståelse.")
    # nothing lost, nothing doubled
    numbers = [int(n) for c in chunks for n in re.findall(r"Punkt (\d+) sier", c.text)]
    assert numbers == list(range(60))


def test_split_long_paragraph_is_bounded_and_complete() -> None:
    sentences = [f"Setning nummer {i} handler om styring og ledelse i kommunen." for i in range(60)]
    text = " ".join(sentences)
    source = Source("notat.txt", "Notat", kind="memo")

    chunks = split_pages(source, [Page(text, number=2)], [text])

    assert len(chunks) >= 3
    assert all(len(c.text) <= 1600 for c in chunks)
    assert {c.location for c in chunks} == {"side 2"}
    numbers = [int(n) for c in chunks for n in re.findall(r"nummer (\d+) handler", c.text)]
    assert numbers == list(range(60))
    for chunk in chunks:
        assert re.match(r"\W*\w", chunk.text)
        assert not re.match(r"[a-zæøå]", chunk.text)  # never starts mid-word


def test_split_long_paragraph_chunks_end_at_sentence_boundaries() -> None:
    text = " ".join(
        f"Setning nummer {i} handler om styring og ledelse i kommunen." for i in range(60)
    )
    source = Source("notat.txt", "Notat", kind="memo")

    chunks = split_pages(source, [Page(text, number=2)], [text])

    assert len(chunks) >= 2
    for chunk in chunks:
        assert chunk.text.startswith("Setning")
        assert chunk.text.endswith("kommunen.")


def test_split_memo_locations_say_side() -> None:
    source = Source("notat.txt", "Notat", kind="memo")
    texts = [
        "1. Bakgrunn\nTopplederprogrammet har pågått siden 2017 og evalueres nå.",
        "2. Mål for 2021\nProgrammet skal styrke lederes rolleforståelse og samarbeid.",
    ]
    pages = [Page(t, number=n) for t, n in zip(texts, (1, 2), strict=True)]

    chunks = split_pages(source, pages, texts)

    assert [c.location for c in chunks] == ["side 1", "side 2"]
    assert [c.heading for c in chunks] == ["1. Bakgrunn", "2. Mål for 2021"]


def test_split_unnumbered_pages_cite_their_heading() -> None:
    source = Source("veileder.docx", "Veileder", kind="document")
    text = "Formål\nRetningslinjene gjelder for alle byrådsavdelinger i kommunen."

    (chunk,) = split_pages(source, [Page(text, heading="Formål")], [text])

    assert chunk.location == "«Formål»"
    assert chunk.heading == "Formål"


def test_split_chunk_ids_are_unique_and_stable() -> None:
    source, pages, texts = _presentation()

    first = split_pages(source, pages, texts)
    second = split_pages(source, pages, texts)

    assert len({c.id for c in first}) == len(first)
    assert [c.id for c in first] == [c.id for c in second]


def test_embedding_text_starts_with_title_and_heading() -> None:
    source, pages, texts = _presentation()

    chunk = next(c for c in split_pages(source, pages, texts) if c.location == "lysbilde 4")

    assert chunk.embedding_text() == f"Styringsdialogen – Etatsstyringsmøte\n{chunk.text}"
    bare = Chunk("id", "a.txt", "Tittel", None, None, "Tekst")
    assert bare.embedding_text() == "Tittel\nTekst"


# --- Source.location -------------------------------------------------------------------------


def test_source_location() -> None:
    presentation = Source("a.pptx", "A", kind="presentation")
    memo = Source("b.txt", "B", kind="memo")
    document = Source("c.pdf", "C")

    assert presentation.location(Page("x", number=12)) == "lysbilde 12"
    assert memo.location(Page("x", number=3)) == "side 3"
    assert document.location(Page("x", number=1, heading="Innledning")) == "side 1"
    assert document.location(Page("x", heading="Innledning")) == "«Innledning»"
    assert document.location(Page("x")) is None


# --- manifest --------------------------------------------------------------------------------


def _manifest(tmp_path: Path, text: str) -> Manifest:
    (tmp_path / "sources.yaml").write_text(text, encoding="utf-8")
    return Manifest.read(tmp_path)


def test_manifest_entry_gives_title_kind_date(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path,
        "documents:\n"
        "  - file: dialog.txt\n"
        "    title: Styringsdialogen – sånn gjør vi det her\n"
        "    kind: presentation\n"
        '    date: "2019"\n'
        "    description: >-\n"
        "      Retningslinjer for\n"
        "      styringsdialogen.\n",
    )

    source = manifest.source_for("dialog.txt", declared_title="Ignorert tittel")

    assert source.path == "dialog.txt"
    assert source.title == "Styringsdialogen – sånn gjør vi det her"
    assert source.kind == "presentation"
    assert source.date == "2019"
    assert source.description == "Retningslinjer for styringsdialogen."


def test_manifest_defaults_for_file_without_entry(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "documents:\n  - file: annen.txt\n    title: Annen\n")

    declared = manifest.source_for("rapport.pdf", declared_title="Årsrapport 2020")
    deck = manifest.source_for("mappe/tillit-og_styring.pptx")
    doc = manifest.source_for("notat.DOCX")

    assert declared.title == "Årsrapport 2020"
    assert declared.kind == "document"
    assert declared.date is None
    assert declared.description is None
    assert deck.title == "Tillit og styring"
    assert deck.kind == "presentation"
    assert doc.kind == "document"
    assert doc.title == "Notat"


def test_manifest_entry_without_kind_uses_suffix_default(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path,
        "documents:\n  - file: lysark.pptx\n    title: Lysark\n"
        "  - file: annet.pdf\n    title: Annet\n",
    )

    source = manifest.source_for("lysark.pptx")

    assert source.title == "Lysark"
    assert source.kind == "presentation"  # an entry without kind still gets the suffix default
    assert manifest.source_for("annet.pdf").kind == "document"


def test_manifest_missing_file_is_empty(tmp_path: Path) -> None:
    manifest = Manifest.read(tmp_path)

    assert manifest.entries == {}
    assert manifest.source_for("x.txt").title == "X"


def test_manifest_empty_file_is_empty(tmp_path: Path) -> None:
    assert _manifest(tmp_path, "").entries == {}


def test_manifest_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="YAML"):
        _manifest(tmp_path, "documents:\n  - file: a.txt\n    title: [uavsluttet\n")


def test_manifest_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="lysbildeserie"):
        _manifest(tmp_path, "documents:\n  - file: a.txt\n    kind: lysbildeserie\n")


@pytest.mark.parametrize(
    "text",
    [
        "documents: ikke en liste\n",
        "- file: a.txt\n",
        "documents:\n  - title: Mangler fil\n",
        "documents:\n  - bare en streng\n",
    ],
)
def test_manifest_malformed_structure(tmp_path: Path, text: str) -> None:
    with pytest.raises(ManifestError):
        _manifest(tmp_path, text)


def test_seed_manifest_reads() -> None:
    manifest = Manifest.read(SEED)

    source = manifest.source_for("tilbud-til-toppledere-2021-notat.txt")
    assert source.kind == "memo"
    assert source.date == "2021"
    assert "styringsdialogen-sann-gjor-vi-det-her-2019.txt" in manifest.entries


def test_title_from_filename() -> None:
    assert title_from_filename("mappe/styring_og--ledelse.txt") == "Styring og ledelse"
    assert title_from_filename("a.pdf") == "A"


def test_reflow_joins_a_wrapped_parenthesis() -> None:
    # A slide's bullet wrapped onto a line that opens with its parenthesis.
    text = "• Styring av virksomheter\n\n(etatsstyring) og foretak"
    assert reflow(text) == "• Styring av virksomheter (etatsstyring) og foretak"
    # A parenthesis after a full stop, or one opening a capitalised remark, stands apart.
    assert reflow("Slutt.\n(merknad)") == "Slutt.\n(merknad)"
    assert reflow("Tekst\n(Se vedlegg)") == "Tekst\n(Se vedlegg)"
