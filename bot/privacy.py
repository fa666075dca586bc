"""What is kept of a user's words: personal numbers, phone numbers and e-mail addresses are masked
before a question is stored (the conversation store and the knowledge-gap log). Answering uses
the question as written; only what is kept is masked.

Masking errs on the side of privacy: any 11-digit number is taken for a fødselsnummer (or
D-number), any 8-digit number written as phone numbers are, for a phone number. Years, article
numbers and amounts stay.
"""

from __future__ import annotations

import re

FNR = "[fødselsnummer]"
PHONE = "[telefonnummer]"
EMAIL = "[e-post]"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# 11 digits: DDMMYY + 5, written together or with a space, dot or dash after the date.
_FNR = re.compile(r"(?<!\d)(?<!\d[.,])\d{6}[ .-]?\d{5}(?!\d|[.,]\d)")
# 8 digits, optionally after +47/0047, written together or grouped as phone numbers are
# ("22865000", "22 86 50 00", "228 65 000", "+47 22865000"); not amounts ("10 000 000").
_PHONE = re.compile(
    r"(?<![\d+])(?<!\d[.,])(?:(?:\+|00)47[ -]?)?"
    r"(?:\d{8}|\d{2}[ -]\d{2}[ -]\d{2}[ -]\d{2}|\d{3}[ -]\d{2}[ -]\d{3})"
    r"(?!\d|[.,]\d)"
)


def mask(text: str) -> str:
    """The text with personal numbers, phone numbers and e-mail addresses replaced by labels."""
    if not text or not any(ch.isdigit() or ch == "@" for ch in text):
        return text
    text = _EMAIL.sub(EMAIL, text)
    text = _FNR.sub(FNR, text)
    return _PHONE.sub(PHONE, text)
