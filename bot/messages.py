"""Every sentence Styringsbot says in a chat, in Norwegian bokmål and English, in one place.

Renderers and the conversation service take their words from here; nothing else composes text
a user reads.
"""

from __future__ import annotations

Messages = dict[str, str]


def say(messages: Messages, language: str, **values: object) -> str:
    """A message in the user's language (bokmål when it has no such translation)."""
    return messages.get(language, messages["nb"]).format(**values)


def localized_location(location: str | None, language: str) -> str | None:
    """ "lysbilde 3" / "side 2" as the user reads it ("slide 3" / "page 2" in English)."""
    if location and language == "en":
        return location.replace("lysbilde", "slide").replace("side", "page")
    return location


def where(title: str, location: str | None, language: str) -> str:
    """How a citation names its place: «Title», lysbilde 11."""
    location = localized_location(location, language)
    return f"«{title}»" + (f", {location}" if location else "")


# -- answers ----------------------------------------------------------------------------------

NO_ANSWER: Messages = {
    "nb": (
        "Jeg finner ikke svar på dette i dokumentene jeg kjenner. Prøv å spørre på en annen måte, "
        "eller spør om styringsdialogen, møteformene (etatsstyringsmøte, fagmøte, kontaktmøte), "
        "tildelingsbrev eller tillitsbasert styring og ledelse."
    ),
    "en": (
        "I can't find an answer to this in the documents I know. Try asking another way, or ask "
        "about the governance dialogue, the meeting types (etatsstyringsmøte, fagmøte, "
        "kontaktmøte), allocation letters (tildelingsbrev) or trust-based management."
    ),
}
RELATED: Messages = {
    "nb": "Dette er det nærmeste jeg fant, hvis du vil lese selv:",
    "en": "This is the closest I found, if you want to read for yourself:",
}
CAVEAT: Messages = {
    "nb": "Jeg er ikke sikker på at dokumentene svarer på akkurat dette; sjekk kilden.",
    "en": "I am not sure the documents answer exactly this; check the source.",
}
LABELS: dict[str, dict[str, str]] = {
    "nb": {
        "according": "Ifølge {where}:",
        "also": "Se også {refs}.",
        "sources": "Kilder:",
        "criteria": "Slik skiller kildene styring fra annen dialog:",
        "helpful": "👍 Nyttig",
        "unhelpful": "👎 Ikke nyttig",
        "source": "Kilde {n}",
        "source_of": "Kilde {n}: {where}",
        "whole": "Vis hele kilde {n}",
        "show": "Vis / skjul",
        "voted": "Du svarte: {vote}",
        "answer": "Svar",
        "quote": "Sitat",
    },
    "en": {
        "according": "According to {where} (quoted in Norwegian):",
        "also": "See also {refs}.",
        "sources": "Sources:",
        "criteria": (
            "What tells governance (styring) from other dialogue, according to the sources:"
        ),
        "helpful": "👍 Helpful",
        "unhelpful": "👎 Not helpful",
        "source": "Source {n}",
        "source_of": "Source {n}: {where}",
        "whole": "Show all of source {n}",
        "show": "Show / hide",
        "voted": "You answered: {vote}",
        "answer": "Answer",
        "quote": "Quote",
    },
}


def labels(language: str) -> dict[str, str]:
    return LABELS.get(language, LABELS["nb"])


# -- replies that are not answers -------------------------------------------------------------

WELCOME: Messages = {
    "nb": "Hei! Jeg er Styringsbot.",
    "en": "Hi! I am Styringsbot.",
}
HELP_INTRO: Messages = {
    "nb": (
        "Jeg svarer på spørsmål om styring og roller i Oslo kommune, med sitater fra "
        "dokumentene jeg bygger på.\n\n"
        "Prøv for eksempel:\n"
        "• Hvem leder etatsstyringsmøtet?\n"
        "• Er et fagmøte styring?\n"
        "• Hva skal stå i et tildelingsbrev?\n"
        "• Hva står MRS for?\n\n"
        "Du kan spørre videre («og hvem skriver referatet?»)."
    ),
    "en": (
        "I answer questions about governance and roles in Oslo kommune, quoting the documents "
        "I rely on (in Norwegian).\n\n"
        "For example:\n"
        "• Who chairs the agency governance meeting?\n"
        "• Is a fagmøte governance?\n"
        "• What goes in a tildelingsbrev?\n\n"
        "You can ask follow-up questions (“and who writes the minutes?”)."
    ),
}
UNKNOWN_COMMAND: Messages = {
    "nb": "Den kommandoen kjenner jeg ikke; {help} viser hva jeg kan.",
    "en": "I don't know that command; {help} shows what I can do.",
}
NOT_TEXT: Messages = {
    "nb": "Jeg leser bare tekst. Skriv spørsmålet ditt, så svarer jeg.",
    "en": "I only read text. Type your question and I will answer.",
}
NEW_CONVERSATION: Messages = {
    "nb": "Ny samtale. Hva lurer du på?",
    "en": "New conversation. What would you like to know?",
}
THANKS: dict[bool, Messages] = {
    True: {"nb": "Takk for tilbakemeldingen! 👍", "en": "Thanks for the feedback! 👍"},
    False: {
        "nb": "Takk! Svaret er merket som ikke godt nok, så det kan bli bedre. 👎",
        "en": "Thanks! The answer is marked as not good enough, so it can be improved. 👎",
    },
}
RATE_LIMITED: Messages = {
    "nb": "Du har stilt mange spørsmål på kort tid; vent {seconds} sekunder og prøv igjen.",
    "en": "You have asked many questions in a short time; wait {seconds} seconds and try again.",
}
NOT_ALLOWED: Messages = {
    "nb": "Beklager, denne boten er bare åpen for utvalgte chatter. Kontakt den som driver "
    "boten hvis du trenger tilgang.",
    "en": "Sorry, this bot is only open to selected chats. Contact whoever runs it for access.",
}
FAILED: Messages = {
    "nb": "Beklager, noe gikk galt da jeg skulle svare. Prøv igjen om litt.",
    "en": "Sorry, something went wrong while answering. Please try again shortly.",
}

# -- what a user did wrong: one sentence, what happened and what to do -------------------------

EMPTY_QUESTION: Messages = {
    "nb": "Skriv et spørsmål om styring eller roller i Oslo kommune, så svarer jeg.",
    "en": "Write a question about governance or roles in Oslo kommune and I will answer.",
}
TOO_LONG: Messages = {
    "nb": "Spørsmålet er for langt ({n} tegn); skriv det kortere, høyst {limit} tegn.",
    "en": "The question is too long ({n} characters); please keep it to {limit} at most.",
}
NO_SOURCES_YET: Messages = {
    "nb": "Det er ingen kilder å vise ennå; still et spørsmål først.",
    "en": "There are no sources to show yet; ask a question first.",
}
NO_SOURCES_IN_ANSWER: Messages = {
    "nb": "Det svaret fant ikke noe i dokumentene, så det har ingen kilder å vise.",
    "en": "That answer found nothing in the documents, so it has no sources to show.",
}
NOT_A_NUMBER: Messages = {
    "nb": "Skriv kilde og et tall fra 1 til {count}, for eksempel «{source} 1».",
    "en": "Write source and a number from 1 to {count}, for example “{source} 1”.",
}
NO_SUCH_SOURCE: Messages = {
    "nb": "Det svaret har kilde 1 til {count}; prøv en av dem.",
    "en": "That answer has sources 1 to {count}; try one of those.",
}
GONE: Messages = {
    "nb": "Det svaret er ikke lenger i samtalen (den er startet på nytt, eller svaret er for "
    "gammelt); still spørsmålet igjen.",
    "en": "That answer is no longer in the conversation (it was started afresh, or the answer is "
    "too old); please ask again.",
}

# -- the onboarding course ("Kom i gang", /intro) ---------------------------------------------

COURSE_INVITE: Messages = {
    "nb": "Ny i Oslo kommune? {intro} gir deg et kort kurs i styringssystemet: {steps} steg, "
    "under ti minutter.",
    "en": "New in Oslo kommune? {intro} gives you a short course on the governance system: "
    "{steps} steps, under ten minutes.",
}
COURSE_START: Messages = {
    "nb": "{title}: {steps} korte steg, hvert med et kontrollspørsmål. Du kan når som helst "
    "stille et vanlig spørsmål; {intro} tar deg tilbake hit.",
    "en": "{title}: {steps} short steps, each with a check question. You can ask an ordinary "
    "question at any time; {intro} brings you back here. The sources are quoted in Norwegian.",
}
COURSE_RESUME: Messages = {
    "nb": "Velkommen tilbake! Du fortsetter på steg {number} av {total} («{restart}» starter "
    "forfra).",
    "en": "Welcome back! You continue at step {number} of {total} (“{restart}” starts over).",
}
COURSE_AGAIN: Messages = {
    "nb": "Vi begynner på nytt fra første steg.",
    "en": "Starting over from the first step.",
}
COURSE_DONE: Messages = {
    "nb": "Ferdig! Du svarte riktig på {right} av {total} kontrollspørsmål. Nå kan du spørre meg "
    "om det du lurer på om styring og roller; {restart} tar kurset på nytt.",
    "en": "Done! You answered {right} of {total} check questions right. Now ask me anything you "
    "wonder about governance and roles; {restart} takes the course again.",
}
COURSE_MISSING: Messages = {
    "nb": "Det er ikke lagt inn noe kurs (intro.yaml i kunnskapsmappen); spør meg direkte i "
    "stedet.",
    "en": "No course has been set up (intro.yaml in the knowledge folder); ask me directly "
    "instead.",
}
COURSE_STEP_GONE: Messages = {
    "nb": "Det steget finnes ikke lenger i kurset; {intro} fortsetter der du er.",
    "en": "That step is no longer in the course; {intro} continues where you are.",
}
COURSE_NO_SUCH_CHOICE: Messages = {
    "nb": "Velg et svar fra 1 til {count}.",
    "en": "Choose an answer from 1 to {count}.",
}
COURSE_NEEDS_CONVERSATION: Messages = {
    "nb": "Kurset husker hvor du er per samtale; oppgi en samtale-id.",
    "en": "The course remembers where you are per conversation; give a conversation id.",
}
COURSE_LABELS: dict[str, dict[str, str]] = {
    "nb": {
        "step": "{course} · steg {number} av {total}",
        "check": "Kontrollspørsmål:",
        "choose": "Svar med {numbers}.",
        "right": "✅ Riktig!",
        "wrong": "❌ Ikke helt. Riktig svar er {answer}: «{text}»",
        "start": "▶ Kom i gang",
        "read": "Les mer i {where}",
        "passage": "Vis kilden",
    },
    "en": {
        "step": "{course} · step {number} of {total}",
        "check": "Check question:",
        "choose": "Answer with {numbers}.",
        "right": "✅ Right!",
        "wrong": "❌ Not quite. The right answer is {answer}: “{text}”",
        "start": "▶ Get started",
        "read": "Read more in {where}",
        "passage": "Show the source",
    },
}


def course_labels(language: str) -> dict[str, str]:
    return COURSE_LABELS.get(language, COURSE_LABELS["nb"])
