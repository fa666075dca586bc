"""Loaders: each test writes a real file with the format's own library and loads it back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.loaders import MAX_TITLE_CHARS, LoadedFile, LoadError, is_supported, load

# --- PDF -------------------------------------------------------------------------------------


def _write_pdf(path: Path, pages: list[str], title: str | None = None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def test_pdf_pages_numbers_text_and_title(tmp_path: Path) -> None:
    path = tmp_path / "rapport.pdf"
    _write_pdf(
        path,
        [
            "Innledning om styringsdialogen.",
            "Etatsstyringsmoter holdes fire ganger i aret.",
            "Oppsummering og videre arbeid.",
        ],
        title="Styringsrapport 2019",
    )

    loaded = load(path)

    assert isinstance(loaded, LoadedFile)
    assert [p.number for p in loaded.pages] == [1, 2, 3]
    assert "Innledning" in loaded.pages[0].text
    assert "Etatsstyringsmoter" in loaded.pages[1].text
    assert "Oppsummering" in loaded.pages[2].text
    # each page holds only its own text
    assert "Etatsstyringsmoter" not in loaded.pages[0].text
    assert "Innledning" not in loaded.pages[2].text
    assert loaded.title == "Styringsrapport 2019"


def test_pdf_latin1_text_survives(tmp_path: Path) -> None:
    path = tmp_path / "norsk.pdf"
    _write_pdf(path, ["Byrådsavdelingen og måloppnåelse for økonomi."])

    loaded = load(path)

    assert len(loaded.pages) == 1
    text = " ".join(loaded.pages[0].text.split())
    assert "Byrådsavdelingen" in text
    assert "måloppnåelse" in text
    assert "økonomi" in text


def test_pdf_without_title_metadata_has_no_title(tmp_path: Path) -> None:
    path = tmp_path / "uten-tittel.pdf"
    _write_pdf(path, ["Bare tekst her."])

    assert load(path).title is None


def test_an_outsized_declared_title_is_shortened_at_a_word(tmp_path: Path) -> None:
    """A title a file declares about itself cannot be refused like a manifest's; longer than a
    title can be (it goes with every passage into the model), it is cut at a word."""
    words = "Styringsdokument for etatsstyring og oppfølging av virksomhetene"
    path = tmp_path / "lang-tittel.pdf"
    _write_pdf(path, ["Innhold om styringsdialogen."], title=" ".join([words] * 40))

    title = load(path).title

    assert title is not None
    assert len(title) <= MAX_TITLE_CHARS
    assert title.endswith("…")
    assert " ".join([words] * 40).startswith(title[:-1])
    assert title[:-1].split()[-1] in words.split()  # no word cut in half


# --- DOCX ------------------------------------------------------------------------------------


def _write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Retningslinjer for styringsdialog"
    document.add_paragraph("Innledende tekst før første overskrift.")
    document.add_heading("Formål og virkeområde", level=1)
    document.add_paragraph("Retningslinjene gjelder for alle byrådsavdelinger.")
    document.add_paragraph("De skal skape forutsigbarhet.")
    document.add_heading("Etatsstyringsmøter", level=1)
    document.add_paragraph("Ledes av kommunaldirektør", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Møtetype"
    table.cell(0, 1).text = "Hyppighet"
    table.cell(1, 0).text = "Etatsstyring"
    table.cell(1, 1).text = "Fire i året"
    document.save(str(path))


def test_docx_splits_at_headings(tmp_path: Path) -> None:
    path = tmp_path / "retningslinjer.docx"
    _write_docx(path)

    loaded = load(path)

    assert loaded.title == "Retningslinjer for styringsdialog"
    assert [p.heading for p in loaded.pages] == [
        None,
        "Formål og virkeområde",
        "Etatsstyringsmøter",
    ]
    assert all(p.number is None for p in loaded.pages)
    intro, purpose, meetings = loaded.pages
    assert "Innledende tekst" in intro.text
    assert "Formål og virkeområde" not in intro.text
    assert purpose.text.splitlines()[0] == "Formål og virkeområde"
    assert "gjelder for alle byrådsavdelinger" in purpose.text
    assert "skape forutsigbarhet" in purpose.text
    assert "Ledes av" not in purpose.text
    assert meetings.text.splitlines()[0] == "Etatsstyringsmøter"


def test_docx_list_items_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "retningslinjer.docx"
    _write_docx(path)

    meetings = load(path).pages[-1]
    lines = meetings.text.splitlines()

    assert "• Ledes av kommunaldirektør" in lines
    for cell in ("Møtetype", "Hyppighet", "Etatsstyring", "Fire i året"):
        assert cell in meetings.text
    assert "Møtetype | Hyppighet" in lines
    assert "Etatsstyring | Fire i året" in lines


def test_docx_without_title_property(tmp_path: Path) -> None:
    import docx

    path = tmp_path / "notat.docx"
    document = docx.Document()
    document.add_paragraph("Bare ett avsnitt.")
    document.save(str(path))

    loaded = load(path)

    assert loaded.title is None
    assert len(loaded.pages) == 1
    assert "Bare ett avsnitt." in loaded.pages[0].text


# --- PPTX ------------------------------------------------------------------------------------


def _write_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    deck.core_properties.title = "Tillitsbasert styring"
    layout = deck.slide_layouts[1]  # Title and Content

    slide = deck.slides.add_slide(layout)
    slide.shapes.title.text = "Bakgrunn"
    slide.placeholders[1].text_frame.text = "Byrådssak om tillitsreform"

    slide = deck.slides.add_slide(layout)
    slide.shapes.title.text = "Roller og ansvar"
    body = slide.placeholders[1].text_frame
    body.text = "Byråden styrer etatene"
    body.add_paragraph().text = "Virksomhetene leverer tjenester"

    slide = deck.slides.add_slide(layout)
    slide.shapes.title.text = "Møteoversikt"
    slide.placeholders[1].text_frame.text = "Oversikt over møtene"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(6), Inches(1)).table
    table.cell(0, 0).text = "Etatsstyringsmøte"
    table.cell(0, 1).text = "Kvartalsvis"
    table.cell(1, 0).text = "Kontaktmøte"
    table.cell(1, 1).text = "Månedlig"
    deck.save(str(path))


def test_pptx_slides_numbered_with_titles(tmp_path: Path) -> None:
    path = tmp_path / "tillit.pptx"
    _write_pptx(path)

    loaded = load(path)

    assert loaded.title == "Tillitsbasert styring"
    assert [p.number for p in loaded.pages] == [1, 2, 3]
    assert [p.heading for p in loaded.pages] == ["Bakgrunn", "Roller og ansvar", "Møteoversikt"]
    assert "Byrådssak om tillitsreform" in loaded.pages[0].text
    second = loaded.pages[1].text.splitlines()
    assert "Byråden styrer etatene" in second
    assert "Virksomhetene leverer tjenester" in second
    assert "Byråden" not in loaded.pages[0].text


def test_pptx_table_text_present(tmp_path: Path) -> None:
    path = tmp_path / "tillit.pptx"
    _write_pptx(path)

    third = load(path).pages[2]
    lines = third.text.splitlines()

    assert "Oversikt over møtene" in lines
    assert "Etatsstyringsmøte | Kvartalsvis" in lines
    assert "Kontaktmøte | Månedlig" in lines


# --- HTML ------------------------------------------------------------------------------------

_HTML = """<!doctype html>
<html><head><title>Styringsportalen</title>
<script>var hemmeligSkript = "SKRIPTTEKST";</script>
<style>body { color: STILTEKST; }</style>
</head>
<body>
<nav><a href="/">Navigasjonsmeny</a> <a href="/om">Om oss</a></nav>
<h1>Tillitsbasert styring</h1>
<p>Tillit er et <b>grunnleggende</b> prinsipp.</p>
<h2>Roller</h2>
<ul><li>Byråden styrer</li><li>Etaten leverer</li></ul>
<script>document.write("ENDASKRIPT")</script>
<footer>Bunntekst for nettstedet</footer>
</body></html>
"""


def test_html_sections_headings_and_dropped_chrome(tmp_path: Path) -> None:
    path = tmp_path / "side.html"
    path.write_text(_HTML, encoding="utf-8")

    loaded = load(path)

    assert loaded.title == "Styringsportalen"
    assert [p.heading for p in loaded.pages] == ["Tillitsbasert styring", "Roller"]
    assert "Tillit er et grunnleggende prinsipp." in loaded.pages[0].text
    roles = loaded.pages[1].text.splitlines()
    assert "• Byråden styrer" in roles
    assert "• Etaten leverer" in roles
    everything = "\n".join(p.text for p in loaded.pages)
    for dropped in ("Navigasjonsmeny", "SKRIPTTEKST", "ENDASKRIPT", "STILTEKST", "Bunntekst"):
        assert dropped not in everything


def test_html_title_falls_back_to_first_heading(tmp_path: Path) -> None:
    path = tmp_path / "side.htm"
    path.write_text("<html><body><h1>Første overskrift</h1><p>Tekst.</p></body></html>")

    loaded = load(path)

    assert loaded.title == "Første overskrift"
    assert loaded.pages[0].heading == "Første overskrift"


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_sections_with_headings(tmp_path: Path) -> None:
    path = tmp_path / "notat.md"
    path.write_text(
        "# Styring i Oslo\n\nInnledende tekst om styring.\n\n"
        "## Roller\n\nByråden leder.\n\n- punkt en\n- punkt to\n\n"
        "## Tillit\n\nTillit er viktig.\n",
        encoding="utf-8",
    )

    loaded = load(path)

    assert loaded.title == "Styring i Oslo"
    assert [p.heading for p in loaded.pages] == ["Styring i Oslo", "Roller", "Tillit"]
    assert all(p.number is None for p in loaded.pages)
    assert "Innledende tekst om styring." in loaded.pages[0].text
    assert "Byråden leder." in loaded.pages[1].text
    assert "punkt to" in loaded.pages[1].text
    assert "Tillit er viktig." in loaded.pages[2].text
    assert "Byråden" not in loaded.pages[2].text
    # the "#" markers are gone, the heading text stays
    assert not any(line.startswith("#") for p in loaded.pages for line in p.text.splitlines())
    assert loaded.pages[1].text.startswith("Roller")


# --- TXT -------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_single_space_page_breaks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "lysbilder.txt",
        " Slide one text\nmore about one\n\n Slide two\nbody two\n Slide three\n",
    )

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2, 3]
    assert "Slide one text" in pages[0].text
    assert "more about one" in pages[0].text
    assert "Slide two" in pages[1].text
    assert "body two" in pages[1].text
    assert "Slide two" not in pages[0].text
    assert "Slide three" in pages[2].text


def test_txt_two_spaces_or_blank_space_lines_are_not_breaks(tmp_path: Path) -> None:
    path = _write(tmp_path, "innrykk.txt", " Page one\n  indented two spaces\n \nstill one\n")

    pages = load(path).pages

    assert len(pages) == 1
    assert pages[0].number == 1
    assert "still one" in pages[0].text


def test_txt_form_feed_at_line_start(tmp_path: Path) -> None:
    path = _write(tmp_path, "pdftotext.txt", "Page one\n\fPage two\n\fPage three\n")

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2, 3]
    assert "Page one" in pages[0].text
    assert "Page two" in pages[1].text
    assert "Page three" in pages[2].text


def test_txt_form_feed_mid_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "ff.txt", "Page one\fPage two\fPage three")

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2, 3]
    assert "Page two" in pages[1].text


def test_txt_trailing_form_feed_adds_no_empty_page(tmp_path: Path) -> None:
    path = _write(tmp_path, "pdftotext.txt", "Page one\n\fPage two\n\f")

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2]


def test_txt_without_breaks_is_one_unnumbered_page(tmp_path: Path) -> None:
    text = "Et notat uten sideskift.\nAndre linje.\n"
    path = _write(tmp_path, "notat.txt", text)

    loaded = load(path)

    assert len(loaded.pages) == 1
    assert loaded.pages[0].number is None
    assert loaded.pages[0].text == text
    assert loaded.title is None


def test_txt_content_before_first_break_is_page_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "forside.txt", "Forside uten innrykk\n Andre side\n Tredje side\n")

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2, 3]
    assert "Forside uten innrykk" in pages[0].text
    assert "Andre side" in pages[1].text
    assert "Tredje side" in pages[2].text


def test_txt_blank_prefix_before_first_break_is_not_a_page(tmp_path: Path) -> None:
    path = _write(tmp_path, "blank.txt", "\n\n Første side\n Andre side\n")

    pages = load(path).pages

    assert [p.number for p in pages] == [1, 2]
    assert "Første side" in pages[0].text


def test_txt_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffMålstyring".encode())

    assert load(path).pages[0].text == "Målstyring"


def test_seed_file_loads_numbered_slides() -> None:
    seed = Path(__file__).resolve().parents[1] / "knowledge"
    pages = load(seed / "styringsdialogen-sann-gjor-vi-det-her-2019.txt").pages

    assert [p.number for p in pages] == list(range(1, len(pages) + 1))
    assert len(pages) == 15
    assert "Etatsstyringsmøte" in pages[10].text


# --- Errors ----------------------------------------------------------------------------------


def _assert_clean_message(error: LoadError) -> None:
    message = str(error)
    assert message.strip()
    assert "Traceback" not in message
    assert "\n" not in message


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".pptx"])
def test_corrupt_binary_files_raise_load_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"skadet{suffix}"
    path.write_bytes(os.urandom(4096))

    with pytest.raises(LoadError) as info:
        load(path)

    _assert_clean_message(info.value)
    assert suffix in str(info.value)


def test_non_utf8_txt_raises_load_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("Brødtekst på norsk med ø og å".encode("latin-1"))

    with pytest.raises(LoadError) as info:
        load(path)

    _assert_clean_message(info.value)
    assert "UTF-8" in str(info.value)


def test_non_utf8_markdown_raises_load_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes("# Overskrift\n\nSjø".encode("latin-1"))

    with pytest.raises(LoadError):
        load(path)


@pytest.mark.parametrize("name", ["regneark.xlsx", "bilde.png", "uten-endelse"])
def test_unsupported_suffix_raises_load_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"data")

    with pytest.raises(LoadError) as info:
        load(path)

    _assert_clean_message(info.value)
    assert "støttes ikke" in str(info.value)


def test_is_supported() -> None:
    assert is_supported(Path("a.PDF"))
    assert is_supported(Path("mappe/b.markdown"))
    assert not is_supported(Path("c.xlsx"))
    assert not is_supported(Path(".skjult.txt"))
    assert not is_supported(Path("~$laas.docx"))
