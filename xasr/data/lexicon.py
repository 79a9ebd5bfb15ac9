"""Bilingual word lists from Debian's FreeDict dictionaries (``dict-freedict-SRC-TGT``), read
offline in dictd's format: the weak, word-by-word translation that code-switched synthesis
(switching a stretch of words into another language) and low-resource MT baselines need.

A dictd dictionary is two files: ``NAME.index``, one line per headword (``headword TAB offset
TAB length``, the numbers in dictd's base64), and ``NAME.dict.dz``, the definitions, dictzip
(gzip-compatible) compressed. FreeDict definitions start with the headword and its
pronunciation, then the senses: numbered lines (``1. morning``) or one line of comma-separated
synonyms (``big, great, large``).
"""

from __future__ import annotations

import gzip
import re
from functools import cached_property
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

    def __init__(self, index: str | Path, data: str | Path | None = None):
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
        return cls(index)

    @cached_property
    def _offsets(self) -> dict[str, tuple[int, int]]:
        offsets = {}
        for line in self.index_path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00database"):
                continue
            # a headword listed twice keeps its first entry
            offsets.setdefault(parts[0].lower(), (dictd_number(parts[1]), dictd_number(parts[2])))
        return offsets

    @cached_property
    def _data(self) -> bytes:
        with gzip.open(self.data_path) as f:
            return f.read()

    def __contains__(self, word: str) -> bool:
        return word.lower() in self._offsets

    def entry(self, word: str) -> str | None:
        """The raw definition of a headword (case-insensitive), or None."""
        where = self._offsets.get(word.lower())
        if where is None:
            return None
        offset, length = where
        return self._data[offset : offset + length].decode("utf-8", errors="replace")

    def senses(self, word: str) -> list[str]:
        """The translations of a headword, in the dictionary's order, lower case, without
        notes in parentheses or angle brackets."""
        entry = self.entry(word)
        if entry is None:
            return []
        senses = []
        for line in entry.splitlines()[1:]:  # the first line: headword and pronunciation
            line = re.sub(r"^\s*\d+\.\s*", "", line)
            line = re.sub(r"\([^)]*\)|<[^>]*>|\[[^]]*\]", "", line)
            for sense in re.split(r"[,;]", line):
                sense = " ".join(sense.lower().split())
                if sense and sense not in senses:
                    senses.append(sense)
        return senses

    def translate(self, word: str) -> str | None:
        senses = self.senses(word)
        return senses[0] if senses else None
