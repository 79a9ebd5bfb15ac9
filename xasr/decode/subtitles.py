"""Subtitles from timed words: SubRip (.srt) and WebVTT (.vtt).

Words are grouped into cues of at most ``max_chars`` characters (42: the common broadcast
line length) and ``max_seconds`` seconds, and a pause of ``max_pause`` seconds or more starts a
new cue. Times are written to the millisecond, ``HH:MM:SS,mmm`` in SRT and ``HH:MM:SS.mmm`` in
WebVTT; each cue ends no later than the next one starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xasr import checks
from xasr.decode.timestamps import Word
from xasr.io import output_dir, output_file, write_text


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def cues(
    words: Sequence[Word],
    max_chars: int = 42,
    max_seconds: float = 6.0,
    max_pause: float = 1.0,
) -> list[Cue]:
    """Words (in time order) -> subtitle cues, grouped as the module docstring says."""
    checks.integer("max_chars", max_chars, at_least=1)
    checks.number("max_seconds", max_seconds, above=0)
    checks.number("max_pause", max_pause, above=0)
    groups: list[list[Word]] = []
    for word in words:
        if groups:
            last = groups[-1]
            chars = sum(len(w.text) + 1 for w in last) + len(word.text)
            if (
                chars <= max_chars
                and word.end - last[0].start <= max_seconds
                and word.start - last[-1].end < max_pause
            ):
                last.append(word)
                continue
        groups.append([word])
    out = [Cue(g[0].start, g[-1].end, " ".join(w.text for w in g)) for g in groups]
    for i in range(len(out) - 1):  # a cue never overlaps the next
        if out[i].end > out[i + 1].start:
            out[i] = Cue(out[i].start, out[i + 1].start, out[i].text)
    return out


def timestamp(seconds: float, decimal: str = ",") -> str:
    """Seconds -> ``HH:MM:SS,mmm`` (``decimal="."`` for WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(cue_list: Sequence[Cue]) -> str:
    """SubRip text: numbered blocks ``n``, ``start --> end``, text, blank line."""
    blocks = [
        f"{i}\n{timestamp(c.start)} --> {timestamp(c.end)}\n{c.text}\n"
        for i, c in enumerate(cue_list, start=1)
    ]
    return "\n".join(blocks)


def vtt(cue_list: Sequence[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then ``start --> end`` and text per cue."""
    blocks = [
        f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{c.text}\n" for c in cue_list
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def write_transcripts(
    transcripts: Sequence,
    json_path: str | Path | None,
    srt_dir: str | Path | None,
    vtt_dir: str | Path | None,
) -> None:
    """``xasr transcribe``'s files: every transcript (``xasr.decode.long_audio.Transcript``) in
    one JSON file, and per audio file ``NAME.srt`` / ``NAME.vtt`` in the folders asked for."""
    if json_path:
        payload = [t.to_json() for t in transcripts]
        write_text(
            output_file(json_path, "--json"), json.dumps(payload, indent=1, ensure_ascii=False)
        )
    for folder, render, suffix in ((srt_dir, srt, ".srt"), (vtt_dir, vtt, ".vtt")):
        if not folder:
            continue
        folder = output_dir(folder)
        for t in transcripts:
            write_text(folder / (Path(t.path).stem + suffix), render(cues(t.words)))
