"""FreeDict dictionaries in dictd format: a file the test writes, and Debian's when installed."""

from __future__ import annotations

import gzip

import pytest

from xasr.data.lexicon import B64, FreeDict, dictd_number
from xasr.errors import DataError


def encode(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 64)
        digits = B64[digit] + digits
        if not number:
            return digits


def write_dictd(root, name: str, entries: dict[str, str]):
    """entries: headword -> definition text; written as NAME.index + NAME.dict.dz."""
    data, lines = b"", ["00databaseshort\tA\tB"]
    for word, text in entries.items():
        raw = text.encode("utf-8")
        lines.append(f"{word}\t{encode(len(data))}\t{encode(len(raw))}")
        data += raw
    (root / f"{name}.index").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(root / f"{name}.dict.dz", "wb") as f:
        f.write(data)
    return root / f"{name}.index"


def test_dictd_numbers():
    assert dictd_number("B") == 1 and dictd_number("BA") == 64
    assert all(dictd_number(encode(n)) == n for n in (0, 63, 64, 4095, 123456))


def test_reads_senses_from_a_dictd_file(tmp_path):
    index = write_dictd(
        tmp_path,
        "freedict-spa-eng",
        {
            "mañana": "mañana /maɲˈana/\n1. morning\n2. tomorrow\n",
            "grande": "grande /ɡɾˈande/\nbig, great (coll.), large\n",
            "Casa": "casa /kˈasa/\nhouse; home <fem>\n",
        },
    )
    lexicon = FreeDict(index)
    assert lexicon.senses("mañana") == ["morning", "tomorrow"]
    assert lexicon.senses("grande") == ["big", "great", "large"]
    assert lexicon.translate("casa") == "house" and "CASA" in lexicon
    assert lexicon.translate("perro") is None and lexicon.senses("perro") == []
    assert FreeDict.pair("es", "en", root=tmp_path).translate("grande") == "big"


def test_a_missing_dictionary_names_its_package(tmp_path):
    with pytest.raises(DataError, match="dict-freedict-deu-eng"):
        FreeDict.pair("de", "en", root=tmp_path)


def test_debians_spanish_english_dictionary():
    try:
        lexicon = FreeDict.pair("es", "en")
    except DataError:
        pytest.skip("dict-freedict-spa-eng is not installed (make system installs it)")
    assert lexicon.translate("perro") == "dog"
    assert "tomorrow" in lexicon.senses("mañana")
