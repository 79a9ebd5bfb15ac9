"""A sherpa-onnx model directory (``xasr export --format sherpa-onnx``): model.onnx (and, with
``--quantize int8``, model.int8.onnx) and tokens.txt, which sherpa-onnx's offline recognizer
loads as its omnilingual-ASR CTC type::

    recognizer = sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(
        model="DIR/model.onnx", tokens="DIR/tokens.txt")

Why that type: it is the one offline CTC type of sherpa-onnx whose graph takes the waveform
(sherpa-onnx/csrc/offline-omnilingual-asr-ctc-model.cc), so xasr's own log-mel runs inside the
graph. Every other CTC type (NeMo, wenet, zipformer, tdnn, ...) takes kaldi-native-fbank
features that sherpa-onnx computes with options the type fixes. Measured on en-small and 500
XLT-Synth English test utterances (bench/sherpa_agreement.py): through the NeMo CTC type
(fbank in, xasr's normalisation in the graph) 30 transcripts equalled xasr's and the CER rose
from 12.95 to 19.90 %; through this one, 364 and 13.11 %.

What sherpa-onnx does before the graph, and how the graph meets it:

* it normalises each utterance's samples to zero mean and unit variance (``sherpa_normalize``);
  the graph scales them to RMS ``LEVEL`` (a typical level: XLT-Synth's median is 0.08).
  xasr's log-mel is normalised per utterance, so the gain matters only through its log floor;
  the removed mean (DC offset) matters more: it leaks into the lowest mel bins of quiet frames.
  It cannot be restored from normalised samples, and it is what is left of the difference
  (xasr itself on the mean-removed audio: 378 of the 500 transcripts unchanged);
* it takes the graph's input as ``x`` (1, samples) and its first output as (1, frames, vocab)
  scores, decoded greedily with blank id 0;
* its timestamps assume 20 ms frames: the graph repeats each frame ``frame_seconds / 0.02``
  times (xasr's Conformer: 2), which leaves greedy CTC's text unchanged and its times right.

tokens.txt is the vocabulary, one ``symbol id`` a line, with xasr's space ``|`` written as
sentencepiece's ``▁``, which sherpa-onnx turns into a space.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xasr.data.features import HOP_LENGTH
from xasr.data.vocab import SPACE
from xasr.errors import XasrError
from xasr.export.onnx import (
    CHECK_SECONDS,
    OPSET,
    TOLERANCE,
    _check_batch,
    check_opset,
    export_proto,
    file_opset,
    frame_seconds,
    graph_metadata,
    load_for_export,
)
from xasr.export.quantize import check_quantize, quantize_int8_checked
from xasr.io import output_dir, write_files

MODEL_TYPE = "omnilingual_asr_ctc"
LEVEL = 0.1  # RMS the graph gives sherpa-onnx's unit-variance samples
SHERPA_FRAME_SECONDS = 0.02  # the frame shift sherpa-onnx's timestamps assume for this type
MODEL_FILE, INT8_FILE, TOKENS_FILE = "model.onnx", "model.int8.onnx", "tokens.txt"


def sherpa_normalize(audio: np.ndarray) -> np.ndarray:
    """An utterance's samples as sherpa-onnx hands them to this type's graph: zero mean, unit
    variance (``OfflineOmnilingualAsrCtcModel::NormalizeFeatures``)."""
    audio = np.asarray(audio, dtype=np.float32)
    mean = audio.mean()
    var = max(float((audio * audio).mean() - mean * mean), 0.0)
    return ((audio - mean) / np.sqrt(var + 1e-5)).astype(np.float32)


def sherpa_tokens(vocab, where: str = "the vocabulary") -> str:
    """tokens.txt: ``symbol id`` per line, xasr's space ``|`` as ``▁``. ``XasrError`` for a
    token sherpa-onnx cannot read back (one with white space, or two alike)."""
    symbols = ["▁" if t == SPACE and vocab.kind == "char" else t for t in vocab.tokens]
    for token in symbols:
        if any(ch.isspace() for ch in token):
            raise XasrError(f"{where}: token {token!r} has white space; tokens.txt cannot hold it")
    if len(set(symbols)) != len(symbols):
        raise XasrError(f"{where}: has both '|' and '▁' tokens; sherpa-onnx reads both as space")
    return "".join(f"{s} {i}\n" for i, s in enumerate(symbols))


class _SherpaGraph(nn.Module):
    """A CTC model behind sherpa-onnx's omnilingual-CTC interface.

    forward(x): x : Tensor, shape = (1, samples), normalised by sherpa-onnx
    returns log_probs : Tensor, shape = (1, frames * repeat, vocab)
    """

    def __init__(self, model: nn.Module, repeat: int, level: float = LEVEL):
        super().__init__()
        self.model, self.repeat, self.level = model, repeat, level

    def forward(self, x: Tensor) -> Tensor:
        lengths = torch.ones_like(x[:, 0], dtype=torch.int64) * x.shape[1]
        log_probs, _ = self.model(x * self.level, lengths)
        batch, frames, vocab = log_probs.shape
        if self.repeat == 1:
            return log_probs
        repeated = log_probs.unsqueeze(2).expand(batch, frames, self.repeat, vocab)
        return repeated.reshape(batch, frames * self.repeat, vocab)


def frame_repeat(seconds: float) -> int:
    """How often each output frame is repeated so frames last ``SHERPA_FRAME_SECONDS`` (1
    where ``seconds`` is no whole multiple of it: text right, timestamps scaled)."""
    repeat = round(seconds / SHERPA_FRAME_SECONDS)
    return repeat if repeat >= 1 and abs(repeat * SHERPA_FRAME_SECONDS - seconds) < 1e-9 else 1


def export_sherpa(
    model_dir: str | Path,
    out: str | Path,
    opset: int = OPSET,
    lang: str | None = None,
    tolerance: float = TOLERANCE,
    quantize: str | None = None,
) -> dict:
    """Write ``model_dir`` as a sherpa-onnx model directory ``out``: model.onnx (checked
    against torch on sherpa-normalised utterances, refused above ``tolerance``), with
    ``quantize="int8"`` model.int8.onnx too (quantized from it and checked against it), and
    tokens.txt; all or none. Returns a report: path, model, tokens, bytes, opset,
    max_abs_diff, model_type (and int8: its check, model and bytes)."""
    import onnx

    if not tolerance > 0:
        raise XasrError(f"--tolerance must be > 0, got {tolerance}")
    check_opset(opset)
    check_quantize(quantize)
    out = output_dir(out, "--onnx")
    model, cfg, vocab, directory = load_for_export(model_dir, lang)
    tokens = sherpa_tokens(vocab, str(model_dir))
    repeat = frame_repeat(frame_seconds(model))
    graph = _SherpaGraph(model, repeat).eval()
    audio, _ = _check_batch((3.1,))
    proto = export_proto(
        graph,
        (audio,),
        opset,
        input_names=["x"],
        output_names=["log_probs"],
        # one utterance a run, as sherpa-onnx runs this type
        dynamic_shapes={"x": {1: torch.export.Dim("samples", min=HOP_LENGTH * 8)}},
    )
    metadata = graph_metadata(model, cfg, vocab, directory, lang) | {
        "frame_seconds": str(frame_seconds(model) / repeat),
        "frame_repeat": str(repeat),
        "input_level": str(LEVEL),
        "sherpa_onnx_model_type": MODEL_TYPE,
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    if hasattr(model.frontend, "per_utterance"):
        model.frontend.per_utterance = None  # checked against the model as torch runs it here
    model_path, int8_path = out / MODEL_FILE, out / INT8_FILE
    checked = {}

    def save_and_check(tmp: Path) -> None:  # a graph that fails the check is not kept
        onnx.save(proto, str(tmp))
        checked["diff"] = check_sherpa_graph(tmp, graph, name=model_path)
        if checked["diff"] > tolerance:
            raise XasrError(
                f"{model_path}: the graph's log-probabilities differ from torch's by "
                f"{checked['diff']:.2e}, above the tolerance {tolerance:g}; not written "
                "(--tolerance accepts more)"
            )
        checked["float32"] = tmp

    def quantize_and_check(tmp: Path) -> None:  # from the float32 graph just checked
        shutil.copyfile(checked["float32"], tmp)
        checked["int8"] = quantize_int8_checked(tmp, sherpa_feeds(), name=int8_path)

    writers = {model_path: save_and_check}
    if quantize == "int8":
        writers[int8_path] = quantize_and_check
    write_files(writers | {out / TOKENS_FILE: lambda tmp: tmp.write_text(tokens, "utf-8")})
    report = {
        "path": str(out),
        "model": str(model_path),
        "tokens": str(out / TOKENS_FILE),
        "bytes": model_path.stat().st_size,
        "opset": file_opset(onnx.load(str(model_path), load_external_data=False)),
        "max_abs_diff": checked["diff"],
        "model_type": MODEL_TYPE,
    }
    if quantize:
        int8 = checked["int8"] | {"model": str(int8_path), "bytes": int8_path.stat().st_size}
        report |= {"quantize": quantize, "int8": int8}
    return report


def sherpa_feeds() -> list[dict]:
    """The check utterances (``CHECK_SECONDS``), one at a time as sherpa-onnx runs them,
    normalised as it does: the graph's inputs."""
    feeds = []
    for index, seconds in enumerate(CHECK_SECONDS):
        audio, lengths = _check_batch(seconds, seed=index + 1)
        for row, n in zip(audio.numpy(), lengths.tolist()):
            feeds.append({"x": sherpa_normalize(row[:n])[None]})
    return feeds


def check_sherpa_graph(path: Path, graph: nn.Module, name: Path | None = None) -> float:
    """Max |log_probs difference| between onnxruntime and torch on ``sherpa_feeds``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 0.0
        for feed in sherpa_feeds():
            with torch.no_grad():
                expected = graph(torch.from_numpy(feed["x"])).numpy()
            (got,) = session.run(None, feed)
            if got.shape != expected.shape:
                raise XasrError(f"{name or path}: output {got.shape}, torch's {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    except XasrError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise XasrError(f"{name or path}: the graph fails in onnxruntime ({first})") from None
    return worst


def sherpa_recognizer(directory: str | Path, int8: bool = False, threads: int = 1):
    """sherpa-onnx's own recognizer for an exported directory (needs ``pip install
    sherpa-onnx``)."""
    try:
        import sherpa_onnx
    except ImportError:
        raise XasrError("sherpa-onnx is not installed: pip install sherpa-onnx") from None
    directory = Path(directory)
    model = directory / (INT8_FILE if int8 else MODEL_FILE)
    if not model.is_file():
        raise XasrError(f"{model} does not exist; `xasr export --format sherpa-onnx` makes it")
    return sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(
        model=str(model), tokens=str(directory / TOKENS_FILE), num_threads=threads
    )


def sherpa_transcribe(recognizer, audios: list[np.ndarray], sample_rate: int) -> list[str]:
    """sherpa-onnx's transcripts of waveforms (float32 in [-1, 1]), one stream each."""
    texts = []
    for audio in audios:
        stream = recognizer.create_stream()
        stream.accept_waveform(sample_rate, np.asarray(audio, dtype=np.float32))
        recognizer.decode_stream(stream)
        texts.append(stream.result.text.strip())
    return texts
