"""Normalising real transcripts for a character recogniser, explicitly and with counts.

Corpora as downloaded carry case, punctuation and digits; XLT-Synth's transcripts carry none.
``TranscriptRules`` says what to do with each (lower-casing, removing punctuation, leaving
digits as they are or refusing the utterance), and ``TranscriptNormaliser`` applies them and
counts what it changed and what it dropped, so that ``xasr prepare`` can print it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from xasr import checks

# Apostrophes of every kind become ', which stays inside words ("don't", "l'acqua").
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02bc\u0060\u00b4\u2032\u201b"})
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TranscriptRules:
    """``case``: "lower" or "keep". ``punctuation``: "remove" (Unicode punctuation and symbols
    become spaces; an apostrophe between letters stays) or "keep". ``digits``: "keep" (left as
    they are) or "refuse" (the utterance is dropped and counted: a recogniser of letters cannot
    learn "1984" as a word it never hears spelled). Always: Unicode NFC and single spaces."""

    case: str = "lower"
    punctuation: str = "remove"
    digits: str = "refuse"

    def __post_init__(self):
        checks.one_of("--case", self.case, ("lower", "keep"))
        checks.one_of("--punctuation", self.punctuation, ("remove", "keep"))
        checks.one_of("--digits", self.digits, ("keep", "refuse"))


@dataclass
class TranscriptNormaliser:
    rules: TranscriptRules = TranscriptRules()
    changed: Counter = field(default_factory=Counter)  # what -> utterances changed
    dropped: Counter = field(default_factory=Counter)  # why -> utterances dropped

    def __call__(self, text: str) -> str | None:
        """The normalised transcript, or None when the utterance is dropped (counted)."""
        out = unicodedata.normalize("NFC", text)
        if self.rules.case == "lower" and out.lower() != out:
            out = out.lower()
            self.changed["lower-cased"] += 1
        if self.rules.punctuation == "remove":
            stripped = _remove_punctuation(out)
            if _SPACES.sub(" ", stripped).strip() != _SPACES.sub(" ", out).strip():
                self.changed["punctuation removed"] += 1
            out = stripped
        out = _SPACES.sub(" ", out).strip()
        if self.rules.digits == "refuse" and any(c.isdigit() for c in out):
            self.dropped["digits"] += 1
            return None
        if not out:
            self.dropped["empty after normalisation"] += 1
            return None
        return out

    def summary(self) -> str:
        parts = [f"{n} {what}" for what, n in self.changed.items()]
        parts += [f"dropped {n} ({why})" for why, n in self.dropped.items()]
        return "; ".join(parts) or "nothing changed"


def _remove_punctuation(text: str) -> str:
    text = text.translate(_APOSTROPHES)
    chars = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if char == "'":
            inside = 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()
            chars.append(char if inside else " ")
        elif category[0] in "PS":  # punctuation and symbols
            chars.append(" ")
        else:
            chars.append(char)
    return "".join(chars)
