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
from xasr.data.text import APOSTROPHES

_SPACES = re.compile(r"\s+")
# Invisible characters that would enter the vocabulary: soft hyphen, zero-width space, word
# joiner, byte-order mark (zero-width (non-)joiners stay: Persian and Indic spelling needs them)
_INVISIBLE = str.maketrans(dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff")))

CASES = ("lower", "keep")  # TranscriptRules.case
PUNCTUATIONS = ("remove", "keep")  # TranscriptRules.punctuation
DIGITS = ("keep", "refuse")  # TranscriptRules.digits

# Per-language rules (codes as xasr writes them, ``xasr.data.corpora.language_code``):
# dotted and dotless i lower-case apart in Turkish and Azerbaijani; scripts written without
# spaces lose their punctuation without gaining a word break; Catalan keeps its middle dot
# (col·lecció) between letters.
DOTLESS_I_LANGUAGES = frozenset({"tr", "az"})
UNSPACED_LANGUAGES = frozenset({"cmn", "yue", "zh", "ja", "th", "lo", "km", "my"})
INNER_MARKS = {"ca": "'·"}  # marks kept between letters, by language ("'" everywhere)


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
        checks.one_of("--case", self.case, CASES)
        checks.one_of("--punctuation", self.punctuation, PUNCTUATIONS)
        checks.one_of("--digits", self.digits, DIGITS)


@dataclass
class TranscriptNormaliser:
    """``lang``: the transcripts' language (xasr's code), for the per-language rules above."""

    rules: TranscriptRules = TranscriptRules()
    lang: str | None = None
    changed: Counter = field(default_factory=Counter)  # what -> utterances changed
    dropped: Counter = field(default_factory=Counter)  # why -> utterances dropped

    def __call__(self, text: str) -> str | None:
        """The normalised transcript, or None when the utterance is dropped (counted)."""
        out = unicodedata.normalize("NFC", text)
        visible = out.translate(_INVISIBLE)
        if visible != out:
            out = visible
            self.changed["invisible characters removed"] += 1
        if self.rules.case == "lower":
            lowered = _lower(out, self.lang)
            if lowered != out:
                out = lowered
                self.changed["lower-cased"] += 1
        if self.rules.punctuation == "remove":
            stripped = _remove_punctuation(out, self.lang)
            if _SPACES.sub(" ", stripped).strip() != _SPACES.sub(" ", out).strip():
                self.changed["punctuation removed"] += 1
            out = stripped
        out = _SPACES.sub(" ", out).strip()
        if self.rules.digits == "refuse" and any(c.isnumeric() for c in out):  # ½ and Ⅻ too
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


def _lower(text: str, lang: str | None) -> str:
    if lang in DOTLESS_I_LANGUAGES:
        text = text.replace("I", "ı").replace("İ", "i")
    # "İ".lower() is i + a combining dot above, which no precomposed letter absorbs
    return unicodedata.normalize("NFC", text.lower().replace("i\u0307", "i"))


def _is_letter(char: str) -> bool:
    """A letter or a combining mark (a Devanagari vowel sign ends a word as a letter does)."""
    return char.isalpha() or unicodedata.category(char)[0] == "M"


def _remove_punctuation(text: str, lang: str | None) -> str:
    text = text.translate(APOSTROPHES)  # every kind of apostrophe becomes '
    inner = INNER_MARKS.get(lang or "", "'")
    gap = "" if lang in UNSPACED_LANGUAGES else " "
    chars = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if char in inner:
            between = 0 < i < len(text) - 1 and _is_letter(text[i - 1]) and _is_letter(text[i + 1])
            chars.append(char if between else gap)
        elif category[0] in "PS":  # punctuation and symbols
            chars.append(gap)
        else:
            chars.append(char)
    return "".join(chars)
