"""Rendering one utterance: espeak-ng speaks it, silence is trimmed, the level normalised, and
recording conditions applied (babble, reverberation, coloured noise, telephone band, gain)."""

from __future__ import annotations

import io
import logging
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from audiomentations import AddColorNoise, BandPassFilter, Gain
from scipy.signal import fftconvolve

from xasr.data.audio import SAMPLE_RATE, save_audio
from xasr.data.synth.plan import Conditions, Job, Voice
from xasr.errors import DataError

log = logging.getLogger(__name__)

PEAK = 0.9

# Files that are pictures rather than prose, at any level of the fortune tree.


def render(job: Job) -> float:
    """Speak, condition and write one utterance; returns its duration in seconds."""
    audio = _peak_normalize(
        _trim_silence(_speak(job.ssml or job.text, job.speaker, job.ssml is not None))
    )
    audio = _apply_conditions(audio, job.conditions, job.aug_seed)
    Path(job.path).parent.mkdir(parents=True, exist_ok=True)
    save_audio(job.path, audio)
    return len(audio) / SAMPLE_RATE


def _speak(text: str, speaker: Voice, markup: bool = False) -> np.ndarray:
    """espeak-ng -> float32 mono at SAMPLE_RATE, shape (samples,); ``markup``: ``text`` is
    SSML (a code-switched sentence)."""
    command = ["espeak-ng", "-b", "1", "-v", f"{speaker.voice}+{speaker.variant}"]
    command += ["-s", str(speaker.speed), "-p", str(speaker.pitch), "--stdout"]
    command += ["-m"] if markup else []
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


def _apply_conditions(audio: np.ndarray, conditions: Conditions, seed: int) -> np.ndarray:
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
