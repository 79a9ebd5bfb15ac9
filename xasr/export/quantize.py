"""int8 graphs (``xasr export --quantize int8``): onnxruntime's dynamic quantization of the
MatMul weights, checked against the float32 graph it came from.

What is quantized, and why (measured on en-small, one thread, batch 1, the utterances of
``bench/onnx_speed.py``; CPU seconds per audio second, float32 graph 0.0077-0.0083, torch
eager 0.0091-0.0092): MatMul weights to int8, activations quantized per run (dynamic), gave
0.0067-0.0070. Quantizing the convolutions as well was slower: dynamically (ConvInteger,
0.0130-0.0148) and statically with calibration on speech (QLinearConv, QDQ or QOperator
format: 0.0067, no gain over MatMul alone, and a calibration set to ship). Per-channel MatMul
weights changed nothing (0.0069). The MatMuls are a small part of this model's time (13 % in
onnxruntime's profile; the convolutional front end, the STFT and the elementwise ops take the
rest), which bounds what int8 can save; the figures in docs/deployment.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xasr.errors import XasrError

QUANTIZE = ("int8",)
# the int8 graph's best token must be the float32 graph's on at least this fraction of the
# check utterances' frames; lower means a broken quantization, not rounding
MIN_FRAME_AGREEMENT = 0.9


def check_quantize(quantize: str | None) -> None:
    """``XasrError`` (one line) unless ``quantize`` is None or one of ``QUANTIZE``."""
    if quantize is not None and quantize not in QUANTIZE:
        raise XasrError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE)}")


def linear_matmuls(path: str | Path) -> list[str]:
    """The MatMul nodes of a graph that torch's exporter wrote for ``nn.Linear`` layers (its
    node metadata names the module). Others stay float: above all the log-mel's filterbank
    product, whose input, a power spectrum, spans more orders of magnitude than 8 bits hold
    (quantized, en-small's int8 graph picked float32's best token on 66 % of speech frames)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and any("torch.nn.modules.linear.Linear" in m.value for m in node.metadata_props)
    ]


def quantize_int8(src: str | Path, dst: str | Path) -> None:
    """Write ``src``'s graph to ``dst`` with int8 weights in its linear layers' MatMuls
    (``linear_matmuls``; dynamic quantization: the activations are quantized per run, so no
    calibration data is needed). The metadata stays. ``XasrError`` if it has none."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = linear_matmuls(src)
    if not nodes:
        raise XasrError(f"{src}: no linear layers found to quantize (not an xasr export?)")

    # quantize_dynamic logs a warning advising pre-processing on every call: here it made no
    # difference (onnxruntime optimises the graph when it loads it)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            weight_type=QuantType.QInt8,
        )
    finally:
        quiet.setLevel(level)


def compare_graphs(float_path: Path, int8_path: Path, feeds: list[dict]) -> dict:
    """Run both graphs on each feed (a dict of input arrays) and compare their first outputs,
    (batch, frames, vocab) log-probabilities, over the valid frames (the float graph's second
    output where it has one, else all): max_abs_diff and frame_agreement, the fraction of
    frames whose best token is the same."""
    import onnxruntime

    def session(path: Path):
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    reference, quantized = session(float_path), session(int8_path)
    worst, same, total = 0.0, 0, 0
    for feed in feeds:
        feed = {k: np.asarray(v) for k, v in feed.items()}
        expected = reference.run(None, feed)
        got = quantized.run(None, feed)[0]
        frames = expected[1] if len(expected) > 1 else [got.shape[1]] * got.shape[0]
        for i, n in enumerate(np.asarray(frames).tolist()):
            a, b = expected[0][i, :n], got[i, :n]
            worst = max(worst, float(np.abs(a - b).max()))
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += n
    return {"max_abs_diff": worst, "frame_agreement": same / max(total, 1)}


def quantize_int8_checked(path: Path, feeds: list[dict], name: Path | None = None) -> dict:
    """Replace the float32 graph at ``path`` by its int8 version, checked against it on
    ``feeds`` (``compare_graphs``); ``XasrError`` (one line, naming ``name``) and ``path``
    left as it was when fewer than ``MIN_FRAME_AGREEMENT`` of the frames agree."""
    path = Path(path)
    int8 = path.with_name(path.name + ".int8")
    try:
        quantize_int8(path, int8)
        result = compare_graphs(path, int8, feeds)
        if result["frame_agreement"] < MIN_FRAME_AGREEMENT:
            raise XasrError(
                f"{name or path}: the int8 graph picks float32's best token on only "
                f"{result['frame_agreement']:.1%} of the check frames (at least "
                f"{MIN_FRAME_AGREEMENT:.0%} expected); not written. Export without --quantize"
            )
        os.replace(int8, path)
    finally:
        int8.unlink(missing_ok=True)
    return result
