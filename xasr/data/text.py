"""Per-language transcript normalisation, alphabets, and fortune-file cleaning.

A normalised transcript is what a character-level recogniser is asked to output and, in the
synthetic corpus, exactly what espeak-ng is asked to say: lower-case (NFC), letters of the
language's alphabet, the apostrophe and single spaces for the Latin-script languages, and CJK
ideographs only (no spaces) for Chinese. ``normalize_text`` returns ``None`` for a sentence that
cannot be spoken faithfully (digits, symbols a synthesiser reads aloud, foreign letters,
abbreviations it would spell or expand), so such sentences are dropped rather than mis-labelled.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Letters of each Latin-script text language; the apostrophe and the space are also allowed
# (WORD_CHARACTERS). Chinese has no short alphabet: its letters are the CJK ideographs (is_cjk).
LANGUAGE_ALPHABETS: dict[str, str] = {
    "en": "abcdefghijklmnopqrstuvwxyz",
    "es": "abcdefghijklmnopqrstuvwxyzáéíóúüñ",
    "de": "abcdefghijklmnopqrstuvwxyzäöüß",
    "it": "abcdefghijklmnopqrstuvwxyzàèéìíòóùú",
    "pt": "abcdefghijklmnopqrstuvwxyzáâãàçéêíóôõú",
}
TEXT_LANGUAGES: tuple[str, ...] = (*LANGUAGE_ALPHABETS, "zh")
WORD_CHARACTERS = "' "

# Single-letter words that are real words; any other lone letter is an initial or an
# abbreviation ("j r r tolkien", "e g"), which a synthesiser spells out.
_SINGLE_LETTER_WORDS = {
    "en": {"a", "i"},
    "es": {"a", "e", "o", "u", "y"},
    "de": set(),
    "it": {"a", "e", "i", "o", "è"},
    "pt": {"a", "e", "o", "à", "é"},
}
_ASCII_VOWELS = set("aeiouy")

APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02bc\u0060\u00b4\u2032\u201b"})
# Punctuation (Unicode category P*) that espeak-ng reads aloud or that marks non-prose
# (emails, paths, hashtags, markup): the sentence is dropped instead of silently cleaned.
_SPOKEN_PUNCTUATION = set("%&@#*/\\_§¶†‡•‰‱")

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ATTRIBUTION_RE = re.compile(r"^\s*(--|—|―)")
_SENTENCE_END_RE = re.compile(r"([.!?;…]+[\"'»”’)\]]*)(?=\s|$)")
_CJK_SENTENCE_END_RE = re.compile(r"([。！？；]+[」』”’）]*)")

# ASCII Italian writes a final accented vowel as vowel + apostrophe ("perche'", "citta'").
_IT_ASCII_ACCENT_RE = re.compile(r"(?<!\w)(\w*?)([aeiou])'(?=[^\w']|$)")
_IT_GRAVE = {"a": "à", "e": "è", "i": "ì", "o": "ò", "u": "ù"}
_IT_ACUTE_E_WORDS = {"ne", "se", "tre", "ventitre", "trentatre", "cinquantatre"}
_IT_TRUE_APOSTROPHE = {"po", "mo", "be", "di", "to", "de", "fa", "sta", "va", "pie"}


def is_cjk(char: str) -> bool:
    """True for a CJK unified ideograph (basic block or extension A), the letters of ``zh``."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


def in_alphabet(char: str, lang: str) -> bool:
    """True if ``char`` (one lower-case character) is a letter of text language ``lang``."""
    if lang == "zh":
        return is_cjk(char)
    return char in LANGUAGE_ALPHABETS[lang]


def alphabet_predicate(lang: str) -> Callable[[str], bool]:
    """``in_alphabet`` bound to ``lang``: a one-argument predicate on characters."""
    _check_lang(lang)
    return lambda char: in_alphabet(char, lang)


def normalize_text(text: str, lang: str) -> str | None:
    """Normalise one sentence for ``lang`` (``en es de it pt zh``), or None if unspeakable.

    Latin script: ``"Don’t PANIC, Arthur!"`` -> ``"don't panic arthur"``. Chinese: ideographs
    only, ``"床前明月光，疑是地上霜。"`` -> ``"床前明月光疑是地上霜"``. None when the
    sentence has digits, symbols (%, $, &, @, #, +, =, /, * ...), letters outside the alphabet,
    or (Latin script) a vowel-less word or a stray single letter, which a synthesiser would
    spell or expand ("mr", "st", "j").
    """
    _check_lang(lang)
    text = unicodedata.normalize("NFC", text).lower().translate(APOSTROPHES)
    if lang == "zh":
        return _normalize_chinese(text)
    if lang == "it":
        text = italian_ascii_accents(text)
    chars = []
    for char in text:
        kept = _latin_char(char, lang)
        if kept is None:
            return None
        chars.append(kept)
    words = [w.strip("'") for w in "".join(chars).split()]
    words = [w for w in words if w]
    if not words or not all(_speakable_word(w, lang) for w in words):
        return None
    return " ".join(words)


def italian_ascii_accents(text: str) -> str:
    """Rewrite ASCII Italian accents: ``"perche' e' cosi'"`` -> ``"perché è così"``.

    Final vowel + apostrophe is a grave accent (acute on -ché words and ne/se/tre), except
    true elisions such as ``po'`` (poco) and ``di'`` (imperative), which keep the apostrophe.
    Expects lower-case text.
    """

    def accent(match: re.Match) -> str:
        stem, vowel = match.group(1), match.group(2)
        word = stem + vowel
        if word in _IT_TRUE_APOSTROPHE:
            return word + "'"
        if vowel == "e" and (stem.endswith("ch") or word in _IT_ACUTE_E_WORDS):
            return stem + "é"
        return stem + _IT_GRAVE[vowel]

    return _IT_ASCII_ACCENT_RE.sub(accent, text)


def clean_fortune(raw: str) -> str:
    """Clean one fortune cookie into plain prose; paragraphs are separated by a blank line.

    Removes backspace overstrikes (``"X\\bX"`` bold, ``"_\\bX"`` underline), lines that start
    with an ANSI colour code (titles, authors and sources in the Chinese collections), remaining
    ANSI codes and control characters, attribution lines (``"\\t\\t-- Author"``, ``"— Author"``)
    with their indented continuation lines, and tab/indent noise. Returns ``"line\\nline\\n\\npara"``
    with each line stripped and inner whitespace collapsed.
    """
    text = strip_overstrikes(raw.replace("\r", ""))
    lines: list[str] = []
    in_attribution = False
    for line in text.split("\n"):
        if line.lstrip().startswith("\x1b"):
            continue
        line = _ANSI_RE.sub("", line)
        line = "".join(c for c in line if c == "\t" or unicodedata.category(c) != "Cc")
        if _ATTRIBUTION_RE.match(line):
            in_attribution = True
            continue
        # An attribution that wraps continues on indented lines ("\t\t   gli Autostoppisti").
        if in_attribution and line[:1].isspace() and line.strip():
            continue
        in_attribution = False
        lines.append(" ".join(line.split()))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_overstrikes(text: str) -> str:
    """Resolve backspace overstrikes: ``"_\\bI"``, ``"I\\bI"``, ``"___\\b\\b\\bnot"`` -> text."""
    text = re.sub(r"([^_\x08\n])\x08_", r"\1", text)  # "X\b_" underlines X, keep X
    previous = None
    while previous != text:  # a backspace deletes the character before it, innermost first
        previous = text
        text = re.sub(r"[^\x08\n]\x08", "", text)
    return text.replace("\x08", "")


def split_sentences(text: str, lang: str) -> list[str]:
    """Split cleaned text (``clean_fortune`` output) into sentences, not yet normalised.

    Boundaries: ``. ! ? ; …`` followed by whitespace (plus closing quotes), CJK ``。！？；``,
    and blank lines. Single line breaks inside a paragraph are joined with a space.
    """
    _check_lang(lang)
    text = _SENTENCE_END_RE.sub(r"\1\n\n", text)
    if lang == "zh":
        text = _CJK_SENTENCE_END_RE.sub(r"\1\n\n", text)
    pieces = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in pieces if p]


def _check_lang(lang: str) -> None:
    if lang not in TEXT_LANGUAGES:
        raise ValueError(f"unknown text language {lang!r}; known: {', '.join(TEXT_LANGUAGES)}")


def _latin_char(char: str, lang: str) -> str | None:
    """One character of a Latin-script sentence -> itself, a space, or None (unspeakable)."""
    if char in LANGUAGE_ALPHABETS[lang] or char == "'":
        return char
    if char.isspace():
        return " "
    category = unicodedata.category(char)
    if category.startswith("P") and char not in _SPOKEN_PUNCTUATION:
        return " "
    return None  # digits (N*), symbols (S*), foreign letters (L*), marks, controls


def _speakable_word(word: str, lang: str) -> bool:
    """Reject words a synthesiser would spell or expand: lone letters, no vowel ("mr", "st")."""
    letters = word.replace("'", "")
    if len(letters) == 1:
        return letters in _SINGLE_LETTER_WORDS[lang]
    vowels = _ASCII_VOWELS | {c for c in LANGUAGE_ALPHABETS[lang] if not c.isascii()}
    vowels -= {"ñ", "ß", "ç"}
    return any(c in vowels for c in letters)


def _normalize_chinese(text: str) -> str | None:
    """Keep CJK ideographs, drop punctuation and spaces; None on digits, Latin letters, symbols."""
    kept = []
    for char in text:
        if is_cjk(char):
            kept.append(char)
        elif char.isspace() or unicodedata.category(char).startswith("P"):
            continue
        else:
            return None
    return "".join(kept) or None
