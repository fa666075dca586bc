"""The `styringsbot` command: ingest, ask, chat, eval, calibrate."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

EXIT_USER_ERROR = 2

DESCRIPTION = """\
Styringsbot svarer på spørsmål om Oslo kommunes styringssystem – styringsdialog, møteformer,
tildelingsbrev, tillitsbasert styring og ledelse – med sitater og kildehenvisninger fra
dokumentene i kunnskapsmappen."""

EPILOG = """\
eksempler:
  styringsbot ask "Hvem leder etatsstyringsmøtet?"
  styringsbot ask --json --k 3 "Hva er et fagmøte?"
  printf 'Hva står MRS for?\\nHva er LIV?\\n' | styringsbot ask -
  styringsbot ingest                # synkroniser indeksen med kunnskapsmappen
  styringsbot chat                  # samtale i terminalen
  styringsbot eval ../shared/eval/dev.jsonl

Innstillinger leses fra miljøet og .env (se .env.example)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styringsbot",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="KOMMANDO")

    ingest = sub.add_parser(
        "ingest",
        help="bygg eller oppdater indeksen fra kunnskapsmappen",
        description="Synkroniserer indeksen med kunnskapsmappen: nye og endrede filer leses og "
        "embeddes, uendrede hoppes over, slettede fjernes.",
    )
    ingest.add_argument("--rebuild", action="store_true", help="bygg hele indeksen på nytt")
    ingest.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="bare disse filene/mappene i kunnskapsmappen (standard: hele mappen)",
    )
    ingest.add_argument("--quiet", action="store_true", help="ingen fremdriftsindikator")

    ask = sub.add_parser(
        "ask",
        help="still ett spørsmål (eller ett per linje fra stdin med -)",
        description="Svarer på ett spørsmål med sitater og kilder. Med - som spørsmål leses ett "
        "spørsmål per linje fra stdin, og hvert svar skrives som ett JSON-objekt per linje.",
    )
    ask.add_argument("question", metavar="SPØRSMÅL", help="spørsmålet, eller - for stdin")
    ask.add_argument("--json", action="store_true", help="skriv svaret som JSON")
    ask.add_argument("--k", type=int, default=None, metavar="N", help="antall kandidater (5)")

    sub.add_parser(
        "chat",
        help="samtale i terminalen (oppfølgingsspørsmål forstås)",
        description="Interaktiv samtale. Kommandoer: /kilde N viser hele kilde N, /ny glemmer "
        "samtalen, /hjelp viser hjelp, /slutt avslutter.",
    )

    evaluate = sub.add_parser(
        "eval",
        help="mål treff, MRR, sitering, avståelse og svartid på et spørsmålssett",
        description="Kjører alle spørsmålene i en JSONL-fil og skriver hit@1/3/5, MRR@10, "
        "cited hit, abstention recall, false abstention og svartid (p50/p95).",
    )
    evaluate.add_argument("file", type=Path, metavar="FILE.jsonl")
    evaluate.add_argument("--json", action="store_true", help="skriv resultatet som JSON")

    calibrate = sub.add_parser(
        "calibrate",
        help="tilpass regelen for når boten sier «finner ikke svar»",
        description="Tilpasser avståelsesregelen på merkede spørsmål (abstain true/false) og "
        "lagrer den i datamappen (eller --output).",
    )
    calibrate.add_argument("file", type=Path, metavar="FILE.jsonl")
    calibrate.add_argument("--output", type=Path, default=None, help="hvor regelen lagres")
    return parser


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from bot.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0]).upper() if problem.get("loc") else "en innstilling"
        raise UserError(
            f"Innstillingen {name} er ugyldig ({problem['msg']}); rett den i .env."
        ) from None


class UserError(Exception):
    """An error the user can fix; printed as one sentence, no traceback."""


def _open_engine(settings):  # type: ignore[no-untyped-def]
    from bot.engine import Engine

    def announce() -> None:
        print("Fant ingen indeks; bygger den fra kunnskapsmappen først …", file=sys.stderr)

    return Engine.open(
        settings, build_if_missing=True, on_build=announce, progress=sys.stderr.isatty()
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from bot.engine import sync_index

    report = sync_index(
        _settings(),
        paths=args.paths or None,
        rebuild=args.rebuild,
        progress=not args.quiet,
    )
    for problem in report.failed:
        print(f"Hoppet over {problem.path}: {problem.reason}.", file=sys.stderr)
    if report.rebuilt:
        print("Indeksen ble bygd på nytt.", file=sys.stderr)
    print(report.summary() if report.changed_anything else f"Ingen endringer. {report.summary()}")
    _check_guide(_settings())
    return 1 if report.failed else 0


def _check_guide(settings: Settings) -> None:
    """Warn about glossary and role-guide quotes the index no longer holds (edited documents)."""
    from bot.guide import Guide
    from ingest.store import IndexState, read_chunks

    guide = Guide.load(settings.knowledge_dir)
    state = IndexState.read(settings.data_dir)
    if state is None or not guide.cites():
        return
    chunks = read_chunks(settings.data_dir, state)
    missing = guide.missing_quotes([(c.source, c.text) for c in chunks])
    for label in missing:
        print(
            f"Advarsel: sitatet for {label} finnes ikke i indeksen; rett sitatet i "
            "glossary.yaml/roles.yaml.",
            file=sys.stderr,
        )


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.k is not None and not 1 <= args.k <= 50:
        raise UserError("--k må være et tall fra 1 til 50.")
    if args.question != "-" and not args.question.strip():
        raise UserError("Spørsmålet er tomt; skriv et spørsmål i anførselstegn.")
    engine = _open_engine(settings)
    if args.question == "-":
        for line in sys.stdin:
            question = line.strip()
            if question:
                answer = engine.ask(question, k=args.k)
                print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        return 0
    answer = engine.ask(args.question, k=args.k)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=1))
    else:
        print(answer.text)
    return 0


CHAT_HELP = """\
Still et spørsmål om styringssystemet, for eksempel «Hvem leder etatsstyringsmøtet?».
Oppfølgingsspørsmål («og hvem skriver referatet?») bygger på forrige spørsmål.
  /kilde N   vis hele kilde N fra siste svar
  /ny        start en ny samtale
  /hjelp     vis denne hjelpen
  /slutt     avslutt (eller Ctrl-D)"""


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.conversation import Conversation

    settings = _settings()
    conversation = Conversation(_open_engine(settings))
    chat_id = "terminal"
    print("Styringsbot – spør om styring og roller i Oslo kommune. /hjelp gir hjelp.")
    while True:
        try:
            line = input("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line in ("/slutt", "/exit", "/quit"):
            return 0
        if line in ("/hjelp", "/help"):
            print(CHAT_HELP)
        elif line == "/ny":
            conversation.forget(chat_id)
            print("Ny samtale.")
        elif line.startswith("/kilde"):
            print(_show_source(conversation.last_answer(chat_id), line.removeprefix("/kilde")))
        elif line.startswith("/"):
            print("Ukjent kommando; /hjelp viser hva som finnes.")
        else:
            print(conversation.ask(chat_id, line).text)


def _show_source(answer, raw: str) -> str:  # type: ignore[no-untyped-def]
    if answer is None or not answer.citations:
        return "Det er ingen kilder å vise ennå; still et spørsmål først."
    try:
        n = int(raw.strip())
    except ValueError:
        return f"Skriv /kilde og et tall fra 1 til {len(answer.citations)}."
    citation = next((c for c in answer.citations if c.n == n), None)
    if citation is None:
        return f"Siste svar har kilde 1 til {len(answer.citations)}; prøv en av dem."
    where = f"{citation.title}" + (f", {citation.location}" if citation.location else "")
    return f"[{citation.n}] {where}\n({citation.source})\n\n{citation.text}"


def _questions(path: Path) -> list[dict]:
    from bot.evaluation import EvalFileError, read_questions

    try:
        return read_questions(path)
    except EvalFileError as exc:
        raise UserError(str(exc)) from exc


def cmd_eval(args: argparse.Namespace) -> int:
    from bot.evaluation import report_json, run

    settings = _settings()
    questions = _questions(args.file)
    report, outcomes = run(_open_engine(settings), questions)
    if args.json:
        print(report_json(report, outcomes))
        return 0
    for o in outcomes:
        wrong = (o.abstain_expected != o.abstained) or (
            not o.abstain_expected and o.first_relevant_rank != 1
        )
        if wrong:
            rank = o.first_relevant_rank if o.first_relevant_rank else "-"
            status = "avstod" if o.abstained else "svarte"
            print(f"  {o.id}: rang {rank}, {status}: {o.question}", file=sys.stderr)
    print(report.table())
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from bot.abstention import FITTED_NAME, fit

    settings = _settings()
    questions = _questions(args.file)
    engine = _open_engine(settings)
    signals = [engine.retriever.search(q["question"]).signals for q in questions]
    labels = [not q["abstain"] for q in questions]
    try:
        model = fit(signals, labels, engine.embedder.id, fitted_on=args.file.name)
    except ValueError as exc:
        raise UserError(
            "Kalibreringen trenger både besvarbare og ikke-besvarbare spørsmål."
        ) from exc
    output = args.output or settings.data_dir / FITTED_NAME
    model.save(output)
    wrong = [
        q["id"]
        for q, s, y in zip(questions, signals, labels, strict=True)
        if model.abstains(s) == y
    ]
    print(f"Lagret avståelsesregelen i {output}.")
    print(f"Feil på kalibreringssettet: {len(wrong)} av {len(questions)} {wrong or ''}".rstrip())
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "calibrate": cmd_calibrate,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USER_ERROR
    from bot.abstention import AbstentionModel  # noqa: F401 - fail early on a broken install
    from bot.guide import GuideError
    from ingest.embeddings import EmbedderError
    from ingest.manifest import ManifestError
    from ingest.pipeline import IngestError
    from ingest.store import IndexStoreError

    try:
        return COMMANDS[args.command](args)
    except (
        UserError,
        IngestError,
        IndexStoreError,
        ManifestError,
        EmbedderError,
        GuideError,
    ) as exc:
        print(f"Feil: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Avbrutt; indeksen er uendret.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
