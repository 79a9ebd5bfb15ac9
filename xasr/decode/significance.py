"""Whether one recognizer beat another on the same test set, or the gap is within chance: the
paired bootstrap (Koehn 2004; Bisani and Ney 2004). The test utterances are resampled with
replacement, the same resample for both systems, and the corpus-level error rate difference
is recomputed on each; its 2.5th and 97.5th percentiles bound a 95% interval. A verdict that
reads "A beat B" when the interval holds zero says more than the figures do.
"""

from __future__ import annotations

import numpy as np

from xasr.decode.metrics import error_counts

METRICS = {
    "wer": ("word_errors", "word_ref"),
    "cer": ("char_errors", "char_ref"),
    "mer": ("mixed_errors", "mixed_ref"),  # code-switching's mixed error rate
}


def per_utterance(references: list[str], hypotheses: list[str], metric: str) -> np.ndarray:
    """(utterances, 2): each utterance's errors and reference length under ``metric``."""
    errors, length = METRICS[metric]
    rows = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        counts = error_counts([ref], [hyp])
        rows.append((getattr(counts, errors), getattr(counts, length)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def paired_bootstrap(
    references: list[str],
    hyps_a: list[str],
    hyps_b: list[str],
    metric: str = "wer",
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """The difference ``metric(a) - metric(b)`` over the whole set (negative: a is better) and
    its 95% bootstrap interval: {"metric", "difference", "low", "high", "a_better" (the share
    of resamples in which a's rate is lower), "verdict": "a", "b" or "tie" (the interval
    holds zero)}."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    a = per_utterance(references, hyps_a, metric)
    b = per_utterance(references, hyps_b, metric)
    length = a[:, 1]

    def rate(counts: np.ndarray, index) -> np.ndarray:
        return counts[index, 0].sum(-1) / np.maximum(length[index].sum(-1), 1)

    every = np.arange(len(length))
    index = np.random.default_rng(seed).integers(0, len(length), (resamples, len(length)))
    differences = rate(a, index) - rate(b, index)
    low, high = np.percentile(differences, [2.5, 97.5])
    verdict = "a" if high < 0 else "b" if low > 0 else "tie"
    return {
        "metric": metric,
        "difference": float(rate(a, every) - rate(b, every)),
        "low": float(low),
        "high": float(high),
        "a_better": float((differences < 0).mean()),
        "verdict": verdict,
    }


def compare_runs(test_a: dict, test_b: dict, metric: str = "wer") -> dict:
    """``paired_bootstrap`` of two ``evaluate`` outputs (their "hypotheses") on one test set."""
    refs = [h["ref"] for h in test_a["hypotheses"]]
    if [h["id"] for h in test_a["hypotheses"]] != [h["id"] for h in test_b["hypotheses"]]:
        raise ValueError("the two evaluations are not of the same utterances")
    return paired_bootstrap(
        refs,
        [h["hyp"] for h in test_a["hypotheses"]],
        [h["hyp"] for h in test_b["hypotheses"]],
        metric,
    )


def interval_text(compared: dict) -> str:
    """'-3.1 pts [-5.0, -1.2]': the difference and its 95% interval in percentage points."""
    return (
        f"{100 * compared['difference']:+.1f} pts "
        f"[{100 * compared['low']:+.1f}, {100 * compared['high']:+.1f}]"
    )
