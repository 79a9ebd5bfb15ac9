"""`xasr export --onnx`: a CTC model directory as one ONNX graph, checked against torch.

The graph is the whole model: raw 16 kHz audio and lengths in, log-probabilities and frame
lengths out, with dynamic batch and time axes::

    audio     float32 (batch, samples)      padded with zeros
    lengths   int64   (batch,)              samples of each utterance
    log_probs float32 (batch, frames, vocab)
    frames    int64   (batch,)              valid frames of each utterance

The vocabulary, the model config and the front end's facts (sample rate, seconds per output
frame, blank id) travel as ONNX metadata, so ``xasr.export.onnx_runtime`` transcribes with
onnxruntime alone. Exported with torch's dynamo exporter (``torch.onnx.export(dynamo=True)``,
onnxscript underneath): its complex-number support covers the STFT and the rotary positions.
The front end runs batched (``per_utterance=False``): an exported graph's shapes cannot depend
on each utterance's length.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xasr.data.audio import SAMPLE_RATE
from xasr.data.features import HOP_LENGTH
from xasr.errors import XasrError
from xasr.io import output_file, write_file
from xasr.models.build import load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks, apply_mask
from xasr.version import __version__

log = logging.getLogger(__name__)

OPSET = 18
# max |log-prob difference| to torch over valid frames. fp32 sums in another order: the
# difference grows with length (en-small, noise-like audio: 2.9e-5 at 4.7 s, 9.4e-5 at 15 s,
# 1.1e-4 at 30 s), so the check keeps to utterances of up to 12 s. It differs between models
# too: a trained Whisper tiny.en encoder differs by up to 1.4e-3 (``tolerance``), its greedy
# transcripts identical to torch's.
TOLERANCE = 1e-4
# the check utterances, seconds: one alone, a padded batch of a size and lengths (not whole
# hops) other than the export's, and a long one
CHECK_SECONDS = ((1.3,), (0.4037, 2.2, 3.1, 7.9001, 5.55), (12.3457,))
EXPORT_SECONDS = (0.4, 2.2, 3.1)


def check_exportable(model_dir, cfg) -> None:
    """Raise ``XasrError`` (one line) for a model the export cannot write as one graph."""
    if cfg.has_decoder:  # a capability (xasr.config.FamilyConfig), not a list of names
        raise XasrError(
            f"{model_dir} is an {cfg.architecture} model; `xasr export` writes CTC models (an "
            "attention decoder's search is not one graph)"
        )
    hf = getattr(cfg, "hf_config", {})
    if hf.get("position_embeddings_type") == "relative":
        # measured: the graph exports, then fails in onnxruntime on other lengths
        raise XasrError(
            f"{model_dir}: a wav2vec2-conformer with relative position embeddings is not "
            "exportable yet (its position table is cut by the export's input length); "
            "rotary ones are"
        )


class _Graph(nn.Module):
    """The model as the graph sees it: two tensors in, two out (no ``augment`` argument)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(audio, lengths)


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    opset: int = OPSET,
    lang: str | None = None,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export ``model_dir`` to ``out`` (written atomically), check it against torch on
    utterances of several lengths (refused above ``tolerance``, the largest log-probability
    difference), and return a report: path, bytes, opset, max_abs_diff.

    A model with language masks (sparse sharing) is exported as ``lang``'s sub-network: its
    masked weights multiplied by the mask, one graph per language."""
    try:
        import onnx
    except ImportError:
        raise XasrError("xasr export needs onnx and onnxscript: pip install -e '.[onnx]'") from None
    if not tolerance > 0:
        raise XasrError(f"--tolerance must be > 0, got {tolerance}")
    out = output_file(out, "--onnx")
    directory = resolve_model(model_dir)
    model, cfg, vocab = load_model_dir(directory)
    masks = LanguageMasks.load(directory)
    if masks is not None and lang not in masks.langs:
        raise XasrError(
            f"{model_dir} has language masks ({', '.join(masks.langs)}): export one "
            f"language's sub-network with --lang{f', not {lang}' if lang else ''}"
        )
    if masks is None and lang is not None:
        raise XasrError(f"--lang {lang}: {model_dir} has no language masks (one graph serves all)")
    if masks is not None:
        apply_mask(model, masks.of(lang))
    check_exportable(model_dir, cfg)
    if hasattr(model.frontend, "per_utterance"):  # xasr's Conformer: batched, for the graph
        model.frontend.per_utterance = False
    graph = _Graph(model).eval()
    audio, lengths = _check_batch(EXPORT_SECONDS)
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=HOP_LENGTH * 8)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (audio, lengths),
            dynamo=True,
            opset_version=opset,
            input_names=["audio", "lengths"],
            output_names=["log_probs", "frames"],
            dynamic_shapes={"audio": {0: batch, 1: samples}, "lengths": {0: batch}},
            verbose=False,
        )
    proto = program.model_proto
    metadata = {
        "xasr_version": __version__,
        "architecture": cfg.architecture,
        "model_config": json.dumps(asdict(cfg)),
        "vocab": json.dumps(vocab.to_json(), ensure_ascii=False),
        "blank_id": str(vocab.blank_id),
        "sample_rate": str(SAMPLE_RATE),
        "frame_seconds": str(model.features.hop * model.frontend.stride / SAMPLE_RATE),
        "source_model": directory.name,
        # the longest utterance the graph takes (Whisper: its position table's 30 s)
        **({"max_seconds": str(s)} if (s := getattr(model.frontend, "max_seconds", None)) else {}),
        **({"lang": lang} if masks is not None else {}),
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    if hasattr(model.frontend, "per_utterance"):
        model.frontend.per_utterance = None  # checked against the model as torch runs it here
    checked = {}

    def save_and_check(tmp: Path) -> None:  # a graph that fails the check is not kept
        onnx.save(proto, str(tmp))
        checked["diff"] = check_against_torch(tmp, model, name=out)
        if checked["diff"] > tolerance:
            raise XasrError(
                f"{out}: the ONNX graph's log-probabilities differ from torch's by "
                f"{checked['diff']:.2e}, above the tolerance {tolerance:g}; not written. Float "
                "rounding differs between models (a trained Whisper encoder: 1.4e-3): "
                "--tolerance accepts more; a difference near 1 is an export bug, please report it"
            )

    write_file(out, save_and_check)
    diff = checked["diff"]
    return {"path": str(out), "bytes": out.stat().st_size, "opset": opset, "max_abs_diff": diff}


def _check_batch(seconds: tuple[float, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A padded batch of noise-like audio with these durations."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * SAMPLE_RATE) for s in seconds])
    audio = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=generator)
    audio *= torch.arange(audio.shape[1])[None, :] < lengths[:, None]
    return audio, lengths


def check_against_torch(path: Path, model: nn.Module, name: Path | None = None) -> float:
    """Max |log_probs difference| between onnxruntime and torch over valid frames, for a
    single utterance and a padded batch (``CHECK_SECONDS``). ``name``: the file the errors
    name (default ``path``)."""
    name = name or path
    import onnxruntime

    def failed(err: Exception, doing: str) -> XasrError:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        return XasrError(
            f"{name}: the exported graph fails in onnxruntime {doing} ({first}); not written"
        )

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        raise failed(err, "when loaded") from None
    worst = 0.0
    for index, seconds in enumerate(CHECK_SECONDS):
        audio, lengths = _check_batch(seconds, seed=index + 1)
        with torch.no_grad():
            expected, frames = model(audio, lengths)
        try:
            got, got_frames = session.run(
                None, {"audio": audio.numpy(), "lengths": lengths.numpy()}
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            raise failed(err, f"on {len(seconds)} utterance(s) of {max(seconds):.1f} s") from None
        if not np.array_equal(got_frames, frames.numpy()):
            raise XasrError(f"{name}: frame lengths {got_frames} differ from torch's {frames}")
        for i, n in enumerate(frames.tolist()):
            worst = max(worst, float(np.abs(got[i, :n] - expected[i, :n].numpy()).max()))
    return worst
