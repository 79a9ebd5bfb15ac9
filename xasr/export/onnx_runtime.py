"""Transcribing with an exported ONNX model and onnxruntime alone: no torch is imported.

``OnnxRecognizer(path)`` reads the graph's metadata (vocabulary, sample rate, blank id) written
by ``xasr.export.onnx.export_onnx``; audio is read and resampled as everywhere in xasr
(soundfile, soxr); decoding is greedy CTC in numpy, or the n-gram LM beam search
(``xasr.decode.lm.LmDecoder``, pyctcdecode) when an LM is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xasr.data.audio import check_audio_files, load_audio
from xasr.data.vocab import vocab_from_json
from xasr.decode.batches import duration_batches
from xasr.decode.long_audio import LongAudioOptions, Recognition, Transcript
from xasr.decode.long_audio import transcribe_files as transcribe_long
from xasr.decode.options import DecodingOptions
from xasr.errors import DataError, XasrError

MAX_BATCH_SECONDS = 200.0  # padded audio per run, as transcribe_paths batches


class OnnxRecognizer:
    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise XasrError("onnxruntime is not installed: pip install onnxruntime") from None
        path = Path(path)
        if not path.is_file():
            raise XasrError(f"--onnx {path} does not exist; `xasr export --onnx` makes one")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise XasrError(f"{path} is not a readable ONNX model ({err})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "vocab" not in meta:
            raise XasrError(f"{path} has no xasr metadata; export it with `xasr export --onnx`")
        self.vocab = vocab_from_json(json.loads(meta["vocab"]), str(path))
        self.blank_id = int(meta["blank_id"])
        self.sample_rate = int(meta["sample_rate"])
        self.max_seconds = float(meta.get("max_seconds", "inf"))  # Whisper: 30
        self.frame_seconds = float(meta.get("frame_seconds", "0.04"))  # word times

    def log_probs(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """One padded run: per utterance its (frames, vocab) log-probabilities."""
        lengths = np.array([len(a) for a in audios], dtype=np.int64)
        batch = np.zeros((len(audios), int(lengths.max())), dtype=np.float32)
        for i, audio in enumerate(audios):
            batch[i, : len(audio)] = audio
        log_probs, frames = self.session.run(None, {"audio": batch, "lengths": lengths})
        return [log_probs[i, :n] for i, n in enumerate(frames.tolist())]

    def recognition(self, decoder=None) -> Recognition:
        """This graph as a ``Recognition`` (``xasr.decode.long_audio``: long files in pieces,
        word times); ``decoder``: an ``LmDecoder`` (or None: greedy)."""

        def run(audios: list[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
            outputs = self.log_probs(audios)
            texts = decoder.decode_arrays(outputs) if decoder else [self.greedy(o) for o in outputs]
            return outputs, texts

        return Recognition(
            run,
            self.vocab,
            self.frame_seconds,
            greedy=decoder is None,
            max_seconds=self.max_seconds,
        )

    def greedy(self, log_probs: np.ndarray) -> str:
        best = log_probs.argmax(axis=-1)
        keep = best != np.concatenate([[-1], best[:-1]])
        ids = [int(i) for i in best[keep] if i != self.blank_id]
        return self.vocab.decode(ids)

    def transcribe(self, paths: list, decoder=None) -> list[str]:
        """Texts of audio files, in order; ``decoder``: an ``LmDecoder`` (or None: greedy)."""
        audios = [load_audio(p, self.sample_rate) for p in paths]
        texts = [""] * len(audios)
        seconds = [len(a) / self.sample_rate for a in audios]
        for path, s in zip(paths, seconds):
            if s > self.max_seconds:
                raise DataError(
                    f"{path}: {s:.1f} s; this model takes at most {self.max_seconds:g} s a "
                    "file: split longer audio"
                )
        for batch in duration_batches(seconds, MAX_BATCH_SECONDS):
            outputs = self.log_probs([audios[i] for i in batch])
            decoded = (
                decoder.decode_arrays(outputs) if decoder else [self.greedy(o) for o in outputs]
            )
            for i, text in zip(batch, decoded):
                texts[i] = text
        return texts


def transcribe_onnx(
    path: str | Path,
    files: list,
    decoding: DecodingOptions | None = None,
    device: str | None = None,
) -> list[str]:
    """The text of each audio file, in order, by an exported ONNX model (``xasr export
    --onnx``), with onnxruntime on the CPU (``device``: None or "cpu"): greedy CTC, or the
    n-gram LM beam search of ``decoding.lm``. Nothing here imports torch."""
    return [t.text for t in onnx_transcripts(path, files, decoding, device)]


def onnx_transcripts(
    path: str | Path,
    files: list,
    decoding: DecodingOptions | None = None,
    device: str | None = None,
    pieces: LongAudioOptions | None = None,
    progress: bool = False,
) -> list[Transcript]:
    """``transcribe_onnx`` with each file's words and times; a file longer than the piece limit
    (or the graph's own) is split at pauses and stitched (``xasr.decode.long_audio``)."""
    check_audio_files(files)
    if device not in (None, "cpu"):
        raise XasrError("--onnx runs on the CPU (onnxruntime's CPU provider); drop --device")
    decoding = decoding or DecodingOptions()
    if decoding.decoder in ("attention", "joint"):
        raise XasrError("--onnx models are CTC models: --decoder default or ctc")
    recognizer = OnnxRecognizer(path)
    recognition = recognizer.recognition(decoding.ctc_strategy(recognizer.vocab))
    return transcribe_long(recognition, list(files), pieces, progress)
