"""One conversation turn at a time, with enough memory that a follow-up question is understood."""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field

from bot.answer import Answer
from bot.engine import Engine
from ingest.lexical import tokenize

HISTORY_TURNS = 3
# "og hvem skriver referatet?", "hva med oppdragsstyringsmøter?", "and who writes the minutes?"
_FOLLOW_UP_START = re.compile(
    r"^(og|men|så|hva med|hvem da|hvordan da|enn|and|but|what about|how about)\b", re.IGNORECASE
)
_PRONOUNS = re.compile(
    r"\b(det|den|dette|denne|disse|de|dem|der|it|this|that|they|them|there)\b", re.IGNORECASE
)


@dataclass
class Turn:
    question: str
    search_text: str
    answer: Answer


@dataclass
class Conversation:
    """Per-chat history; channels call `ask` and never reach into retrieval themselves."""

    engine: Engine
    history: dict[str, deque[Turn]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=HISTORY_TURNS))
    )

    def ask(self, chat_id: str, question: str, k: int | None = None) -> Answer:
        turns = self.history[chat_id]
        search_text = question
        if turns and is_follow_up(question):
            search_text = f"{turns[-1].search_text} {question}"
        answer = self.engine.ask(question, k=k, search_text=search_text)
        turns.append(Turn(question, search_text, answer))
        return answer

    def last_answer(self, chat_id: str) -> Answer | None:
        turns = self.history.get(chat_id)
        return turns[-1].answer if turns else None

    def forget(self, chat_id: str) -> None:
        self.history.pop(chat_id, None)


def is_follow_up(question: str) -> bool:
    """A question that leans on the previous turn: starts like a follow-up, or is too thin alone."""
    text = question.strip()
    if _FOLLOW_UP_START.match(text):
        return True
    return len(tokenize(text)) <= 2 and bool(_PRONOUNS.search(text))
