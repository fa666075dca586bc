"""The commands every channel understands, in one table.

The table makes the Telegram command menu, the Teams manifest's command list, every help text,
and decides how a chat message is read: a command (with or without its slash) or a question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bot.messages import HELP_INTRO, Messages, say

CommandName = Literal[
    "ask", "start", "help", "intro", "new", "source", "feedback", "quit", "unknown", "empty"
]
Channel = Literal["telegram", "teams", "terminal", "http"]

# How each channel writes a command: Teams keeps "/" for its own commands, so there they are words.
PREFIX: dict[str, str] = {"telegram": "/", "teams": "", "terminal": "/", "http": "/"}
ALL: frozenset[str] = frozenset({"telegram", "teams", "terminal"})


@dataclass(frozen=True)
class CommandSpec:
    word: str  # as shown: "kilde"
    name: CommandName
    description: Messages
    aliases: tuple[str, ...] = ()
    argument: str = ""  # shown after the word in help texts: "N"
    channels: frozenset[str] = ALL  # where it is offered (menus, help)
    bare: bool = False  # may be typed without a slash ("kilde 2", "hjelp", "ny")
    value: str = ""  # what it carries (a vote: "up"/"down")


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "hjelp",
        "help",
        {"nb": "Hva jeg kan svare på, og hvordan", "en": "What I can answer, and how"},
        aliases=("help",),
        bare=True,
    ),
    CommandSpec(
        "intro",
        "intro",
        {
            "nb": "Kom i gang: et kort kurs i styringssystemet",
            "en": "Get started: a short course on the governance system",
        },
        aliases=("kurs", "course"),
        bare=True,
    ),
    CommandSpec(
        "kilde",
        "source",
        {
            "nb": "Vis hele kilde N fra siste svar",
            "en": "Show all of source N from the last answer",
        },
        aliases=("source",),
        argument="N",
        bare=True,
    ),
    CommandSpec(
        "ny",
        "new",
        {"nb": "Start en ny samtale (glem den forrige)", "en": "Start a new conversation"},
        aliases=("new",),
        bare=True,
    ),
    CommandSpec(
        "start",
        "start",
        {"nb": "Velkommen og hjelp", "en": "Welcome and help"},
        channels=frozenset({"telegram"}),
    ),
    CommandSpec(
        "bra",
        "feedback",
        {"nb": "Siste svar var nyttig (👍)", "en": "The last answer was helpful (👍)"},
        aliases=("good",),
        channels=frozenset({"terminal"}),
        value="up",
    ),
    CommandSpec(
        "dårlig",
        "feedback",
        {
            "nb": "Siste svar var ikke godt nok (👎)",
            "en": "The last answer was not good enough (👎)",
        },
        aliases=("darlig", "bad"),
        channels=frozenset({"terminal"}),
        value="down",
    ),
    CommandSpec(
        "slutt",
        "quit",
        {"nb": "Avslutt (eller Ctrl-D)", "en": "Quit (or Ctrl-D)"},
        aliases=("quit", "exit"),
        channels=frozenset({"terminal"}),
    ),
)
_BY_WORD = {word: spec for spec in COMMANDS for word in (spec.word, *spec.aliases)}


@dataclass(frozen=True)
class Command:
    name: CommandName
    argument: str = ""


# Typed without a slash, e.g. in Teams: "kilde 2", "vis kilde 2", "hjelp", "ny samtale".
_BARE_SOURCE = re.compile(r"^(?:vis\s+|show\s+)?(?:kilde|source)(?:\s+(\d+))?[.!]?$", re.IGNORECASE)
_BARE_INTRO = re.compile(
    r"^(?:intro|kurs|course|kom i gang|get started)(?:\s+(på nytt|fra start(?:en)?|restart|"
    r"again|en|english|nb|norsk))?[.!]?$",
    re.IGNORECASE,
)
_BARE_COMMAND = re.compile(
    r"^(hjelp|help|ny|new|ny samtale|new conversation)[.!?]?$", re.IGNORECASE
)


def parse_command(text: str, channel: str | None = None) -> Command:
    """What a chat message asks for; anything that is not a command is a question. A command the
    channel does not offer ("/slutt" outside the terminal) is unknown there."""
    text = text.strip()
    if not text:
        return Command("empty")
    if text.startswith("/"):
        head, _, rest = text[1:].partition(" ")
        word = head.split("@", 1)[0].lower()  # Telegram groups send "/kilde@Styringsbot 2"
        spec = _BY_WORD.get(word)
        if spec is None or (channel in ALL and channel not in spec.channels):
            return Command("unknown", head)
        return Command(spec.name, spec.value or rest.strip())
    if match := _BARE_INTRO.match(text):
        return Command("intro", (match.group(1) or "").lower())
    if match := _BARE_SOURCE.match(text):
        return Command("source", match.group(1) or "")
    if match := _BARE_COMMAND.match(text):
        word = match.group(1).lower()
        return Command("help" if word in ("hjelp", "help") else "new")
    return Command("ask", text)


def offered(channel: str) -> list[CommandSpec]:
    return [spec for spec in COMMANDS if channel in spec.channels]


def command(word: str, channel: str) -> str:
    """How a command is written in a channel: "/kilde" in Telegram, "kilde" in Teams."""
    return f"{PREFIX.get(channel, '/')}{word}"


def help_text(language: str, channel: str) -> str:
    """The help for one channel: what the bot does, examples, and the channel's commands."""
    lines = [say(HELP_INTRO, language), ""]
    for spec in offered(channel if channel in ALL else "terminal"):
        if spec.name == "start":
            continue
        written = command(spec.word, channel) + (f" {spec.argument}" if spec.argument else "")
        lines.append(f"{written} – {say(spec.description, language)}")
    return "\n".join(lines)


def telegram_menu() -> list[tuple[str, str]]:
    """(command, description) for Telegram's command menu, in bokmål."""
    return [(spec.word, spec.description["nb"]) for spec in offered("telegram")]


def teams_commands() -> list[dict[str, str]]:
    """The Teams manifest's command list, as Teams users send them ("kilde 1": a command that
    takes a number is offered with the first)."""
    return [
        {
            "title": spec.word + (" 1" if spec.argument == "N" else ""),
            "description": spec.description["nb"].replace(" N ", " 1 ")[:128],
        }
        for spec in offered("teams")
    ]
