"""Audio I/O: soundfile to read, soxr to resample, mean to down-mix. Always float32 mono."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from xasr.errors import DataError

SAMPLE_RATE = 16_000


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, where: str = "") -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Returns
    -------
    audio : np.ndarray, shape = (samples,), dtype float32

    Other rates are resampled (soxr, high quality) and several channels averaged; a missing,
    unreadable or empty file raises ``DataError`` naming the file (and ``where``, the manifest line).
    """
    path = Path(path)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise DataError(f"{prefix}audio file {path} does not exist; fix the path in the manifest")
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise DataError(
            f"{prefix}cannot decode audio file {path} ({err}); re-encode it as WAV or FLAC"
        ) from None
    if audio.shape[0] == 0:
        raise DataError(
            f"{prefix}audio file {path} is empty (0 samples); remove it from the manifest"
        )
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return resample(audio, file_rate, sample_rate)


def check_audio_files(paths) -> None:
    """Raise ``DataError`` for the first of ``paths`` that is not a file (before any decoding)."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"audio file {path} does not exist or is not a file")


def resample(audio: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (soxr, high quality); unchanged if already there."""
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"cannot read audio header of {path} ({err})") from None
    return info.frames / info.samplerate


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV (or FLAC by suffix)."""
    sf.write(str(path), audio, sample_rate, subtype="PCM_16")
