"""Code-switched sentences: a sentence of the matrix language with stretches (a word or a
short phrase) switched into the embedded language, word by word through a bilingual
dictionary (``xasr.data.lexicon``), and the SSML that lets espeak-ng change language at the
switch points.

Each sentence records its stretches: character offsets into the text and the language of
each, covering the whole text, so scoring can count errors within each language.

``xasr synth --langs es-en`` (FreeDict) or ``zh-en`` (CC-CEDICT, Chinese segmented by the
dictionary) builds such a set (``xasr.data.synth.plan``); each manifest line has
``stretches``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from xasr.data.text import normalize_text

SWITCH_RATE = 0.25  # about this share of a sentence's words are switched
MAX_WORDS = 3  # words per switched stretch, at most
WORD_JOINERS = {"zh": ""}  # what joins two words of a language (default a space)


@dataclass(frozen=True)
class Stretch:
    """Characters ``start`` to ``end`` (exclusive) of a text, in language ``lang``."""

    start: int
    end: int
    lang: str

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "lang": self.lang}


@dataclass(frozen=True)
class CodeSwitched:
    text: str
    stretches: tuple[Stretch, ...]

    @property
    def switches(self) -> int:
        return len(self.stretches) - 1


def switch_words(
    text: str,
    lexicon,
    rng: np.random.Generator,
    matrix: str,
    embedded: str,
    rate: float = SWITCH_RATE,
    max_words: int = MAX_WORDS,
) -> CodeSwitched | None:
    """Switch stretches of ``text`` (matrix language, normalised) into ``embedded``.

    The words are ``lexicon.segment(text)`` (split at spaces; Chinese, by the dictionary).
    About ``rate`` of them are switched (at least one stretch), in stretches of 1 to
    ``max_words`` words that all have a translation in ``lexicon`` (``translate(word) -> str |
    None``), never two stretches side by side. None when no word can switch.
    """
    words = lexicon.segment(text)
    translations = [_translation(lexicon, w, embedded) for w in words]
    switched = [False] * len(words)
    target = max(1, round(rate * len(words)))
    candidates = [i for i, t in enumerate(translations) if t]
    if not candidates:
        return None
    for start in rng.permutation(candidates).tolist():
        if sum(switched) >= target:
            break
        if switched[start] or (start > 0 and switched[start - 1]):
            continue
        length = int(rng.integers(1, max_words + 1))
        end = start
        while end < min(len(words), start + length) and translations[end] and not switched[end]:
            end += 1
        if end < len(words) and switched[end]:  # would touch the next stretch
            end -= 1
        for i in range(start, end):
            switched[i] = True
    if not any(switched):
        return None
    return _assemble(words, translations, switched, matrix, embedded)


def _translation(lexicon, word: str, lang: str) -> str | None:
    """The dictionary's first translation, normalised as ``lang``'s text (None if it cannot
    be: digits, symbols, letters outside the alphabet)."""
    translated = lexicon.translate(word)
    return normalize_text(translated, lang) if translated else None


def _assemble(words, translations, switched, matrix: str, embedded: str) -> CodeSwitched:
    """The text, its stretches one space apart; within a stretch, words joined as their
    language writes them (Chinese without spaces)."""
    pieces: list[tuple[str, str]] = []  # (language, text) runs
    for word, translation, on in zip(words, translations, switched):
        lang, token = (embedded, translation) if on else (matrix, word)
        if pieces and pieces[-1][0] == lang:
            pieces[-1] = (lang, pieces[-1][1] + WORD_JOINERS.get(lang, " ") + token)
        else:
            pieces.append((lang, token))
    text, stretches = "", []
    for lang, piece in pieces:
        start = len(text) + (1 if text else 0)
        text = f"{text} {piece}" if text else piece
        stretches.append(Stretch(start, len(text), lang))
    return CodeSwitched(text, tuple(stretches))


def ssml(sentence: CodeSwitched, voices: dict[str, str], variant: str | None = None) -> str:
    """espeak-ng SSML (``espeak-ng -m``) speaking each stretch in its language's voice;
    ``voices``: language -> espeak-ng voice (e.g. {"es": "es", "en": "en-us"}); ``variant``
    (e.g. ``f3``) is kept across the switches, so one speaker says the whole sentence."""
    suffix = f"+{variant}" if variant else ""
    parts = []
    for s in sentence.stretches:
        words = escape(sentence.text[s.start : s.end])
        parts.append(f'<voice name="{voices[s.lang]}{suffix}">{words}</voice>')
    return "<speak>" + " ".join(parts) + "</speak>"
