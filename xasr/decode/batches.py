"""Grouping utterances into decoding batches by duration (no torch: the ONNX path uses it too)."""

from __future__ import annotations


def duration_batches(durations: list[float], max_batch_seconds: float) -> list[list[int]]:
    """Indices grouped so that sorted-by-length batches hold at most ``max_batch_seconds``
    of padded audio (longest x count)."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches, current = [], []
    for i in order:
        if current and durations[i] * (len(current) + 1) > max_batch_seconds:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])
