"""Greedy attention decoding with the decoder's cache (``xasr.models.aed.DecoderCache``: each
step runs the decoder on the newest token) against recomputing the whole prefix each step, as
xasr did before; the shipped en-small-aed, same batch.

    .venv/bin/python bench/attention_decoding.py            # a minute or two on a CPU
    .venv/bin/python bench/attention_decoding.py --quick    # smoke run

The batch is noise, on which the model seldom ends a hypothesis, so decoding runs to its
length limit (25 tokens a second): the worst case, and the one validation meets early in a
training. Both ways are timed in one process, interleaved over repetitions; the figure is
the median of the per-repetition ratios, and the hypotheses must be identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from xasr.decode.attention import AttentionSearch
from xasr.decode.strategy import decode
from xasr.models.build import load_model_dir

MODEL = Path(__file__).resolve().parents[1] / "xasr" / "pretrained" / "en-small-aed"


class Uncached(torch.nn.Module):
    """The model, its decoder called on the whole prefix at every step (no cache)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def next_token_log_probs(self, tokens, states, lengths, cache=None):
        return self.model.next_token_log_probs(tokens, states, lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _, vocab = load_model_dir(MODEL)
    model.eval()
    utts, seconds, reps = (4, 1.0, 1) if args.quick else (16, 4.0, 3)
    audio = torch.randn(utts, int(16000 * seconds)) * 0.05
    lengths = torch.full((utts,), audio.shape[1])
    strategy = AttentionSearch(vocab)
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    hyps = {}
    for rep in range(reps):
        order = [("cached", model), ("uncached", Uncached(model))]
        for name, candidate in order if rep % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            hyps[name] = decode(strategy, candidate, audio, lengths)
            times[name].append(time.perf_counter() - start)
    assert hyps["cached"] == hyps["uncached"], "the cache changed the hypotheses"
    tokens = sum(len(h) for h in hyps["cached"]) / utts
    ratios = [u / c for c, u in zip(times["cached"], times["uncached"])]
    print(f"{utts} utterances of {seconds:.0f} s, {tokens:.0f} characters each on average")
    for name, values in times.items():
        print(f"{name:>9}: {statistics.median(values):6.2f} s (median of {reps})")
    print(f"uncached / cached: {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
