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
from xasr.export.quantize import check_quantize, quantize_int8_checked
from xasr.io import output_file, write_file
from xasr.models.build import load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks, apply_mask
from xasr.version import __version__

log = logging.getLogger(__name__)

OPSET = 18
# torch's dynamo exporter writes opset 18 and above: asked for less, it wrote an opset-18 file
# anyway (measured with torch 2.13, opsets 5, 13 and 17). 19 to 22 are written and pass the
# check; 23 and 24 are written but fail in onnxruntime 1.32 (its Attention kernel and xasr's
# masks), which the check reports.
MIN_OPSET = 18
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


def check_opset(opset) -> int:
    """``opset`` if the exporter can write it, else ``XasrError`` (one line): at least
    ``MIN_OPSET``, at most the newest opset the installed onnx package knows."""
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise XasrError(
            f"--opset {opset}: the exporter writes opsets {MIN_OPSET} to {newest} "
            f"(torch's exporter cannot write older ones); the default is {OPSET}"
        )
    return opset


def file_opset(proto) -> int:
    """The opset of the default ONNX domain that a graph (``onnx.ModelProto``) declares."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


class _Graph(nn.Module):
    """The model as the graph sees it: two tensors in, two out (no ``augment`` argument)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(audio, lengths)


def load_for_export(model_dir: str | Path, lang: str | None = None):
    """The model of ``model_dir`` ready to export: (model, cfg, vocab, directory), the model
    in eval mode with its front end batched (``per_utterance=False``). A model with language
    masks (sparse sharing) becomes ``lang``'s sub-network: its masked weights multiplied by
    the mask; ``XasrError`` (one line) without ``lang``, or with ``lang`` and no masks."""
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
    return model.eval(), cfg, vocab, directory


def export_proto(graph: nn.Module, args: tuple, opset: int, **names_and_shapes):
    """``torch.onnx.export(dynamo=True)`` of ``graph`` on ``args`` -> ``onnx.ModelProto``;
    ``names_and_shapes``: input_names, output_names, dynamic_shapes. ``XasrError`` (one line)
    if the file's opset is not ``opset`` (the exporter's fallbacks keep another)."""
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            graph, args, dynamo=True, opset_version=opset, verbose=False, **names_and_shapes
        )
    proto = program.model_proto
    if (written := file_opset(proto)) != opset:
        raise XasrError(
            f"--opset {opset}: torch's exporter wrote opset {written} instead; not written. "
            f"Ask for --opset {written}"
        )
    return proto


def graph_metadata(model: nn.Module, cfg, vocab, directory: Path, lang: str | None) -> dict:
    """The ONNX metadata every xasr graph carries: vocabulary, model config, sample rate,
    seconds per output frame, blank id (and Whisper's longest input, a masked model's
    language)."""
    return {
        "xasr_version": __version__,
        "architecture": cfg.architecture,
        "model_config": json.dumps(asdict(cfg)),
        "vocab": json.dumps(vocab.to_json(), ensure_ascii=False),
        "blank_id": str(vocab.blank_id),
        "sample_rate": str(SAMPLE_RATE),
        "frame_seconds": str(frame_seconds(model)),
        "source_model": directory.name,
        # the longest utterance the graph takes (Whisper: its position table's 30 s)
        **({"max_seconds": str(s)} if (s := getattr(model.frontend, "max_seconds", None)) else {}),
        **({"lang": lang} if lang is not None else {}),
    }


def frame_seconds(model: nn.Module) -> float:
    """Seconds of audio per output frame (0.04 for xasr's Conformer)."""
    return model.features.hop * model.frontend.stride / SAMPLE_RATE


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    opset: int = OPSET,
    lang: str | None = None,
    tolerance: float = TOLERANCE,
    quantize: str | None = None,
) -> dict:
    """Export ``model_dir`` to ``out`` (written atomically), check it against torch on
    utterances of several lengths (refused above ``tolerance``, the largest log-probability
    difference), and return a report: path, bytes, opset (read back from the file),
    max_abs_diff.

    A model with language masks (sparse sharing) is exported as ``lang``'s sub-network: its
    masked weights multiplied by the mask, one graph per language. ``quantize="int8"``: the
    checked float32 graph is quantized (``xasr.export.quantize``) and checked against float32
    (the report's ``int8`` entry)."""
    try:
        import onnx
    except ImportError:
        raise XasrError("xasr export needs onnx and onnxscript: pip install -e '.[onnx]'") from None
    if not tolerance > 0:
        raise XasrError(f"--tolerance must be > 0, got {tolerance}")
    check_opset(opset)
    check_quantize(quantize)
    out = output_file(out, "--onnx")
    model, cfg, vocab, directory = load_for_export(model_dir, lang)
    graph = _Graph(model).eval()
    audio, lengths = _check_batch(EXPORT_SECONDS)
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=HOP_LENGTH * 8)
    proto = export_proto(
        graph,
        (audio, lengths),
        opset,
        input_names=["audio", "lengths"],
        output_names=["log_probs", "frames"],
        dynamic_shapes={"audio": {0: batch, 1: samples}, "lengths": {0: batch}},
    )
    for key, value in graph_metadata(model, cfg, vocab, directory, lang).items():
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
        if quantize == "int8":
            checked["int8"] = quantize_int8_checked(tmp, check_feeds(), name=out)

    write_file(out, save_and_check)
    report = {
        "path": str(out),
        "bytes": out.stat().st_size,
        "opset": file_opset(onnx.load(str(out), load_external_data=False)),
        "max_abs_diff": checked["diff"],
    }
    return report | ({"quantize": quantize, "int8": checked["int8"]} if quantize else {})


def _check_batch(seconds: tuple[float, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A padded batch of noise-like audio with these durations."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * SAMPLE_RATE) for s in seconds])
    audio = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=generator)
    audio *= torch.arange(audio.shape[1])[None, :] < lengths[:, None]
    return audio, lengths


def check_feeds() -> list[dict]:
    """The check utterances (``CHECK_SECONDS``) as the graph's numpy inputs."""
    batches = (_check_batch(seconds, seed=i + 1) for i, seconds in enumerate(CHECK_SECONDS))
    return [{"audio": audio.numpy(), "lengths": lengths.numpy()} for audio, lengths in batches]


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
