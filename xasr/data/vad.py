"""Where a long recording pauses: per-frame speech probabilities, read from the file in blocks
(never the whole recording in memory), and the pieces to decode, cut in the pauses.

Two detectors, both giving one probability per 32 ms frame (512 samples at 16 kHz):

* ``silero``: Silero VAD's own weights (the ``silero-vad`` package ships them; nothing is
  downloaded), its sequence ONNX model run by onnxruntime. The package's own runner is not
  imported because its ``__init__`` imports torch, which ``xasr transcribe --onnx`` must not:
  the loop below feeds the model the same blocks (each frame with the previous frame's last 64
  samples as context, the LSTM state carried across blocks).
* ``energy``: the frame's log-energy against the recording's noise floor (its 10th percentile
  of frame energies): ``sigmoid((dB - floor - margin) / 2)``.

``plan_pieces`` turns probabilities into pieces of at most ``max_seconds``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from xasr.data.audio import SAMPLE_RATE
from xasr.errors import DataError, XasrError

FRAME = 512  # samples per VAD frame at 16 kHz: 32 ms
CONTEXT = 64  # silero: samples of the previous frame each frame is given
FRAME_SECONDS = FRAME / SAMPLE_RATE
BLOCK_FRAMES = 512  # frames per read and per ONNX call (16.4 s)
DETECTORS = ("silero", "energy")
SILERO_MODEL = "silero_vad_16k_sequence.onnx"


def audio_blocks(path: str | Path, block_samples: int):
    """Mono float32 16 kHz blocks of ``block_samples`` (the last may be shorter) read from the
    file in turn, resampled as a stream (soxr) where the file has another rate."""
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"cannot decode audio file {path} ({err}); re-encode it as WAV or FLAC")
    with handle:
        rate = handle.samplerate
        stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        pending = np.zeros(0, dtype=np.float32)
        step = max(1, round(block_samples * rate / SAMPLE_RATE))
        while True:
            chunk = handle.read(step, dtype="float32", always_2d=True)
            last = len(chunk) < step
            mono = chunk.mean(axis=1) if chunk.shape[1] > 1 else chunk[:, 0]
            if rate != SAMPLE_RATE:
                mono = stream.resample_chunk(np.ascontiguousarray(mono), last=last)
            pending = np.concatenate([pending, mono.astype(np.float32)])
            while len(pending) >= block_samples:
                yield pending[:block_samples]
                pending = pending[block_samples:]
            if last:
                break
        if len(pending):
            yield pending


def silero_model_path() -> Path:
    """The sequence ONNX model inside the installed silero-vad package (not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise XasrError(
            "silero-vad is not installed: pip install 'xasr[vad]' (or silero-vad), or split "
            "long audio with --vad energy"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SILERO_MODEL
    if not path.is_file():
        raise XasrError(f"silero-vad has no {SILERO_MODEL}: pip install 'silero-vad>=6.2'")
    return path


class SileroVad:
    """probabilities(blocks) -> (frames,) speech probability of each 32 ms frame."""

    def __init__(self):
        try:
            import onnxruntime
        except ImportError:
            raise XasrError(
                "the silero VAD runs with onnxruntime: pip install onnxruntime, or --vad energy"
            ) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(silero_model_path()), options, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, blocks) -> np.ndarray:
        hidden = np.zeros((1, 1, 128), dtype=np.float32)
        cell = np.zeros((1, 1, 128), dtype=np.float32)
        context = np.zeros(CONTEXT, dtype=np.float32)
        out = []
        for block in blocks:
            frames = np.zeros((-(-len(block) // FRAME), FRAME), dtype=np.float32)
            frames.reshape(-1)[: len(block)] = block
            contexts = np.concatenate([context[None], frames[:-1, -CONTEXT:]])
            context = frames[-1, -CONTEXT:].copy()
            probs, hidden, cell = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, frames], axis=1), "h": hidden, "c": cell},
            )
            out.append(probs.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def energy_probabilities(blocks, margin_db: float = 12.0) -> np.ndarray:
    """(frames,) a speech probability of each 32 ms frame from its log-energy: ``margin_db``
    above the recording's noise floor (10th percentile) is 0.5."""
    energies = []
    for block in blocks:
        frames = np.zeros((-(-len(block) // FRAME), FRAME), dtype=np.float32)
        frames.reshape(-1)[: len(block)] = block
        energies.append(10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10))
    if not energies:
        return np.zeros(0, dtype=np.float32)
    db = np.concatenate(energies)
    floor = np.percentile(db, 10)
    return (1 / (1 + np.exp(-(db - floor - margin_db) / 2))).astype(np.float32)


def speech_probabilities(path: str | Path, detector: str = "silero") -> np.ndarray:
    """(frames,) speech probability of each 32 ms frame of the file, read in blocks."""
    if detector not in DETECTORS:
        raise XasrError(f"--vad must be one of {', '.join(DETECTORS)}, got {detector!r}")
    blocks = audio_blocks(path, FRAME * BLOCK_FRAMES)
    if detector == "energy":
        return energy_probabilities(blocks)
    return SileroVad().probabilities(blocks)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges where ``mask`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _split_long(probs: np.ndarray, start: int, end: int, most: int) -> list[tuple[int, int]]:
    """[start, end) cut into ranges of at most ``most`` frames, each cut at the least
    speech-like frame of the second half of the allowed length."""
    out = []
    while end - start > most:
        low = start + most // 2
        cut = low + int(np.argmin(probs[low : start + most]))
        out.append((start, cut))
        start = cut
    return out + [(start, end)]


def plan_pieces(
    probs: np.ndarray,
    total_seconds: float,
    max_seconds: float = 20.0,
    threshold: float = 0.5,
    min_pause: float = 0.3,
    pad: float = 0.2,
    merge_pause: float = 1.0,
) -> list[tuple[float, float]]:
    """Pieces (start, end) in seconds to decode, from probs (frames,) of 32 ms frames.

    Speech is where a frame's probability reaches ``threshold``; pauses shorter than
    ``min_pause`` do not count. Each stretch of speech is widened by ``pad`` on both sides
    (at most half the pause to its neighbour), consecutive stretches closer than
    ``merge_pause`` are joined while the piece stays within ``max_seconds``, and a stretch
    longer than that is cut at its least speech-like frames. What lies between pieces is
    silence and is not decoded."""
    most = max(1, int((max_seconds - 2 * pad) / FRAME_SECONDS))  # room for the padding
    speech = probs >= threshold
    for a, b in _runs(~speech):  # short pauses inside speech count as speech
        if a > 0 and b < len(speech) and (b - a) * FRAME_SECONDS < min_pause:
            speech[a:b] = True
    stretches = [piece for a, b in _runs(speech) for piece in _split_long(probs, a, b, most)]
    times = [(a * FRAME_SECONDS, min(b * FRAME_SECONDS, total_seconds)) for a, b in stretches]
    padded = []
    for i, (start, end) in enumerate(times):
        before = start - times[i - 1][1] if i else start * 2
        after = times[i + 1][0] - end if i + 1 < len(times) else (total_seconds - end) * 2
        padded.append((start - min(pad, before / 2), end + min(pad, after / 2)))
    pieces: list[tuple[float, float]] = []
    for start, end in padded:
        if pieces and start - pieces[-1][1] < merge_pause and end - pieces[-1][0] <= max_seconds:
            pieces[-1] = (pieces[-1][0], end)
        else:
            pieces.append((start, end))
    return pieces
