"""Inference speed of the ONNX export against torch eager, as ratios measured in one run.

The model (default: the shipped en-small) is exported with ``xasr.export.onnx.export_onnx``;
both sides then transcribe the same 8 utterances of 4-11 s (noise-like audio: the cost does not
depend on what is said) as log-probabilities, interleaved repetition by repetition (the order
alternating, and a pause before each run so that onnxruntime's threads, which spin a while
when idle, do not eat into torch's turn) so that machine noise hits both alike. Both sides
run with their defaults:

* batch 1: each utterance alone; batched: one padded batch of all 8;
* 1 thread, and all threads (``torch.set_num_threads`` / onnxruntime's intra-op threads).

Real-time factor = seconds of compute / seconds of audio (median over repetitions); the ratio
is torch's RTF / ONNX's (above 1: ONNX is faster). Decoding (greedy, microseconds) is left out.

    python bench/onnx_speed.py [--model en-small] [--repeats 5] [--out bench/results/onnx-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from xasr.data.audio import SAMPLE_RATE
from xasr.export.onnx import export_onnx
from xasr.models.build import load_model_dir

SECONDS = (4.7, 5.5, 6.3, 7.1, 8.0, 8.8, 9.9, 11.2)


def utterances(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in SECONDS]


def padded(audios: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in audios], dtype=np.int64)
    batch = np.zeros((len(audios), lengths.max()), dtype=np.float32)
    for i, audio in enumerate(audios):
        batch[i, : len(audio)] = audio
    return batch, lengths


def run_torch(model, groups) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch, lengths in groups:
            model(torch.from_numpy(batch), torch.from_numpy(lengths))
    return time.perf_counter() - started


def run_onnx(session, groups) -> float:
    started = time.perf_counter()
    for batch, lengths in groups:
        session.run(None, {"audio": batch, "lengths": lengths})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="en-small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/onnx-cpu.json")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    all_threads = len(os.sched_getaffinity(0))  # the cores this process may use
    model, cfg, _ = load_model_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export = export_onnx(args.model, onnx_path)
        sessions = {}
        for threads in sorted({1, all_threads}):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            sessions[threads] = onnxruntime.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
        audios = utterances()
        audio_seconds = sum(len(a) for a in audios) / SAMPLE_RATE
        shapes = {"batch 1": [padded([a]) for a in audios], "batched": [padded(audios)]}
        rows = []
        for threads, session in sessions.items():
            torch.set_num_threads(threads)
            for shape, groups in shapes.items():
                run_torch(model, groups[:1]), run_onnx(session, groups[:1])  # warm-up
                times = {"torch": [], "onnx": []}
                runs = {
                    "torch": lambda groups=groups: run_torch(model, groups),
                    "onnx": lambda groups=groups, session=session: run_onnx(session, groups),
                }
                for repeat in range(args.repeats):
                    for side in ("torch", "onnx") if repeat % 2 == 0 else ("onnx", "torch"):
                        time.sleep(0.2)  # onnxruntime's idle threads spin a while: let them stop
                        times[side].append(runs[side]())
                rtf = {k: statistics.median(v) / audio_seconds for k, v in times.items()}
                ratios = [t / o for t, o in zip(times["torch"], times["onnx"])]
                rows.append(
                    {
                        "threads": threads,
                        "shape": shape,
                        "torch_rtf": rtf["torch"],
                        "onnx_rtf": rtf["onnx"],
                        "ratio_torch_over_onnx": rtf["torch"] / rtf["onnx"],
                        "per_repeat_ratios": ratios,
                    }
                )
    result = {
        "model": args.model,
        "architecture": cfg.architecture,
        "audio_seconds": audio_seconds,
        "utterance_seconds": SECONDS,
        "repeats": args.repeats,
        "cpu_count": all_threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "export": export,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{'threads':>7}  {'shape':<8} {'torch RTF':>10} {'ONNX RTF':>10} {'torch/ONNX':>10}")
    for row in rows:
        print(
            f"{row['threads']:>7}  {row['shape']:<8} {row['torch_rtf']:>10.4f} "
            f"{row['onnx_rtf']:>10.4f} {row['ratio_torch_over_onnx']:>9.2f}x"
        )
    print(f"written {out}")


if __name__ == "__main__":
    main()
