"""Greedy CTC decoding: best token per frame, merge repeats, drop blanks."""

from __future__ import annotations

import torch
from torch import Tensor

from xasr.decode.strategy import CtcStrategy


def greedy_ids(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> list[list[int]]:
    """log_probs : Tensor, shape = (batch, frames, vocab) -> token ids per utterance.

    The repeat/blank mask is computed for the whole batch at once; only the final slicing is
    per utterance (no per-frame Python loop).
    """
    best = log_probs.argmax(dim=-1)  # (batch, frames)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)
    keep = (best != blank_id) & (best != previous)
    keep &= torch.arange(best.shape[1], device=best.device)[None, :] < lengths[:, None]
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(best.shape[0])]


def greedy_texts(log_probs: Tensor, lengths: Tensor, vocab) -> list[str]:
    return [vocab.decode(ids) for ids in greedy_ids(log_probs, lengths, vocab.blank_id)]


class GreedyCtc(CtcStrategy):
    """The best-path decoding strategy (``xasr.decode.strategy``) of any model with CTC
    log-probabilities; ``info()`` names it in results."""

    name = "greedy"

    def __init__(self, vocab):
        self.vocab = vocab

    def decode_log_probs(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        return greedy_texts(log_probs, lengths, self.vocab)

    def info(self) -> dict:
        return {"name": self.name}
