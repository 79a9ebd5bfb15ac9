"""Transcript normalisation and fortune cleaning (xasr.data.text)."""

import pytest

from xasr.data.text import (
    LANGUAGE_ALPHABETS,
    clean_fortune,
    in_alphabet,
    italian_ascii_accents,
    normalize_text,
    split_sentences,
    strip_overstrikes,
)


def test_overstrikes_are_resolved():
    assert strip_overstrikes("_\bI said B\bBo\bol\bld\bd") == "I said Bold"
    assert strip_overstrikes("*____\b\b\b\bonly* x\b_y") == "*only* xy"
    assert clean_fortune("it is ___\b\b\bnot so") == "it is not so"


def test_ansi_codes_are_stripped_and_coloured_header_lines_dropped():
    raw = "\x1b[32m《塞上》\x1b[m\n鸣骹直上一千尺。\nplain \x1b[1mbold\x1b[m text"
    assert clean_fortune(raw) == "鸣骹直上一千尺。\nplain bold text"


def test_attribution_lines_are_dropped_with_their_continuation():
    raw = 'A wise saying.\n\t\t-- Douglas Adams, "Guida Galattica\n\t\t   per gli Autostoppisti"'
    assert clean_fortune(raw) == "A wise saying."
    assert clean_fortune("Quote one.\n    -- Someone --\nQuote two.") == "Quote one.\nQuote two."
    assert clean_fortune("Frase.\n— Autor") == "Frase."


def test_tabs_and_indentation_are_collapsed():
    assert clean_fortune("\tIndented\t  text\n\n\n\n  next   para") == "Indented text\n\nnext para"


def test_latin_normalisation():
    assert normalize_text("Don’t PANIC, Arthur!", "en") == "don't panic arthur"
    assert normalize_text('"Quoted" (words) -- well-known...', "en") == "quoted words well known"
    assert normalize_text("¿Qué tal, señor?", "es") == "qué tal señor"


def test_german_letters_are_kept():
    assert normalize_text("Größe und Übermaß, Ärger!", "de") == "größe und übermaß ärger"


@pytest.mark.parametrize("text", ["I have 3 cats", "it costs two ²", "nine ninety 9"])
def test_digits_give_none(text):
    assert normalize_text(text, "en") is None


@pytest.mark.parametrize("symbol", list("%$&@#+=/*<>|~^_§€"))
def test_symbols_read_aloud_give_none(symbol):
    assert normalize_text(f"this is {symbol} a sentence", "en") is None


@pytest.mark.parametrize(
    ("text", "lang"),
    [("a café in town", "en"), ("die straße niño", "de"), ("übermaß es malo", "es")],
)
def test_letters_outside_the_alphabet_give_none(text, lang):
    assert normalize_text(text, lang) is None


def test_abbreviations_and_initials_give_none():
    assert normalize_text("Mr. Smith went home", "en") is None
    assert normalize_text("J. R. R. Tolkien wrote it", "en") is None
    assert normalize_text("I saw a cat", "en") == "i saw a cat"


def test_italian_ascii_accents():
    assert italian_ascii_accents("perche' c'e' cosi' tanta citta'") == "perché c'è così tanta città"
    assert normalize_text("E' un po' tardi.", "it") == "è un po tardi"


def test_chinese_keeps_ideographs_only():
    assert normalize_text("床前明月光，疑是地上霜。", "zh") == "床前明月光疑是地上霜"
    assert normalize_text("「你好」 世界！", "zh") == "你好世界"
    assert normalize_text("Debian 很好", "zh") is None
    assert normalize_text("作者（９４６）", "zh") is None


def test_alphabets():
    assert set(LANGUAGE_ALPHABETS) == {"en", "es", "de", "it", "pt"}
    assert in_alphabet("ß", "de") and not in_alphabet("ß", "en")
    assert in_alphabet("中", "zh") and not in_alphabet("a", "zh")


def test_split_sentences():
    text = 'Hello there. How are you?\nFine! "Yes." Ok\n\nnew para; and'
    assert split_sentences(text, "en") == [
        "Hello there.",
        "How are you?",
        "Fine!",
        '"Yes."',
        "Ok",
        "new para;",
        "and",
    ]
    assert split_sentences("一二三，四五。六七八！", "zh") == ["一二三，四五。", "六七八！"]


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="known"):
        normalize_text("hello", "xx")
