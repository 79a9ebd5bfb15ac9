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
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """The difference ``metric(a) - metric(b)`` over the whole set (negative: a is better) and
    its 95% bootstrap interval: {"metric", "difference", "low", "high", "a_better" (the share
    of resamples in which a's rate is lower), "verdict": "a", "b" or "tie" (the interval
    holds zero)}: ``hierarchical_bootstrap`` with one seed per system."""
    check_metric(metric)
    a = per_utterance(references, hyps_a, metric)[None]
    b = per_utterance(references, hyps_b, metric)[None]
    return {"metric": metric, **hierarchical_bootstrap(a, b, resamples, seed)}


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")


def utterance_counts(
    evaluations: list[dict], metric: str, ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The utterance ids and (utterances, 2) errors and reference lengths under ``metric``,
    summed over ``evaluations``: ``evaluate`` outputs (their "hypotheses") of one system on
    the same utterances, e.g. one per training seed. ``ids``: the utterances they must hold
    (another system's, to pair with); ValueError otherwise."""
    check_metric(metric)
    ids = ids if ids is not None else [h["id"] for h in evaluations[0]["hypotheses"]]
    total = np.zeros((len(ids), 2))
    for scored in evaluations:
        if [h["id"] for h in scored["hypotheses"]] != ids:
            raise ValueError("the evaluations are not of the same utterances")
        refs = [h["ref"] for h in scored["hypotheses"]]
        total += per_utterance(refs, [h["hyp"] for h in scored["hypotheses"]], metric)
    return ids, total


def compare_runs(test_a: dict, test_b: dict, metric: str = "wer") -> dict:
    """``paired_bootstrap`` of two ``evaluate`` outputs (their "hypotheses") on one test set."""
    ids, a = utterance_counts([test_a], metric)
    _, b = utterance_counts([test_b], metric, ids=ids)
    return {"metric": metric, **hierarchical_bootstrap(a[None], b[None])}


def interval_text(compared: dict) -> str:
    """'-3.1 pts [-5.0, -1.2]': the difference and its 95% interval in percentage points."""
    return (
        f"{100 * compared['difference']:+.1f} pts "
        f"[{100 * compared['low']:+.1f}, {100 * compared['high']:+.1f}]"
    )


def seed_counts(evaluations: list[dict], metric: str, ids: list[str] | None = None) -> np.ndarray:
    """(seeds, utterances, 2): each training seed's errors and reference length per utterance,
    from one ``evaluate`` output per seed (``utterance_counts`` of each, in ``ids`` order)."""
    return np.stack([utterance_counts([e], metric, ids)[1] for e in evaluations])


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> dict:
    """The difference ``rate(a) - rate(b)`` and its 95% interval when both the training seeds
    and the test utterances are drawn by chance: ``a``, ``b`` are (seeds, utterances, 2)
    (``seed_counts``). Each resample draws each system's seeds with replacement (independently:
    seed k of one arm is no twin of seed k of another) and one set of utterances with
    replacement for both (the same test set: paired), and pools the errors over the drawn seeds
    and utterances. With one seed per system this is the paired bootstrap of utterances; with
    several, the interval widens by the training's own variance, which a bootstrap of
    utterances alone ignores. Two caveats: with k seeds the seed draw takes few distinct values (10 for k = 3)
    and understates the seeds' variance by about (k - 1) / k; arms that share a seed value
    (the same data order) are drawn as independent, which widens the interval.

    Returns {"difference", "low", "high", "a_better" (the share of resamples in which a's rate
    is lower), "verdict": "a", "b" or "tie" (the interval holds zero), "seeds": [seeds of a,
    of b]}."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError("the two systems were not scored on the same utterances")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    utts = rng.multinomial(n, np.full(n, 1 / n), size=resamples)  # (resamples, n) weights

    def rates(counts: np.ndarray) -> np.ndarray:
        k = counts.shape[0]
        seeds = rng.multinomial(k, np.full(k, 1 / k), size=resamples)  # (resamples, k)
        errors = np.einsum("rs,su,ru->r", seeds, counts[..., 0], utts)
        length = np.einsum("rs,su,ru->r", seeds, counts[..., 1], utts)
        return errors / np.maximum(length, 1)

    differences = rates(a) - rates(b)
    low, high = np.percentile(differences, [2.5, 97.5])

    def pooled(counts: np.ndarray) -> float:
        return counts[..., 0].sum() / max(counts[..., 1].sum(), 1)

    return {
        "difference": float(pooled(a) - pooled(b)),
        "low": float(low),
        "high": float(high),
        "a_better": float((differences < 0).mean()),
        "verdict": "a" if high < 0 else "b" if low > 0 else "tie",
        "seeds": [int(a.shape[0]), int(b.shape[0])],
    }


def verdict_word(compared: dict) -> str:
    """ "held" (a beat b: the interval below zero), "reversed" (above) or "no difference"."""
    return {"a": "held", "b": "reversed"}.get(compared["verdict"], "no difference")
