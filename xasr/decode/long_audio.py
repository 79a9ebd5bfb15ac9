"""Transcribing files of any length, with each word's start and end (numpy only, no torch: the
ONNX path uses it too).

A file no longer than the piece limit is decoded whole, as ``transcribe_paths`` does. A longer
one (an hour-long recording; anything over a Whisper encoder's 30 s) is split at its pauses
(``xasr.data.vad``: a voice-activity detector reads the file in blocks), its pieces are read
from the file by seeking, decoded in duration-sorted batches of at most ``batch_seconds`` of
padded audio, and their texts and word times stitched in order. Memory stays bounded: at any
time one block of the file (VAD) or one batch of pieces, and per file one float per 32 ms frame
and the words.

The model is reached through a ``Recognition``: ``run(audios) -> (log_probs, texts)`` per batch
(``xasr.decode.recognition.torch_recognition`` for a torch model,
``OnnxRecognizer.recognition`` for an exported graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from xasr import checks
from xasr.data.audio import SAMPLE_RATE, audio_duration, load_audio, resample
from xasr.data.vad import DETECTORS, plan_pieces, speech_probabilities
from xasr.decode.batches import duration_batches
from xasr.decode.timestamps import Word, word_times
from xasr.errors import DataError

RunBatch = Callable[[list[np.ndarray]], tuple[list[np.ndarray], list[str]]]


@dataclass(frozen=True)
class LongAudioOptions:
    """``max_seconds``: the longest piece (a longer file is split at pauses; a model's own limit,
    Whisper's 30 s, lowers it); ``vad``: the detector (``xasr.data.vad``); ``threshold``: the
    speech probability above which a frame is speech; ``batch_seconds``: padded audio per batch."""

    max_seconds: float = 20.0
    vad: str = "silero"
    threshold: float = 0.5
    batch_seconds: float = 200.0

    def __post_init__(self):
        checks.number("--max-piece-seconds", self.max_seconds, at_least=2)
        checks.one_of("--vad", self.vad, DETECTORS)
        checks.number("--vad-threshold", self.threshold, above=0, below=1)
        checks.number("--batch-seconds", self.batch_seconds, above=0)


@dataclass(frozen=True)
class Recognition:
    """What transcription needs of a model. ``run``: audios (each (samples,), 16 kHz) -> per
    audio its CTC log-probabilities (frames, vocab) and the decoder's text; ``greedy``: the
    texts are the argmax path's (word times from that path), else they are forced-aligned;
    ``max_seconds``: the longest audio the model takes (Whisper: 30)."""

    run: RunBatch
    vocab: object
    frame_seconds: float
    greedy: bool = True
    max_seconds: float = math.inf


@dataclass(frozen=True)
class Transcript:
    """One file's text, its words with times, and the pieces (start, end) it was decoded in."""

    path: str
    text: str
    duration: float
    words: list[Word] = field(default_factory=list)
    pieces: list[tuple[float, float]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "text": self.text,
            "duration": round(self.duration, 3),
            "words": [w.to_json() for w in self.words],
            "pieces": [[round(a, 3), round(b, 3)] for a, b in self.pieces],
        }


def read_piece(path: str | Path, start: float, end: float) -> np.ndarray:
    """(samples,) float32 mono 16 kHz audio of [start, end) seconds of the file, read by
    seeking: the rest of the file is not read."""
    with sf.SoundFile(str(path)) as handle:
        rate = handle.samplerate
        first = round(start * rate)
        handle.seek(min(first, handle.frames))
        audio = handle.read(max(0, round(end * rate) - first), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return resample(audio, rate, SAMPLE_RATE)


def piece_plan(
    path: str | Path, duration: float, limit: float, options: LongAudioOptions
) -> list[tuple[float, float]]:
    """The whole file as one piece when it fits ``limit`` seconds, else its pauses' pieces."""
    if duration <= limit:
        return [(0.0, duration)]
    probs = speech_probabilities(path, options.vad)
    return plan_pieces(probs, duration, limit, options.threshold)


def transcribe_files(
    recognition: Recognition,
    paths: Sequence[str | Path],
    options: LongAudioOptions | None = None,
    progress: bool = False,
) -> list[Transcript]:
    """One ``Transcript`` per file, in order: text as the recognition's decoder gives it, words
    with times (``xasr.decode.timestamps``), pieces as ``LongAudioOptions`` say. The progress
    bar counts seconds of audio decoded."""
    options = options or LongAudioOptions()
    limit = min(options.max_seconds, recognition.max_seconds)
    durations = [_duration(p) for p in paths]
    pieces = []  # (file index, start, end, whole file)
    for i, (path, duration) in enumerate(
        tqdm(list(zip(paths, durations)), disable=not progress, desc="finding pauses")
    ):
        plan = piece_plan(path, duration, limit, options)
        pieces += [(i, a, b, plan == [(0.0, duration)]) for a, b in plan]
    texts: list[str] = [""] * len(pieces)
    words: list[list[Word]] = [[] for _ in pieces]
    lengths = [b - a for _, a, b, _ in pieces]
    bar = tqdm(total=round(sum(lengths)), disable=not progress, desc="decoding", unit="s")
    for batch in duration_batches(lengths, options.batch_seconds):
        audios = [_piece_audio(paths[pieces[k][0]], *pieces[k][1:]) for k in batch]
        log_probs, batch_texts = recognition.run(audios)
        for k, lp, text in zip(batch, log_probs, batch_texts):
            texts[k] = text
            aligned = word_times(
                lp,
                recognition.vocab,
                recognition.frame_seconds,
                None if recognition.greedy else text,
            )
            words[k] = [w.shifted(pieces[k][1]) for w in aligned]
        bar.update(round(sum(lengths[k] for k in batch)))
    bar.close()
    out = []
    for i, (path, duration) in enumerate(zip(paths, durations)):
        mine = [k for k, piece in enumerate(pieces) if piece[0] == i]
        out.append(
            Transcript(
                str(path),
                " ".join(texts[k] for k in mine if texts[k]),
                duration,
                [w for k in mine for w in words[k]],
                [pieces[k][1:3] for k in mine],
            )
        )
    return out


def _duration(path) -> float:
    if not Path(path).is_file():
        raise DataError(f"audio file {path} does not exist or is not a file")
    return audio_duration(path)


def _piece_audio(path, start: float, end: float, whole: bool) -> np.ndarray:
    audio = load_audio(path) if whole else read_piece(path, start, end)
    if len(audio) == 0:  # a piece past the end of a file whose header overstates it
        return np.zeros(1, dtype=np.float32)
    return audio
