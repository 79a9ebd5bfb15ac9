"""Fish Fillets NG's voice acting as a corpus: real, acted, transcribed speech (Czech).

The Debian packages ``fillets-ng-data`` (scripts, GPL-2+) and ``fillets-ng-data-cs`` (the
Czech voices) install, under ``/usr/share/games/fillets-ng`` (or ``usr/share/games/fillets-ng``
of an unpacked package; either folder, or one above it, is accepted)::

    script/<level>/dialogs_<lang>.lua   dialogId("<id>", "<font>", "<the English line>")
                                        dialogStr("<the line in <lang>>")
    sound/<level>/<lang>/<id>.ogg       the line spoken (22.05 or 44.1 kHz, mono or stereo)

An id's second field names the character (``let-m-divna``: ``m``, the small fish; ``v``, the
big one); ids with ``-x-`` are sound effects, not speech. Each speech file is paired with its
line; sound effects, empty files and files without a line are dropped and counted. The lines
keep the character as ``speaker``, the English line as ``translation`` and the level.

The game has no splits: whole levels are drawn (seeded) for test, then dev, until each holds
its minutes (or its number of levels), so that no room's lines are in two splits.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from xasr.data.audio import SAMPLE_RATE, load_audio, save_audio
from xasr.data.manifest import Utterance
from xasr.errors import DataError

GAME_DIR = Path("usr/share/games/fillets-ng")
_STRING = r'"((?:[^"\\]|\\.)*)"'
# a dialogId(...) followed by its dialogStr(...); Lua comments and other calls in between are
# not part of a pair (the files put nothing else there)
_PAIR = re.compile(
    rf"dialogId\(\s*{_STRING}\s*,\s*{_STRING}\s*,\s*{_STRING}\s*\)\s*dialogStr\(\s*{_STRING}\s*\)"
)
_ESCAPES = {"n": " ", "t": " ", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True)
class HeldOut:
    """How much of the corpus goes to dev and test: whole levels, drawn with ``seed``, until a
    split holds ``*_minutes`` of speech, or exactly ``*_levels`` levels when that is given."""

    dev_minutes: float = 10.0
    test_minutes: float = 10.0
    dev_levels: int | None = None
    test_levels: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Line:
    """One speech file and its line."""

    id: str
    level: str
    audio: Path
    seconds: float
    text: str
    translation: str

    @property
    def speaker(self) -> str:
        """The id's second field (``m``, ``v``, others); "" for an id without one (``help1``)."""
        fields = self.id.split("-")
        return fields[1] if len(fields) > 1 else ""


def game_root(folder: Path) -> Path:
    """The folder holding ``script/`` and ``sound/``: ``folder`` itself, or its
    ``usr/share/games/fillets-ng`` (an unpacked package)."""
    for candidate in (folder, folder / GAME_DIR, folder / "fillets-ng"):
        if (candidate / "script").is_dir() and (candidate / "sound").is_dir():
            return candidate
    raise DataError(
        f"{folder} holds no Fish Fillets NG data (script/ and sound/); install the Debian "
        f"packages fillets-ng-data and fillets-ng-data-cs and pass /{GAME_DIR}"
    )


def read_dialogs(path: Path) -> dict[str, tuple[str, str]]:
    """{id: (the English line, the line in the file's language)} of one ``dialogs_*.lua``."""
    text = path.read_text(encoding="utf-8")
    return {m[0]: (_unescape(m[2]), _unescape(m[3])) for m in _PAIR.findall(text)}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), value)


def read_lines(root: Path, lang: str, dropped: Counter) -> list[Line]:
    """Every speech file of ``lang`` paired with its line, by level; what cannot be paired is
    counted in ``dropped`` (why -> files)."""
    lines = []
    for level_dir in sorted(p for p in (root / "sound").iterdir() if p.is_dir()):
        voices = level_dir / lang
        if not voices.is_dir():
            continue
        script = root / "script" / level_dir.name / f"dialogs_{lang}.lua"
        dialogs = read_dialogs(script) if script.is_file() else {}
        for audio in sorted(voices.glob("*.ogg")):
            line = _pair(level_dir.name, audio, dialogs, dropped)
            if line is not None:
                lines.append(line)
    if not lines:
        raise DataError(
            f"{root}: no {lang} speech with a line (is fillets-ng-data-{lang} installed?)"
        )
    return lines


def _pair(level: str, audio: Path, dialogs: dict, dropped: Counter) -> Line | None:
    if "-x-" in audio.stem:
        dropped["sound effect"] += 1
        return None
    try:
        info = sf.info(str(audio)) if audio.stat().st_size else None
    except (sf.LibsndfileError, RuntimeError):
        info = None
    if info is None or info.frames == 0:
        dropped["empty or unreadable audio"] += 1
        return None
    if audio.stem not in dialogs:
        dropped["no line in the script"] += 1
        return None
    english, text = dialogs[audio.stem]
    return Line(audio.stem, level, audio, info.frames / info.samplerate, text, english)


def split_levels(lines: list[Line], held_out: HeldOut) -> dict[str, list[Line]]:
    """{train, dev, test: lines}: whole levels, drawn in a seeded order, test first."""
    by_level: dict[str, list[Line]] = {}
    for line in lines:
        by_level.setdefault(line.level, []).append(line)
    order = sorted(by_level)
    random.Random(held_out.seed).shuffle(order)
    splits: dict[str, list[Line]] = {"test": [], "dev": [], "train": []}
    wanted = {
        "test": (held_out.test_levels, held_out.test_minutes),
        "dev": (held_out.dev_levels, held_out.dev_minutes),
    }
    for split, (levels, minutes) in wanted.items():
        taken = 0
        while order and (
            taken < levels if levels is not None else _minutes(splits[split]) < minutes
        ):
            splits[split] += by_level[order.pop(0)]
            taken += 1
    for level in order:
        splits["train"] += by_level[level]
    if not splits["train"]:
        raise DataError(
            f"the held-out splits take every level ({len(by_level)}); ask for fewer dev/test "
            "minutes or levels"
        )
    return splits


def _minutes(lines: list[Line]) -> float:
    return sum(line.seconds for line in lines) / 60


def fillets_reader(
    corpus_dir: Path, lang: str, audio_dir: Path, held_out: HeldOut, dropped: Counter
) -> dict[str, Callable[[], list[Utterance]]]:
    """{split: () -> utterances} for ``xasr.data.corpora.prepare_corpus``; each split's audio is
    written as 16 kHz mono WAV under ``audio_dir/<level>/<id>.wav`` when it is read."""
    lines = read_lines(game_root(corpus_dir), lang, dropped)
    return {
        split: (lambda part=part: [_utterance(line, audio_dir) for line in part])
        for split, part in split_levels(lines, held_out).items()
        if part
    }


def _utterance(line: Line, audio_dir: Path) -> Utterance:
    path = audio_dir / line.level / f"{line.id}.wav"
    if not path.is_file():  # resampled and down-mixed once; a rerun reuses it
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.wav")
        audio = load_audio(line.audio)
        save_audio(tmp, audio)
        tmp.replace(path)
        seconds = len(audio) / SAMPLE_RATE
    else:
        seconds = sf.info(str(path)).duration
    return Utterance(
        audio_filepath=path.resolve(),
        text=line.text,
        duration=round(seconds, 3),
        id=line.id,
        extra={"speaker": line.speaker, "translation": line.translation, "level": line.level},
    )
