"""A torch model as a ``Recognition`` (``xasr.decode.long_audio``): a batch of audio in, each
utterance's CTC log-probabilities and the decoding strategy's text out."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from xasr.data.audio import SAMPLE_RATE
from xasr.decode.greedy import GreedyCtc
from xasr.decode.long_audio import Recognition
from xasr.decode.options import default_strategy
from xasr.decode.strategy import CtcStrategy
from xasr.device import torch_device


def frame_seconds(model) -> float:
    """Seconds of audio per output frame: 0.04 for xasr's Conformer (10 ms features, 4x
    subsampling), 0.02 for wav2vec2-like models and Whisper (as ``xasr export`` records)."""
    return model.features.hop * model.frontend.stride / SAMPLE_RATE


def torch_recognition(model, vocab, decoder=None, device: str | None = None) -> Recognition:
    """``decoder``: a decoding strategy (``xasr.decode.strategy``; default the model's own).
    Word times come from the CTC log-probabilities: an attention decoder's text is aligned to
    the model's CTC branch (a model without one raises ``XasrError`` naming the fix)."""
    # oneDNN (torch's CPU convolutions) caches a primitive per input shape, up to 1024 of them,
    # and pieces come in as many lengths: an hour grew to 1.9 GB resident with the default, 0.55
    # GB with 16 (docs/deployment.md). oneDNN reads this when it first builds a primitive, so it
    # is set before any decoding, and a user's own setting wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
    device = torch_device(device)
    model = model.to(device).eval()
    decoder = decoder or default_strategy(model, vocab)

    @torch.inference_mode()
    def run(audios: list[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
        lengths = torch.tensor([len(a) for a in audios])
        batch = torch.zeros(len(audios), int(lengths.max()))
        for i, audio in enumerate(audios):
            batch[i, : len(audio)] = torch.from_numpy(audio)
        state = decoder.encode(model, batch.to(device), lengths.to(device))
        texts = decoder.search(model, state)
        if isinstance(decoder, CtcStrategy):
            log_probs, frames = state
        else:  # attention: (encoder states, frames, CTC log-probs or None)
            log_probs = state[2] if state[2] is not None else model.ctc_log_probs(state[0])
            frames = state[1]
        log_probs = log_probs.float().cpu().numpy()
        return [log_probs[i, :n] for i, n in enumerate(frames.tolist())], texts

    return Recognition(
        run,
        vocab,
        frame_seconds(model),
        greedy=isinstance(decoder, GreedyCtc),
        max_seconds=getattr(model.frontend, "max_seconds", None) or math.inf,
    )
