"""XLT-Synth's sentences: the languages (espeak-ng voices, fortune files, alphabets), their
fortune collections read, cleaned, normalised and filtered by length, and their topics."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from xasr.data.text import clean_fortune, normalize_text, split_sentences
from xasr.errors import DataError

log = logging.getLogger(__name__)

FORTUNE_ROOT = Path("/usr/share/games/fortunes")
INSTALL_HINT = (
    "sudo apt-get install espeak-ng fortunes fortunes-es fortunes-de fortunes-it "
    "fortunes-br fortunes-zh"
)


WORD_RANGE = (3, 20)  # words per sentence, Latin script
CHAR_RANGE = (4, 30)  # ideographs per sentence, Chinese


_SKIPPED_STEMS = frozenset({"ascii-art", "asciiart", "banner"})
_SKIPPED_SUFFIXES = (".dat", ".u8")  # index files; .u8 are symlinks to the same text


_ENGLISH_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
    "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux",
    "linuxcookie", "literature", "love", "magic", "medicine", "men-women", "miscellaneous",
    "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics", "pratchett",
    "riddles", "science", "songs-poems", "sports", "startrek", "tao", "translate-me", "wisdom",
    "work", "zippy",
)  # fmt: skip
_CHINESE_FILES = ("chinese", "tang300", "song100")

# Curated espeak-ng variants that sound like speech (no whisper, robot, echo or joke voices),
# split by hand into train and held-out sets (8 of 33, ~25%, both sexes and both synthesis
# engines in each) so that dev/test measure generalisation to unseen speakers.


@dataclass(frozen=True)
class SynthLanguage:
    """One corpus language: espeak-ng voices that speak it and the fortune files it reads.

    ``fortune_globs`` are relative to ``FORTUNE_ROOT``; ``text_lang`` picks the normaliser.
    A code-switched pair (``es-en``) reads the matrix language's sentences and switches
    stretches of them into ``embedded``, spoken by ``embedded_voice`` with the speaker's
    variant (``xasr.data.synth.codeswitch``).
    """

    code: str
    text_lang: str
    espeak_voices: tuple[str, ...]
    fortune_globs: tuple[str, ...]
    embedded: str | None = None
    embedded_voice: str | None = None


@dataclass(frozen=True)
class Sentence:
    """A normalised sentence and its topic (the fortune file's stem, e.g. ``"computers"``)."""

    text: str
    topic: str


SYNTH_LANGUAGES: dict[str, SynthLanguage] = {
    lang.code: lang
    for lang in (
        SynthLanguage("en", "en", ("en-us", "en-gb", "en-gb-x-rp"), _ENGLISH_FILES),
        SynthLanguage("es", "es", ("es", "es-419"), ("es/*.fortunes", "es/*.fortunes-pre")),
        # Spanish with English stretches: the Spanish sentences (and, for one seed, pools)
        SynthLanguage(
            "es-en", "es", ("es",), ("es/*.fortunes", "es/*.fortunes-pre"), "en", "en-us"
        ),
        SynthLanguage("de", "de", ("de",), ("de/*",)),
        SynthLanguage("it", "it", ("it",), ("it/*",)),
        SynthLanguage("pt", "pt", ("pt", "pt-br"), ("brasil",)),
        # Plain "cmn" reads many ideographs as pinyin spelled in English ("tian one");
        # the pinyin voice reads them as Mandarin.
        SynthLanguage("cmn", "zh", ("cmn-latn-pinyin",), _CHINESE_FILES),
        # Mandarin with English stretches (the meta-transfer paper's pair), through CC-CEDICT
        SynthLanguage("zh-en", "zh", ("cmn-latn-pinyin",), _CHINESE_FILES, "en", "en-us"),
        SynthLanguage("yue", "zh", ("yue",), _CHINESE_FILES),
        # Accents for later scenarios: English text, one regional voice each (each has its own
        # espeak-ng phoneme table; "en" itself must keep its voices: en-small was trained on it).
        SynthLanguage("en-gb-scotland", "en", ("en-gb-scotland",), _ENGLISH_FILES),
        SynthLanguage("en-029", "en", ("en-029",), _ENGLISH_FILES),  # Caribbean
        SynthLanguage("en-gb-x-gbclan", "en", ("en-gb-x-gbclan",), _ENGLISH_FILES),  # Lancaster
        SynthLanguage("en-gb-x-gbcwmd", "en", ("en-gb-x-gbcwmd",), _ENGLISH_FILES),  # W. Midlands
        SynthLanguage("en-us-nyc", "en", ("en-us-nyc",), _ENGLISH_FILES),  # New York City
        # Voices without a sentence collection: they speak a given corpus's lines
        # (xasr.data.synth.paired: Fish Fillets NG's Czech, spoken again by espeak-ng)
        SynthLanguage("cs", "cs", ("cs",), ()),
    )
}


def available_sentences(lang_code: str) -> list[Sentence]:
    """Usable sentences of a corpus language, deduplicated, in file order (deterministic).

    Raises ``DataError`` for an unknown code or when its fortune files are not installed.
    """
    lang = language(lang_code)
    if not lang.fortune_globs:
        raise DataError(
            f"XLT-Synth {lang_code} has no sentence collection of its own; it speaks a given "
            "corpus's lines (xasr.data.synth.paired.synth_paired)"
        )
    return list(_sentences_cached(FORTUNE_ROOT, lang.text_lang, lang.fortune_globs))


def topics_of(lang_code: str) -> dict[str, int]:
    """Topics (fortune file stems) of a corpus language -> usable sentences, most first."""
    counts: dict[str, int] = {}
    for sentence in available_sentences(lang_code):
        counts[sentence.topic] = counts.get(sentence.topic, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


@cache
def _sentences_cached(root: Path, text_lang: str, globs: tuple[str, ...]) -> tuple[Sentence, ...]:
    """Parsing every file takes ~1 s per language: do it once per process."""
    seen: set[str] = set()
    sentences = []
    for path in _fortune_files(root, globs):
        for sentence in _file_sentences(path, text_lang):
            if sentence.text not in seen:
                seen.add(sentence.text)
                sentences.append(sentence)
    return tuple(sentences)


def language(code: str) -> SynthLanguage:
    if code not in SYNTH_LANGUAGES:
        raise DataError(f"unknown XLT-Synth language {code!r}; known: {', '.join(SYNTH_LANGUAGES)}")
    return SYNTH_LANGUAGES[code]


def _fortune_files(root: Path, globs: Iterable[str]) -> list[Path]:
    """Fortune text files matching ``globs``: sorted, deduplicated by target, no index/art/off."""
    files: dict[Path, Path] = {}
    for pattern in globs:
        for path in sorted(root.glob(pattern)):
            if _is_fortune_text(root, path):
                files.setdefault(path.resolve(), path)
    if not files:
        raise DataError(
            f"no fortune files match {', '.join(globs)} under {root}; install them "
            f"with: {INSTALL_HINT}"
        )
    return list(files.values())


def _is_fortune_text(root: Path, path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.endswith(_SKIPPED_SUFFIXES)
        and _topic(path) not in _SKIPPED_STEMS
        and "off" not in path.relative_to(root).parts  # offensive collections
    )


def _topic(path: Path) -> str:
    """Fortune file stem: ``es/amistad.fortunes`` -> ``amistad``."""
    return path.name.split(".")[0]


def _file_sentences(path: Path, text_lang: str) -> list[Sentence]:
    """Normalised sentences of one fortune file within the length limits, in file order."""
    topic = _topic(path)
    sentences = []
    for cookie in _read_cookies(path):
        for raw in split_sentences(clean_fortune(cookie), text_lang):
            text = normalize_text(raw, text_lang)
            if text is not None and _good_length(text, text_lang):
                sentences.append(Sentence(text, topic))
    return sentences


def _read_cookies(path: Path) -> list[str]:
    """Split a fortune file into cookies on lines that are exactly ``%``."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8; reading it as Latin-1", path)
        text = data.decode("latin-1")
    cookies, current = [], []
    for line in text.split("\n"):
        if line.rstrip("\r") == "%":
            cookies.append("\n".join(current))
            current = []
        else:
            current.append(line)
    cookies.append("\n".join(current))
    return [c for c in cookies if c.strip()]


def _good_length(text: str, text_lang: str) -> bool:
    low, high = CHAR_RANGE if text_lang == "zh" else WORD_RANGE
    size = len(text) if text_lang == "zh" else len(text.split())
    return low <= size <= high


def check_topics(langs: Sequence[str], topics: Sequence[str] | None) -> list[str] | None:
    """Sorted unique topics (the order does not matter), each one known in every language."""
    if topics is None:
        return None
    if isinstance(topics, str):
        raise DataError(f"topics must be a list of topic names, got the string {topics!r}")
    chosen = sorted({topic.strip() for topic in topics if topic.strip()})
    if not chosen:
        raise DataError("topics is empty; leave it out to keep every topic")
    for code in langs:
        known = topics_of(code)
        unknown = [topic for topic in chosen if topic not in known]
        if unknown:
            listing = ", ".join(f"{topic} ({n})" for topic, n in sorted(known.items()))
            raise DataError(
                f"XLT-Synth {code} has no topic {', '.join(map(repr, unknown))}; "
                f"its topics (usable sentences): {listing}"
            )
    return chosen
