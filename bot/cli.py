"""The `styringsbot` command: ingest, ask, chat, serve, telegram, report, eval, calibrate.

Every command works from any folder: settings, `.env` and the data and knowledge folders are
found through the home folder (`bot.config.home`). Help and usage errors are in Norwegian; so is
every settings error, one sentence. Output into a pipe that closes early (`| head -1`) ends the
command quietly with exit status 141, as if killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

EXIT_USER_ERROR = 2
# Output into a pipe whose reader has gone (`styringsbot ask … | head -1`): the status a shell
# gives a process killed by SIGPIPE, 128 + 13.
EXIT_BROKEN_PIPE = 141

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
  styringsbot serve                 # HTTP-API og Teams på http://127.0.0.1:3978
  styringsbot telegram              # Telegram-boten (TELEGRAM_BOT_TOKEN i .env)
  styringsbot report                # spørsmål uten svar og svar med 👎
  styringsbot explain "Hvem leder etatsstyringsmøtet?"   # hvert trinn, for feilsøking
  styringsbot eval ../shared/eval/dev.jsonl

Innstillinger leses fra miljøet og fra .env i hjemmemappen; relative STYRINGSBOT_DATA_DIR og
STYRINGSBOT_KNOWLEDGE_DIR regnes fra den. Hjemmemappen er STYRINGSBOT_HOME om den er satt, ellers
denne mappen om den har knowledge/ eller .env, ellers prosjektmappen styringsbot ble installert
fra. Alle innstillingene står i .env.example."""

# argparse's own words in Norwegian bokmål, by msgid (Python 3.11–3.13). argparse looks its words
# up through the module globals `_` and `ngettext` (gettext); `_norwegian_argparse` puts these
# tables in front while the command line is read. A msgid not here keeps argparse's own text.
ARGPARSE_NB = {
    "usage: ": "bruk: ",
    "options": "valg",
    "positional arguments": "argumenter",
    "subcommands": "kommandoer",
    "%(heading)s:": "%(heading)s:",
    " (default: %(default)s)": " (standard: %(default)s)",
    "show this help message and exit": "vis denne hjelpeteksten og avslutt",
    "show program's version number and exit": "vis versjonsnummeret og avslutt",
    "%(prog)s: error: %(message)s\n": "%(prog)s: feil: %(message)s\n",
    "%(prog)s: warning: %(message)s\n": "%(prog)s: advarsel: %(message)s\n",
    "argument %(argument_name)s: %(message)s": "argumentet %(argument_name)s: %(message)s",
    "the following arguments are required: %s": "disse argumentene mangler: %s",
    "one of the arguments %s is required": "ett av argumentene %s må gis",
    "unrecognized arguments: %s": "ukjente argumenter: %s",
    "expected one argument": "ventet ett argument",
    "expected at most one argument": "ventet høyst ett argument",
    "expected at least one argument": "ventet minst ett argument",
    "invalid choice: %(value)r (choose from %(choices)s)": (
        "ugyldig valg: %(value)r (velg blant %(choices)s)"
    ),
    "invalid %(type)s value: %(value)r": "ugyldig verdi for %(type)s: %(value)r",
    "ambiguous option: %(option)s could match %(matches)s": (
        "tvetydig valg: %(option)s kan være %(matches)s"
    ),
    "not allowed with argument %s": "kan ikke brukes sammen med %s",
    "ignored explicit argument %r": "verdien %r ble ikke brukt",
    "unexpected option string: %s": "uventet valg: %s",
    "unknown parser %(parser_name)r (choices: %(choices)s)": (
        "ukjent kommando %(parser_name)r (velg blant %(choices)s)"
    ),
    "can't open '%(filename)s': %(error)s": "kan ikke åpne «%(filename)s»: %(error)s",
    "option '%(option)s' is deprecated": "valget «%(option)s» skal ikke lenger brukes",
    "argument '%(argument_name)s' is deprecated": (
        "argumentet «%(argument_name)s» skal ikke lenger brukes"
    ),
    "command '%(parser_name)s' is deprecated": (
        "kommandoen «%(parser_name)s» skal ikke lenger brukes"
    ),
}
ARGPARSE_NB_PLURAL = {
    ("expected %s argument", "expected %s arguments"): (
        "ventet %s argument",
        "ventet %s argumenter",
    ),
    ("conflicting option string: %s", "conflicting option strings: %s"): (
        "valget finnes fra før: %s",
        "valgene finnes fra før: %s",
    ),
}


@contextlib.contextmanager
def _norwegian_argparse() -> Iterator[None]:
    """argparse speaks bokmål inside this block: its `_` and `ngettext` look in the tables above
    first, and are put back afterwards (argparse stays as it was for anyone else)."""
    saved = {name: getattr(argparse, name) for name in ("_", "ngettext") if hasattr(argparse, name)}
    english: Callable[[str], str] = saved.get("_", lambda message: message)
    english_n: Callable[[str, str, int], str] = saved.get(
        "ngettext", lambda one, many, n: one if n == 1 else many
    )

    def translate(message: str) -> str:
        return ARGPARSE_NB.get(message) or english(message)

    def translate_n(one: str, many: str, n: int) -> str:
        found = ARGPARSE_NB_PLURAL.get((one, many))
        return (found[0] if n == 1 else found[1]) if found else english_n(one, many, n)

    argparse._ = translate  # type: ignore[attr-defined]
    argparse.ngettext = translate_n  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(argparse, name, value)


def _integer(text: str) -> int:
    """An integer option; a bad one is a Norwegian usage error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"må være et heltall (fikk «{text}»)") from None


def version() -> str:
    """The installed version; from pyproject.toml when run from a source folder not installed."""
    from importlib import metadata

    try:
        return metadata.version("styringsbot")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        project = tomllib.loads(
            (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8")
        )["project"]
    except (OSError, ValueError, KeyError):
        return "(ukjent versjon)"
    return str(project.get("version", "(ukjent versjon)"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styringsbot",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"styringsbot {version()}",
        help="vis versjonen og avslutt",
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
        metavar="STI",
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
    ask.add_argument("--k", type=_integer, default=None, metavar="N", help="antall kandidater (5)")

    sub.add_parser(
        "chat",
        help="samtale i terminalen (oppfølgingsspørsmål forstås)",
        description="Interaktiv samtale. Kommandoer: /kilde N viser hele kilde N, /ny glemmer "
        "samtalen, /hjelp viser hjelp, /slutt avslutter.",
    )

    serve = sub.add_parser(
        "serve",
        help="kjør HTTP-API-et (POST /api/ask, GET /healthz) og Teams (POST /api/messages)",
        description='Starter HTTP-serveren. POST /api/ask tar {"question": ..., '
        '"conversation_id": ...} og svarer som ask --json; GET /healthz viser indeksen; '
        "POST /api/messages er Teams-endepunktet (MICROSOFT_APP_ID, se README).",
    )
    serve.add_argument(
        "--host", default=None, metavar="ADRESSE", help="adresse å lytte på (127.0.0.1)"
    )
    serve.add_argument("--port", type=_integer, default=None, help="port (3978)")

    sub.add_parser(
        "telegram",
        help="kjør Telegram-boten (long polling, eller webhook med TELEGRAM_WEBHOOK_URL)",
        description="Kjører Telegram-boten til Ctrl-C. Trenger TELEGRAM_BOT_TOKEN; se README for "
        "TELEGRAM_ALLOWED_CHATS, webhook og TELEGRAM_BASE_URL.",
    )

    report = sub.add_parser(
        "report",
        help="vis kunnskapshull: spørsmål uten svar og svar som fikk 👎",
        description="Lister spørsmålene boten ikke fant svar på og svarene brukerne ga 👎, "
        "de hyppigste først – det en redaktør bør fylle i kunnskapsmappen.",
    )
    report.add_argument("--json", action="store_true", help="skriv rapporten som JSON")

    package = sub.add_parser(
        "teams-package",
        help="lag Teams-apppakken (manifest + ikoner i en zip) for opplasting",
        description="Lager zip-filen Teams tar imot: manifest.json med botens app-id og to ikoner.",
    )
    package.add_argument(
        "--app-id", default=None, metavar="ID", help="botens app-id (standard: MICROSOFT_APP_ID)"
    )
    package.add_argument(
        "--output",
        type=Path,
        default=Path("styringsbot-teams.zip"),
        metavar="FIL.zip",
        help="zip-filen som lages (styringsbot-teams.zip)",
    )
    package.add_argument("--name", default="Styringsbot", metavar="NAVN", help="navnet i Teams")
    package.add_argument(
        "--version", default="1.0.0", metavar="X.Y.Z", help="appens versjon (1.0.0)"
    )

    explain = sub.add_parser(
        "explain",
        help="vis hvert trinn for ett spørsmål (for feilsøking)",
        description="Viser hva hvert trinn gjør med ett spørsmål: spørsmålsplanen (språk, "
        "svartype, stavekontroll, rolleguiden), kandidatpassasjene med tetthets-, setnings-, "
        "BM25- og guidesignaler, svarleserens beste setninger med trekkene sine, og signalene og "
        "beslutningen for «finner ikke svar».",
    )
    explain.add_argument("question", metavar="SPØRSMÅL", help="spørsmålet som skal forklares")
    explain.add_argument(
        "--after",
        metavar="SPØRSMÅL",
        default=None,
        help="forklar SPØRSMÅL som oppfølging av dette spørsmålet",
    )
    explain.add_argument(
        "--k", type=_integer, default=None, metavar="N", help="antall kandidater (5)"
    )
    explain.add_argument("--json", action="store_true", help="skriv forklaringen som JSON")

    evaluate = sub.add_parser(
        "eval",
        help="mål treff, sitering, ledesetning, avståelse og svartid på spørsmålssett",
        description="Kjører spørsmålene i en eller flere JSONL-filer og skriver hit@1/3/5, MRR@10, "
        "cited hit, lead hit, abstention recall, false abstention og svartid (p50/p95), og de "
        "samme tallene per språk, for oppfølgingspar og for nærliggende spørsmål uten svar. En "
        "linje er et spørsmål («question»), et oppfølgingspar («first» og «follow_up») eller et "
        "merket utsagn for verifikatoren av genererte svar («statement», «passage», «supported»).",
    )
    evaluate.add_argument(
        "files", type=Path, nargs="+", metavar="FIL.jsonl", help="spørsmålsfiler, én eller flere"
    )
    evaluate.add_argument("--json", action="store_true", help="skriv resultatet som JSON")

    calibrate = sub.add_parser(
        "calibrate",
        help="tilpass svarleseren og regelen for når boten sier «finner ikke svar»",
        description="Tilpasser svarleseren (hvilken setning som svarer) på merkede setninger og "
        "deretter avståelsesregelen på merkede spørsmål (abstain true/false), og lagrer begge i "
        "datamappen (eller --output). Filene har samme form som for eval. Linjer med «statement», "
        "«passage» og «supported» tilpasser verifikatoren for genererte svar (STYRINGSBOT_LLM).",
    )
    calibrate.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FIL.jsonl",
        help="merkede spørsmålsfiler (og utsagnspar for verifikatoren)",
    )
    calibrate.add_argument(
        "--output", type=Path, default=None, metavar="MAPPE", help="hvor reglene lagres"
    )
    return parser


def _settings():  # type: ignore[no-untyped-def]
    """The settings, from the environment and the home folder's .env; a bad value is a
    UserError of one Norwegian sentence naming the variable."""
    from pydantic import ValidationError

    from bot.config import Settings, describe_invalid_settings, home

    try:
        settings = Settings()
    except ValidationError as exc:
        env_file = home() / ".env"
        shown = ".env" if env_file.parent == Path.cwd() else str(env_file)
        raise UserError(describe_invalid_settings(exc, shown)) from None
    _keep_private(settings.data_dir)
    return settings


def _keep_private(data_dir: Path) -> None:
    """The index, the conversation store and the gap log hold what users asked: every file this
    process creates is readable by its own user only (0600, folders 0700), and so is a data
    folder made before this rule."""
    os.umask(0o077)
    with contextlib.suppress(OSError):
        if data_dir.is_dir() and data_dir.stat().st_mode & 0o077:
            data_dir.chmod(0o700)


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
    from bot.guide import INTRO_FILE, Guide
    from ingest.store import IndexState, read_chunks

    guide = Guide.load(settings.knowledge_dir)
    state = IndexState.read(settings.data_dir)
    if state is None or not guide.cites():
        return
    chunks = read_chunks(settings.data_dir, state)
    missing = guide.missing_quotes([(c.source, c.text) for c in chunks])
    for label in missing:
        file = INTRO_FILE if label.startswith(INTRO_FILE) else "glossary.yaml/roles.yaml"
        print(
            f"Advarsel: sitatet for {label} finnes ikke i indeksen; rett sitatet i {file}.",
            file=sys.stderr,
        )


def cmd_ask(args: argparse.Namespace) -> int:
    from bot.conversation import Question, ReplyKind

    settings = _settings()
    if args.k is not None and not 1 <= args.k <= 50:
        raise UserError("--k må være et tall fra 1 til 50.")
    if args.question != "-" and not args.question.strip():
        raise UserError("Spørsmålet er tomt; skriv et spørsmål i anførselstegn.")
    service = _service(settings, top_k=args.k, workers=1)
    try:
        questions = (line.strip() for line in sys.stdin) if args.question == "-" else None
        for question in questions if questions is not None else [args.question]:
            if not question:
                continue
            reply = service.handle(None, None, Question(question), "terminal")
            if reply.kind is not ReplyKind.ANSWER or reply.answer is None:
                if questions is None:
                    raise UserError(reply.text)
                print(json.dumps({"question": question, "error": reply.text}, ensure_ascii=False))
                continue
            if questions is not None:
                print(json.dumps(reply.answer.to_dict(), ensure_ascii=False), flush=True)
            elif args.json:
                print(json.dumps(reply.answer.to_dict(), ensure_ascii=False, indent=1))
            else:
                print(reply.answer.text)
    finally:
        service.close()
    return 0


def _service(settings: Settings, engine=None, **overrides: object):  # type: ignore[no-untyped-def]
    from bot.conversation import ConversationService

    return ConversationService.from_settings(
        engine or _open_engine(settings), settings, **overrides
    )


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings()
    service = _service(settings, workers=1)
    print("Styringsbot – spør om styring og roller i Oslo kommune. /hjelp gir hjelp.")
    try:
        return _chat_loop(service, "terminal")
    finally:
        service.close()


def _chat_loop(service, chat: str) -> int:  # type: ignore[no-untyped-def]
    from bot.conversation import ReplyKind
    from bot.render import plain

    _line_editing()
    while True:
        try:
            line = input("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        reply = service.handle(chat, None, line, "terminal")
        if reply.kind is ReplyKind.QUIT:
            return 0
        print(_wrapped(plain.reply(reply)))


def _line_editing() -> None:
    """Arrow keys, history and editing at the prompt, where the terminal has readline."""
    if not sys.stdin.isatty():
        return
    with contextlib.suppress(ImportError):  # a Python built without readline
        import readline  # noqa: F401  (importing it is what turns line editing on)


def _wrapped(text: str) -> str:
    """Long lines wrapped to the terminal's width, keeping each line's indent."""
    import shutil
    import textwrap

    if not sys.stdout.isatty():
        return text
    width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
    lines = []
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(
            textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False)
            if len(line) > width
            else line
        )
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from aiohttp import web

    from bot.channels.http import TEAMS_STATUS_KEY, TELEGRAM_STATUS_KEY, create_app

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The Agents SDK keeps its claims under a plain string key on every request.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)

    settings = _settings()
    host = args.host or settings.host
    port = args.port or settings.port
    if settings.telegram_bot_token and settings.telegram_webhook_url:
        from bot.channels import telegram

        # Telegram's webhook is served here too: its settings and Telegram itself are checked
        # before the engine opens, each failure one sentence.
        telegram.check_settings(settings, connect=True)
    service = _service(settings)
    app = create_app(service, settings)
    print(
        f"Styringsbot lytter på http://{host}:{port} – POST /api/ask, POST /api/feedback, "
        f"GET /healthz, GET /readyz, POST /api/messages (Teams: {app[TEAMS_STATUS_KEY]}); "
        f"Telegram: {app[TELEGRAM_STATUS_KEY]}. "
        "Ctrl-C stopper.",
        file=sys.stderr,
    )
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    except OSError as exc:
        raise UserError(
            f"Kan ikke lytte på {host}:{port} ({exc.strerror or exc}); velg en annen port med "
            "--port."
        ) from None
    finally:
        service.close()
    return 0


def cmd_telegram(args: argparse.Namespace) -> int:
    import logging

    from telegram.error import InvalidToken, NetworkError

    from bot.channels import telegram

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings()
    # Settings, then Telegram itself, before the engine opens: each failure is one sentence.
    telegram.check_settings(settings, connect=True)
    service = _service(settings)
    mode = "webhook" if settings.telegram_webhook_url else "long polling"
    print(f"Telegram-boten kjører ({mode}). Ctrl-C stopper.", file=sys.stderr)
    try:
        telegram.run(service, settings)
    except InvalidToken:
        raise UserError(
            "Telegram avviste TELEGRAM_BOT_TOKEN; sjekk tokenet fra @BotFather."
        ) from None
    except NetworkError as exc:
        raise UserError(
            f"Fikk ikke kontakt med Telegram ({exc.message}); sjekk nettverket eller "
            "TELEGRAM_BASE_URL."
        ) from None
    finally:
        service.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bot.feedback import gaps
    from bot.store import FILE_NAME, OLD_FEEDBACK_FILE, Store

    settings = _settings()
    local = settings.database_url is None
    if local and not any((settings.data_dir / f).exists() for f in (FILE_NAME, OLD_FEEDBACK_FILE)):
        print("Ingen tilbakemeldinger eller ubesvarte spørsmål er lagret ennå.")
        return 0
    course = _report_course(settings)
    store = Store.open(settings.database_url, settings.data_dir)
    try:
        found = gaps(store)
        counts = store.counts()
        figures = store.course_figures(course.id if course else "intro")
    finally:
        store.close()
    if args.json:
        print(json.dumps([g.to_dict() for g in found], ensure_ascii=False, indent=1))
        return 0
    up, down, abstained = (counts.get(k, 0) for k in ("up", "down", "abstained"))
    print(f"Tilbakemeldinger: {up} 👍, {down} 👎. Spørsmål uten svar: {abstained}.")
    _print_course(course, figures)
    if not found:
        print("Ingen kunnskapshull å vise.")
        return 0
    print("\nKunnskapshull (hyppigst først):")
    for gap in found:
        marks = []
        if gap.abstained:
            marks.append(f"uten svar ×{gap.abstained}")
        if gap.unhelpful:
            marks.append(f"👎 ×{gap.unhelpful}")
        seen = gap.last_seen.replace("T", " ")[:16]
        print(f"\n• {gap.question}  [{', '.join(marks)}; sist {seen} UTC, {gap.channels}]")
        for context in gap.contexts:
            print(f"    oppfølging av «{context}»")
        for source in gap.sources:
            print(f"    svarte med {source}")
    return 0


def _report_course(settings: Settings):  # type: ignore[no-untyped-def]
    """The onboarding course as the knowledge folder has it (None: none, or it does not load)."""
    from bot.guide import Guide, GuideError

    try:
        return Guide.load(settings.knowledge_dir).course
    except GuideError:
        return None


def _print_course(course, figures) -> None:  # type: ignore[no-untyped-def]
    """How many started and finished the course, and the check questions most often answered
    wrongly (a sign that a lesson or a document is unclear)."""
    if not figures.started and not figures.answers:
        return
    print(f"Kom i gang-kurset: {figures.started} startet, {figures.finished} fullførte.")
    wrong = sorted(
        ((w, n, step) for step, (n, w) in figures.answers.items() if w),
        key=lambda x: (-x[0] / x[1], -x[1], x[2]),
    )
    if not wrong:
        return
    print("Kontrollspørsmål oftest besvart feil (første svar):")
    questions = {s.id: s.question for s in course.steps} if course else {}
    for w, n, step in wrong[:5]:
        question = questions.get(step, "")
        print(f"  • {w} av {n} feil – steg «{step}»" + (f": {question}" if question else ""))


def cmd_teams_package(args: argparse.Namespace) -> int:
    from bot.channels.teams_package import PackageInfo, build_package

    app_id = args.app_id or _settings().microsoft_app_id
    if not app_id:
        raise UserError(
            "Mangler app-id; sett MICROSOFT_APP_ID i .env eller gi --app-id (se README om "
            "registrering i Azure)."
        )
    path = build_package(PackageInfo(app_id, name=args.name, version=args.version), args.output)
    print(
        f"Lagret {path}. Last den opp i Teams: Apper → Administrer appene dine → Last opp en app."
    )
    return 0


def _questions(path: Path) -> list[dict]:
    from bot.evaluation import EvalFileError, read_questions

    try:
        return read_questions(path)
    except EvalFileError as exc:
        raise UserError(str(exc)) from exc


def cmd_explain(args: argparse.Namespace) -> int:
    from bot.explain import explanation, render

    settings = _settings()
    if not args.question.strip():
        raise UserError("Spørsmålet er tomt; skriv et spørsmål i anførselstegn.")
    if args.k is not None and not 1 <= args.k <= 50:
        raise UserError("--k må være et tall fra 1 til 50.")
    engine = _open_engine(settings)
    context = engine.ask(args.after).follow_up_context() if args.after else None
    trace = engine.trace(args.question, k=args.k, context=context)
    data = explanation(trace, engine.answerer.abstention.threshold, memory=engine.answerer.memory)
    print(json.dumps(data, ensure_ascii=False, indent=1) if args.json else render(data))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from bot.evaluation import report_json, run
    from bot.verifier import Features, Pair, VerifierModel, is_pair, measure, table

    settings = _settings()
    items = [q for path in args.files for q in _questions(path)]
    questions = [q for q in items if not is_pair(q)]
    pairs = [Pair.from_item(q) for q in items if is_pair(q)]
    engine = _open_engine(settings)
    checked = None
    if pairs:  # statement–passage pairs: the verifier of generated answers
        model = VerifierModel.for_index(settings.data_dir, engine.embedder.id)
        checked = measure(Features(engine.embedder, lambda: engine.retriever.idf), model, pairs)
    if not questions:
        print(json.dumps({"verifier": checked}, indent=1) if args.json else table(checked))
        return 0
    report, outcomes = run(engine, questions)
    if args.json:
        print(report_json(report, outcomes, checked))
        return 0
    for o in outcomes:
        wrong = (o.abstain_expected != o.abstained) or (
            not o.abstain_expected and not o.lead_relevant
        )
        if wrong:
            rank = o.first_relevant_rank if o.first_relevant_rank else "-"
            status = "avstod" if o.abstained else "svarte"
            print(f"  {o.id}: rang {rank}, {status}: {o.question}", file=sys.stderr)
    print(report.table())
    if checked is not None:
        print("\n" + table(checked))
    if engine.generator is not None:  # STYRINGSBOT_LLM: what the generated path did
        from bot.generate import summary

        print("\n" + summary(list(engine.generator.outcomes)))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from bot.abstention import FITTED_NAME as ABSTENTION_NAME
    from bot.abstention import MEMORY_NAME
    from bot.calibration import CalibrationError, calibrate
    from bot.reader import FITTED_NAME as READER_NAME
    from bot.verifier import FITTED_NAME as VERIFIER_NAME
    from bot.verifier import Features, Pair, VerifierError, is_pair
    from bot.verifier import fit as fit_verifier

    settings = _settings()
    read = {path: _questions(path) for path in args.files}
    questions = [q for items in read.values() for q in items if not is_pair(q)]
    pairs = [Pair.from_item(q) for items in read.values() for q in items if is_pair(q)]
    engine = _open_engine(settings)
    output = args.output or settings.data_dir
    if pairs:
        on = ", ".join(path.name for path, items in read.items() if any(map(is_pair, items)))
        try:
            features = Features(engine.embedder, lambda: engine.retriever.idf)
            verifier = fit_verifier(features, pairs, fitted_on=on)
        except VerifierError as exc:
            raise UserError(
                "Verifikatoren trenger både utsagn kildene støtter og utsagn de ikke støtter "
                "(supported: true/false)."
            ) from exc
        output.mkdir(parents=True, exist_ok=True)
        verifier.model.save(output / VERIFIER_NAME)
        held = verifier.held_out
        print(
            f"Lagret verifikatoren for genererte svar i {output}: med terskel "
            f"{held['threshold']:.2f} beholder den, kryssvalidert, {held['supported_kept']:.3f} "
            f"av utsagnene kildene støtter og slipper gjennom {held['unsupported_passed']:.3f} "
            f"av dem de ikke støtter ({len(pairs)} par)."
        )
    if not questions:
        return 0
    names = ", ".join(path.name for path, items in read.items() if not all(map(is_pair, items)))
    try:
        fitted = calibrate(engine, questions, fitted_on=names)
    except CalibrationError as exc:
        raise UserError(
            "Kalibreringen trenger både besvarbare spørsmål med expect_any og spørsmål uten svar "
            "(abstain: true)."
        ) from exc
    output.mkdir(parents=True, exist_ok=True)
    fitted.reader.save(output / READER_NAME)
    fitted.abstention.save(output / ABSTENTION_NAME)
    fitted.memory.save(output / MEMORY_NAME)
    answerable = sum(not item.example.abstain for item in fitted.observed)
    print(f"Lagret svarleseren, avståelsesregelen og spørsmålsminnet i {output}.")
    print(
        f"Svarleseren valgte en setning uten forventet svar for {len(fitted.misread)} av "
        f"{answerable} besvarbare spørsmål."
    )
    wrong = fitted.wrong_abstention
    print(f"Avståelsesregelen tar feil for {len(wrong)} av {len(questions)} spørsmål.")
    cross = fitted.cross_validated
    if cross:
        print(
            f"Kryssvalidert: lead hit {cross['lead_hit']:.3f} (svarleserens C "
            f"{cross['reader_c']:g}); med terskel {cross['threshold']:.2f} (regelens C "
            f"{cross['abstention_c']:g}) avstår regelen fra {cross['false_abstention']:.3f} av de "
            f"besvarbare og {cross['abstention_recall']:.3f} av dem uten svar."
        )
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "chat": cmd_chat,
    "serve": cmd_serve,
    "telegram": cmd_telegram,
    "report": cmd_report,
    "teams-package": cmd_teams_package,
    "explain": cmd_explain,
    "eval": cmd_eval,
    "calibrate": cmd_calibrate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status. A reader that goes away (`| head -1`) ends it quietly,
    by the recipe in the Python docs' "Note on SIGPIPE": flush, and on BrokenPipeError point
    stdout at devnull (so the flush at exit cannot fail again) and exit 141."""
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # inside the try: a failed write shows here, not at exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    with _norwegian_argparse():
        parser = _parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USER_ERROR
    from bot.abstention import AbstentionModel  # noqa: F401 - fail early on a broken install
    from bot.channels import ChannelConfigError
    from bot.guide import GuideError
    from bot.store import StoreError
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
        ChannelConfigError,
        StoreError,
    ) as exc:
        print(f"Feil: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Avbrutt; indeksen er uendret.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
