"""XLT-Synth: the embedded corpus. espeak-ng speaks real sentences from the fortune collections.

Each utterance is one normalised sentence spoken by an espeak-ng voice + variant at a random
speed and pitch, resampled to 16 kHz mono, then (``conditions="noisy"``) passed through random
recording conditions: babble, reverberation, coloured noise, telephone band, gain. Every random
choice of utterance ``i`` of split ``s`` comes from a generator seeded by
``(seed, code, s, i)``, so a corpus is identical whatever the number of workers, and the clean
and noisy builds of one seed pair up (same text, voice, speed and pitch per utterance).

Splits never share a sentence: the language's sentences are shuffled with ``seed``, kept only
if their topic (fortune file) is among ``topics`` when given, and cut into test, dev and train
pools in that order. Codes with the same text language (``en`` and its accents
``en-gb-scotland``, ``en-029``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-us-nyc``; ``cmn``,
``yue``) cut the same pools for one seed, the same topics and equal dev/test sizes, so one
code's test sentences never occur in another's train split. Topics change the pools: builds
with disjoint topic sets share no sentence at all (a domain-shift pair such as computing vs
literature is clean), but builds whose topic sets overlap (all topics, the default, overlaps
every selection) cut different pools, so a test sentence of one may be a train sentence of the
other. dev and test are spoken by held-out voice variants only (``HELDOUT_VARIANTS``), train by
the others (``TRAIN_VARIANTS``).

Layout: ``OUT/<code>/{train,dev,test}.jsonl`` (NeMo JSONL, relative audio paths),
``OUT/<code>/audio/<split>/<id>.wav`` (16-bit PCM) and ``OUT/<code>/synth.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from audiomentations import AddColorNoise, BandPassFilter, Gain
from scipy.signal import fftconvolve
from tqdm import tqdm

from xasr import checks
from xasr.data.audio import SAMPLE_RATE, save_audio
from xasr.data.manifest import Utterance, write_manifest
from xasr.data.text import clean_fortune, normalize_text, split_sentences
from xasr.errors import DataError
from xasr.io import output_dir

log = logging.getLogger(__name__)

FORTUNE_ROOT = Path("/usr/share/games/fortunes")
INSTALL_HINT = (
    "sudo apt-get install espeak-ng fortunes fortunes-es fortunes-de fortunes-it "
    "fortunes-br fortunes-zh"
)
SYNTH_VERSION = 1  # bump when a change alters the audio or the text, to invalidate old builds
SPLITS = ("train", "dev", "test")
CONDITIONS = ("noisy", "clean")
WORD_RANGE = (3, 20)  # words per sentence, Latin script
CHAR_RANGE = (4, 30)  # ideographs per sentence, Chinese
SPEED_RANGE = (130, 200)  # espeak-ng -s, words per minute
PITCH_RANGE = (30, 70)  # espeak-ng -p, 0-99 around the variant's own pitch
PEAK = 0.9

# Files that are pictures rather than prose, at any level of the fortune tree.
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
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f4", "f5", "klatt", "klatt3", "Alex",
    "Annie", "aunty", "belinda", "benjamin", "boris", "edward", "max", "Michael", "Mike",
    "paul", "quincy", "steph",
)  # fmt: skip
HELDOUT_VARIANTS = ("m4", "m7", "f3", "linda", "klatt2", "Andy", "david", "robert")


@dataclass(frozen=True)
class SynthLanguage:
    """One corpus language: espeak-ng voices that speak it and the fortune files it reads.

    ``fortune_globs`` are relative to ``FORTUNE_ROOT``; ``text_lang`` picks the normaliser.
    """

    code: str
    text_lang: str
    espeak_voices: tuple[str, ...]
    fortune_globs: tuple[str, ...]


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
        SynthLanguage("de", "de", ("de",), ("de/*",)),
        SynthLanguage("it", "it", ("it",), ("it/*",)),
        SynthLanguage("pt", "pt", ("pt", "pt-br"), ("brasil",)),
        # Plain "cmn" reads many ideographs as pinyin spelled in English ("tian one");
        # the pinyin voice reads them as Mandarin.
        SynthLanguage("cmn", "zh", ("cmn-latn-pinyin",), _CHINESE_FILES),
        SynthLanguage("yue", "zh", ("yue",), _CHINESE_FILES),
        # Accents for later scenarios: English text, one regional voice each (each has its own
        # espeak-ng phoneme table; "en" itself must keep its voices: en-small was trained on it).
        SynthLanguage("en-gb-scotland", "en", ("en-gb-scotland",), _ENGLISH_FILES),
        SynthLanguage("en-029", "en", ("en-029",), _ENGLISH_FILES),  # Caribbean
        SynthLanguage("en-gb-x-gbclan", "en", ("en-gb-x-gbclan",), _ENGLISH_FILES),  # Lancaster
        SynthLanguage("en-gb-x-gbcwmd", "en", ("en-gb-x-gbcwmd",), _ENGLISH_FILES),  # W. Midlands
        SynthLanguage("en-us-nyc", "en", ("en-us-nyc",), _ENGLISH_FILES),  # New York City
    )
}


@dataclass(frozen=True)
class _Voice:
    """One espeak-ng speaker: ``-v voice+variant -s speed -p pitch``."""

    voice: str
    variant: str
    speed: int
    pitch: int


@dataclass(frozen=True)
class _Conditions:
    """Recording conditions of one utterance; the defaults are a clean recording."""

    babble: tuple[tuple[str, _Voice], ...] = ()  # (text, speaker) of each background talker
    babble_snr: float = 0.0
    reverb_rt60: float | None = None
    noise: tuple[float, float] | None = None  # (SNR dB, spectral decay dB/octave)
    telephone: bool = False
    gain_db: float | None = None

    def describe(self) -> str:
        """Short form for the manifest: ``"babble3@14dB+reverb0.45s+pink@12dB+gain-3dB"``."""
        parts = []
        if self.babble:
            parts.append(f"babble{len(self.babble)}@{self.babble_snr:.0f}dB")
        if self.reverb_rt60 is not None:
            parts.append(f"reverb{self.reverb_rt60:.2f}s")
        if self.noise is not None:
            parts.append(f"{_NOISE_COLOURS[self.noise[1]]}@{self.noise[0]:.0f}dB")
        if self.telephone:
            parts.append("telephone")
        if self.gain_db is not None:
            parts.append(f"gain{self.gain_db:.0f}dB")  # no "+" sign: "+" joins the parts
        return "+".join(parts) or "clean"


# Spectral decay of the added noise in dB/octave (audiomentations AddColorNoise f_decay).
_NOISE_COLOURS = {0.0: "white", -3.0: "pink", -6.0: "brown", 3.0: "blue"}


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to render one utterance (drawn in the parent, picklable)."""

    path: str
    text: str
    speaker: _Voice
    conditions: _Conditions
    aug_seed: int  # seeds the sample-level randomness (noise, offsets, room response)


@dataclass(frozen=True)
class _Build:
    """One language's build: where, with what parameters, and how jobs are mapped."""

    code: str
    folder: Path
    params: dict
    mapper: Callable  # ordered map over jobs: builtin map or Pool.imap
    workers: int
    progress: bool


# --------------------------------------------------------------------------- public API


def build_xlt_synth(
    langs: list[str],
    out: Path,
    train_minutes: float = 10,
    dev_utts: int = 100,
    test_utts: int = 200,
    seed: int = 0,
    conditions: str = "noisy",
    workers: int | None = None,
    progress: bool = True,
    topics: Sequence[str] | None = None,
) -> dict[str, dict[str, Path]]:
    """Synthesise XLT-Synth for ``langs`` under ``out``; returns ``{code: {split: manifest}}``.

    ``train_minutes`` is the total train audio (the shortest prefix of the train pool that
    reaches it); ``dev_utts``/``test_utts`` count utterances; ``conditions`` is ``"noisy"`` or
    ``"clean"``. ``topics`` (fortune file stems, see ``topics_of``) keeps only those topics'
    sentences, in every language of the request; build different selections under different
    ``out`` folders. A language whose ``synth.json`` holds the same parameters and whose
    manifests exist is skipped ("up to date"). Raises ``DataError`` for an unknown language or
    topic, a missing espeak-ng or fortune package, or too few sentences for the dev/test sizes.
    """
    _check_request(langs, train_minutes, dev_utts, test_utts, conditions)
    checks.integer("--seed", seed, at_least=0)
    if workers is not None:
        checks.integer("--workers", workers, at_least=1)
    topics = _check_topics(langs, topics)
    out = output_dir(out).resolve()
    workers = max(1, workers or os.cpu_count() or 1)
    result: dict[str, dict[str, Path]] = {}
    pool = _make_pool(workers) if workers > 1 else None
    try:
        mapper = pool.imap if pool is not None else map
        for code in langs:
            params = _params(code, train_minutes, dev_utts, test_utts, seed, conditions)
            if topics is not None:  # absent otherwise: builds made before topics stay valid
                params["topics"] = topics
            build = _Build(code, out / code, params, mapper, workers, progress)
            result[code] = _build_language(build)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return result


def available_sentences(lang_code: str) -> list[Sentence]:
    """Usable sentences of a corpus language, deduplicated, in file order (deterministic).

    Raises ``DataError`` for an unknown code or when its fortune files are not installed.
    """
    lang = _language(lang_code)
    return list(_sentences_cached(FORTUNE_ROOT, lang.text_lang, lang.fortune_globs))


def topics_of(lang_code: str) -> dict[str, int]:
    """Topics (fortune file stems) of a corpus language -> usable sentences, most first."""
    counts: dict[str, int] = {}
    for sentence in available_sentences(lang_code):
        counts[sentence.topic] = counts.get(sentence.topic, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --------------------------------------------------------------------------- sentences


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


def _language(code: str) -> SynthLanguage:
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


# --------------------------------------------------------------------------- build


def _check_request(
    langs: Sequence[str], train_minutes: float, dev_utts: int, test_utts: int, conditions: str
) -> None:
    if not langs:
        raise DataError("--langs is empty; give language codes such as en,es")
    for code in langs:
        _language(code)
    checks.one_of("--conditions", conditions, CONDITIONS)
    checks.number("--train-minutes", train_minutes, at_least=0)
    checks.integer("--dev-utts", dev_utts, at_least=0)
    checks.integer("--test-utts", test_utts, at_least=0)
    if shutil.which("espeak-ng") is None:
        raise DataError(f"espeak-ng is not installed; install it with: {INSTALL_HINT}")


def _check_topics(langs: Sequence[str], topics: Sequence[str] | None) -> list[str] | None:
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


def _params(
    code: str, train_minutes: float, dev_utts: int, test_utts: int, seed: int, conditions: str
) -> dict:
    """Everything that determines one language's output (``synth.json["params"]``)."""
    return {
        "version": SYNTH_VERSION,
        "espeak_ng": _espeak_version(),
        "language": asdict(SYNTH_LANGUAGES[code]),
        "train_variants": list(TRAIN_VARIANTS),
        "heldout_variants": list(HELDOUT_VARIANTS),
        "train_minutes": float(train_minutes),
        "dev_utts": dev_utts,
        "test_utts": test_utts,
        "seed": seed,
        "conditions": conditions,
        "sample_rate": SAMPLE_RATE,
    }


@lru_cache(maxsize=1)
def _espeak_version() -> str:
    result = subprocess.run(["espeak-ng", "--version"], check=False, capture_output=True, text=True)
    return result.stdout.split("  Data")[0].strip()


def _build_language(build: _Build) -> dict[str, Path]:
    """Build (or reuse) one language; returns ``{split: manifest path}``."""
    manifests = {split: build.folder / f"{split}.jsonl" for split in SPLITS}
    info_path = build.folder / "synth.json"
    if _up_to_date(info_path, build.params, manifests.values()):
        log.info("XLT-Synth %s: up to date (%s)", build.code, build.folder)
        return manifests
    pools = _sentence_pools(build.code, build.params)  # too few sentences: the old build stays
    info_path.unlink(missing_ok=True)  # a build cut short must not look finished
    shutil.rmtree(build.folder / "audio", ignore_errors=True)  # no stale files of old builds
    stats = {}
    for split in ("test", "dev", "train"):
        if split == "train":
            utts = _build_train(build, pools[split])
        else:
            utts = _build_fixed(build, split, pools[split])
        write_manifest(manifests[split], utts)
        stats[split] = {"utterances": len(utts), "seconds": sum(u.duration for u in utts)}
    info = {"params": build.params, "stats": stats}
    info_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("XLT-Synth %s: %s", build.code, stats)
    return manifests


def _up_to_date(info_path: Path, params: dict, manifests: Iterable[Path]) -> bool:
    if not info_path.is_file() or not all(p.is_file() for p in manifests):
        return False
    try:
        stored = json.loads(info_path.read_text(encoding="utf-8")).get("params")
    except (json.JSONDecodeError, OSError):
        return False
    return stored == json.loads(json.dumps(params))  # as JSON: tuples read back as lists


def _sentence_pools(code: str, params: dict) -> dict[str, list[Sentence]]:
    """Disjoint sentence pools: shuffle with the seed, keep the requested topics, cut test, then
    dev; train gets the rest.

    Shuffling before the topic filter keeps every sentence's place relative to the others the
    same in each build of a seed, whatever the topics; without topics the pools are those of
    builds made before topics existed.
    """
    sentences = available_sentences(code)
    random.Random(params["seed"]).shuffle(sentences)
    topics = params.get("topics")
    if topics is not None:
        sentences = [s for s in sentences if s.topic in topics]
    dev_utts, test_utts = params["dev_utts"], params["test_utts"]
    if len(sentences) < dev_utts + test_utts + 1:
        of_topics = f" of topics {', '.join(topics)}" if topics is not None else ""
        raise DataError(
            f"XLT-Synth {code} has {len(sentences)} usable sentences{of_topics}, too few for "
            f"{test_utts} test + {dev_utts} dev utterances and a train split; ask for fewer"
        )
    return {
        "test": sentences[:test_utts],
        "dev": sentences[test_utts : test_utts + dev_utts],
        "train": sentences[test_utts + dev_utts :],
    }


def _build_fixed(build: _Build, split: str, pool: list[Sentence]) -> list[Utterance]:
    """dev/test: one utterance per pool sentence."""
    jobs = [_plan(build, split, i, pool) for i in range(len(pool))]
    desc = f"{build.code} {split}"
    utts = []
    with tqdm(total=len(jobs), desc=desc, unit="utt", disable=not build.progress) as bar:
        for i, duration in enumerate(build.mapper(_render, jobs)):
            utts.append(_utterance(build.code, split, jobs[i], pool[i], duration))
            bar.update(1)
    return utts


def _build_train(build: _Build, pool: list[Sentence]) -> list[Utterance]:
    """train: render the pool in order, keep the shortest prefix reaching ``train_minutes``.

    Chunks only decide how much is rendered ahead; the kept prefix depends on the per-utterance
    durations alone, so it is the same for any number of workers.
    """
    target = build.params["train_minutes"] * 60
    utts: list[Utterance] = []
    total, start = 0.0, 0
    bar = tqdm(
        total=round(target), desc=f"{build.code} train", unit="s", disable=not build.progress
    )
    with bar:
        while total < target and start < len(pool):
            stop = min(len(pool), start + _chunk_size(target - total, utts, build.workers))
            jobs = [_plan(build, "train", i, pool) for i in range(start, stop)]
            for index, job, duration in zip(range(start, stop), jobs, build.mapper(_render, jobs)):
                if total >= target:
                    Path(job.path).unlink(missing_ok=True)  # rendered ahead, not needed
                    continue
                utts.append(_utterance(build.code, "train", job, pool[index], duration))
                total += duration
                bar.update(min(duration, max(0.0, target - bar.n)))
            start = stop
    if total < target:
        log.warning("XLT-Synth %s: train pool ran out at %.1f min", build.code, total / 60)
    return utts


def _chunk_size(remaining_s: float, done: list[Utterance], workers: int) -> int:
    """How many train utterances to render next: enough for the remaining time, plus slack."""
    mean = sum(u.duration for u in done) / len(done) if done else 3.0
    return max(workers, min(512, math.ceil(remaining_s / mean) + workers))


def _utterance(code: str, split: str, job: _Job, sentence: Sentence, duration: float):
    """The manifest row of a rendered job."""
    speaker = job.speaker
    return Utterance(
        audio_filepath=Path(job.path),
        text=job.text,
        duration=duration,
        lang=code,
        id=Path(job.path).stem,
        extra={
            "voice": speaker.voice,
            "variant": speaker.variant,
            "speed": speaker.speed,
            "pitch": speaker.pitch,
            "topic": sentence.topic,
            "conditions": job.conditions.describe(),
            "split_voices": "train" if split == "train" else "heldout",
        },
    )


def _make_pool(workers: int):
    # fork: workers inherit the imported modules and start in milliseconds (no re-import).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers)


# --------------------------------------------------------------------------- planning


def _utterance_rng(seed: int, code: str, split: str, index: int) -> np.random.Generator:
    """Generator for utterance ``index`` of ``split``: independent of order and worker count."""
    digest = hashlib.sha256(f"xlt-synth|{seed}|{code}|{split}|{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _plan(build: _Build, split: str, index: int, pool: list[Sentence]) -> _Job:
    """Draw every random choice of one utterance.

    Conditions are drawn even for a clean build, so clean and noisy builds of a seed share
    text, speaker, speed and pitch utterance by utterance.
    """
    rng = _utterance_rng(build.params["seed"], build.code, split, index)
    lang = SYNTH_LANGUAGES[build.code]
    variants = TRAIN_VARIANTS if split == "train" else HELDOUT_VARIANTS
    speaker = _draw_voice(rng, lang, variants)
    conditions = _draw_conditions(rng, lang, variants, pool, index, speaker)
    if build.params["conditions"] == "clean":
        conditions = _Conditions()
    path = build.folder / "audio" / split / f"{build.code}-{split}-{index:06d}.wav"
    return _Job(str(path), pool[index].text, speaker, conditions, int(rng.integers(2**32)))


def _draw_voice(rng: np.random.Generator, lang: SynthLanguage, variants: Sequence[str]) -> _Voice:
    return _Voice(
        voice=str(rng.choice(lang.espeak_voices)),
        variant=str(rng.choice(variants)),
        speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
    )


def _draw_conditions(
    rng: np.random.Generator,
    lang: SynthLanguage,
    variants: Sequence[str],
    pool: list[Sentence],
    index: int,
    speaker: _Voice,
) -> _Conditions:
    """Babble p=0.3 (2-4 talkers, 10-25 dB), reverb p=0.3 (RT60 0.2-0.8 s), coloured noise
    p=0.8 (5-30 dB), telephone p=0.15, gain -10..+2 dB. Every value is drawn whether used or
    not, so the sequence of draws is fixed."""
    talkers = int(rng.integers(2, 5))
    others = [v for v in variants if v != speaker.variant]
    picks = [int(p) for p in rng.integers(len(pool), size=talkers)]
    babble = tuple(
        (pool[(p + (p == index)) % len(pool)].text, _draw_voice(rng, lang, others))
        for p in picks  # another sentence of the same split, another variant
    )
    babble_snr, use_babble = float(rng.uniform(10, 25)), rng.random() < 0.3 and len(pool) > 1
    rt60, use_reverb = float(rng.uniform(0.2, 0.8)), rng.random() < 0.3
    snr, decay = float(rng.uniform(5, 30)), float(rng.choice(list(_NOISE_COLOURS)))
    use_noise = rng.random() < 0.8
    telephone = bool(rng.random() < 0.15)
    return _Conditions(
        babble=babble if use_babble else (),
        babble_snr=babble_snr,
        reverb_rt60=rt60 if use_reverb else None,
        noise=(snr, decay) if use_noise else None,
        telephone=telephone,
        gain_db=float(rng.uniform(-10, 2)),
    )


# --------------------------------------------------------------------------- rendering


def _render(job: _Job) -> float:
    """Speak, condition and write one utterance; returns its duration in seconds."""
    audio = _peak_normalize(_trim_silence(_speak(job.text, job.speaker)))
    audio = _apply_conditions(audio, job.conditions, job.aug_seed)
    Path(job.path).parent.mkdir(parents=True, exist_ok=True)
    save_audio(job.path, audio)
    return len(audio) / SAMPLE_RATE


def _speak(text: str, speaker: _Voice) -> np.ndarray:
    """espeak-ng -> float32 mono at SAMPLE_RATE, shape (samples,)."""
    command = ["espeak-ng", "-b", "1", "-v", f"{speaker.voice}+{speaker.variant}"]
    command += ["-s", str(speaker.speed), "-p", str(speaker.pitch), "--stdout"]
    # Text on stdin: never mistaken for an option, no length limit of the command line.
    result = subprocess.run(command, check=False, input=text.encode(), capture_output=True)
    if result.returncode != 0 or len(result.stdout) <= 44:  # 44 bytes: a WAV header alone
        message = result.stderr.decode(errors="replace").strip()
        raise DataError(f"espeak-ng {' '.join(command[3:5])} failed on {text!r}: {message}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def _trim_silence(audio: np.ndarray, top_db: float = 40.0) -> np.ndarray:
    """Cut leading/trailing 10 ms frames 40 dB below the loudest, keeping 50/100 ms margins."""
    frame = SAMPLE_RATE // 100
    frames = len(audio) // frame
    if frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    begin = max(0, loud[0] * frame - SAMPLE_RATE // 20)
    end = min(len(audio), (loud[-1] + 1) * frame + SAMPLE_RATE // 10)
    return audio[begin:end]


def _peak_normalize(audio: np.ndarray, peak: float = PEAK) -> np.ndarray:
    top = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return audio if top == 0 else (audio * (peak / top)).astype(np.float32)


def _apply_conditions(audio: np.ndarray, conditions: _Conditions, seed: int) -> np.ndarray:
    """Babble -> reverberation -> noise -> telephone -> gain -> clip to [-1, 1].

    The order follows the signal path: talkers in the room, the room, the microphone, the
    channel. audiomentations draws from ``random`` and ``np.random``, so both are seeded.
    """
    random.seed(seed)
    np.random.seed(seed)
    if conditions.babble:
        audio = _add_babble(audio, conditions.babble, conditions.babble_snr)
    if conditions.reverb_rt60 is not None:
        audio = _reverberate(audio, conditions.reverb_rt60)
    if conditions.noise is not None:
        snr, decay = conditions.noise
        noise = AddColorNoise(snr, snr, min_f_decay=decay, max_f_decay=decay, p=1.0)
        audio = noise(audio, sample_rate=SAMPLE_RATE)
    if conditions.telephone:
        audio = _telephone(audio)
    if conditions.gain_db is not None:
        gain = Gain(conditions.gain_db, conditions.gain_db, p=1.0)
        audio = gain(audio, sample_rate=SAMPLE_RATE)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _add_babble(audio: np.ndarray, talkers, snr_db: float) -> np.ndarray:
    """Mix other talkers, each looped and cut at a random offset, at ``snr_db`` below speech."""
    babble = np.zeros_like(audio)
    for text, speaker in talkers:
        talk = _peak_normalize(_trim_silence(_speak(text, speaker)))
        talk = np.tile(talk, math.ceil(2 * len(audio) / len(talk)))
        offset = np.random.randint(0, len(talk) - len(audio) + 1)
        babble += talk[offset : offset + len(audio)]
    return _mix_at_snr(audio, babble, snr_db)


def _mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + k * noise`` with k chosen so that the RMS ratio is ``snr_db``."""
    signal_rms = np.sqrt(np.mean(signal**2))
    noise_rms = np.sqrt(np.mean(noise**2))
    if noise_rms == 0:
        return signal
    scale = signal_rms / (noise_rms * 10 ** (snr_db / 20))
    return (signal + scale * noise).astype(np.float32)


def _reverberate(audio: np.ndarray, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room response: direct path + exponentially decaying noise.

    The tail decays by 60 dB in ``rt60`` seconds and carries as much energy as the direct
    path; the output keeps the input's length and peak.
    """
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = np.random.standard_normal(length) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908
    tail[: SAMPLE_RATE // 200] = 0  # 5 ms between the direct sound and the first reflections
    response = tail / np.sqrt(np.sum(tail**2))
    response[0] = 1.0
    wet = fftconvolve(audio, response)[: len(audio)]
    return _peak_normalize(wet.astype(np.float32), float(np.max(np.abs(audio))))


def _telephone(audio: np.ndarray) -> np.ndarray:
    """Narrow-band channel: 300-3400 Hz band-pass, then down to 8 kHz and back."""
    center = (300 + 3400) / 2
    fraction = (3400 - 300) / center
    band = BandPassFilter(
        min_center_freq=center,
        max_center_freq=center,
        min_bandwidth_fraction=fraction,
        max_bandwidth_fraction=fraction,
        min_rolloff=24,
        max_rolloff=24,
        p=1.0,
    )
    audio = band(audio, sample_rate=SAMPLE_RATE)
    narrow = soxr.resample(audio, SAMPLE_RATE, 8000, quality="HQ")
    wide = soxr.resample(narrow, 8000, SAMPLE_RATE, quality="HQ")
    wide = np.pad(wide, (0, max(0, len(audio) - len(wide))))  # soxr may round one sample off
    return wide[: len(audio)].astype(np.float32)
