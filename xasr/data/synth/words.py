"""An utterance of separately spoken words with known silences between them: the ground truth
that word times (``xasr.decode.timestamps``) are measured against (tests, bench/word_times.py).

Each word is spoken alone by espeak-ng and cut to its audible samples (above 1 % of its peak),
so its start and end in the joined utterance are known to the sample; the utterance is peak
normalised as XLT-Synth's are, and a faint white noise (the recording's floor) is added.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xasr.data.audio import SAMPLE_RATE
from xasr.data.synth.plan import Voice
from xasr.data.synth.render import PEAK, _speak

DEFAULT_SPEAKER = Voice("en-us", "m3", 175, 50)


def spoken_words(
    words: Sequence[str],
    gaps: Sequence[float],
    speaker: Voice = DEFAULT_SPEAKER,
    lead: float = 0.3,
    noise: float = 1e-3,
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """``words`` spoken one by one, ``gaps[i]`` seconds of silence after word i, ``lead``
    seconds before the first. Returns the audio (samples,) float32 at 16 kHz and each word's
    (word, start, end) in seconds."""
    parts = [np.zeros(round(lead * SAMPLE_RATE), dtype=np.float32)]
    truth = []
    at = len(parts[0])
    for word, gap in zip(words, gaps, strict=True):
        audio = _speak(word, speaker)
        audible = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        audio = audio[audible[0] : audible[-1] + 1]
        truth.append((word, at / SAMPLE_RATE, (at + len(audio)) / SAMPLE_RATE))
        silence = np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)
        parts += [audio, silence]
        at += len(audio) + len(silence)
    audio = np.concatenate(parts)
    audio *= PEAK / np.abs(audio).max()
    audio += np.random.default_rng(seed).normal(0, noise, len(audio)).astype(np.float32)
    return audio.astype(np.float32), truth
