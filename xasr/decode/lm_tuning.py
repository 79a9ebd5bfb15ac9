"""The n-gram LM's weight and word bonus, chosen on dev (never on test).

A CTC beam search with an LM (``xasr.decode.lm.LmDecoder``) scores a hypothesis as acoustic +
``lm_weight`` x LM log-probability + ``word_bonus`` per word; the best pair depends on the
model, the LM and the language. ``tune_lm_weights`` computes the dev set's CTC
log-probabilities once, decodes them with every pair of a grid (the LM loaded once) and keeps
the pair with the lowest dev error rate (ties: the smaller weight, then the smaller bonus).
Its table holds every pair's dev CER and WER beside greedy decoding's, so a report can show
what the LM bought on dev before any test number is read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xasr.data.batching import check_utterances, load_batch_audio
from xasr.data.manifest import read_manifest
from xasr.decode.batches import duration_batches
from xasr.decode.greedy import greedy_texts
from xasr.decode.lm import LmDecoder
from xasr.decode.metrics import error_counts
from xasr.device import torch_device
from xasr.errors import XasrError
from xasr.models.build import load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks

log = logging.getLogger(__name__)

LM_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
WORD_BONUSES = (-1.0, 0.0, 1.0, 2.0)
METRICS = ("cer", "wer")


@dataclass(frozen=True)
class LmTuning:
    """The chosen pair, its dev scores, greedy decoding's, and every pair's (``table``)."""

    lm: str
    metric: str
    lm_weight: float
    word_bonus: float
    dev_cer: float
    dev_wer: float
    greedy: dict  # {"cer", "wer"} on dev without the LM
    table: list[dict] = field(default_factory=list)  # {"lm_weight", "word_bonus", "cer", "wer"}

    def to_json(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def dev_log_probs(model, manifest, device=None, max_batch_seconds: float = 200.0, progress=False):
    """([(frames, vocab) float32 array per utterance], [reference texts]) of a manifest."""
    utterances, report = check_utterances(read_manifest(manifest))
    log.info("dev %s: %s", manifest, report.summary())
    device = torch_device(device)
    model = model.to(device).eval()
    arrays: list[np.ndarray | None] = [None] * len(utterances)
    batches = duration_batches([u.duration or 1.0 for u in utterances], max_batch_seconds)
    for batch in tqdm(batches, disable=not progress, desc="dev log-probs", unit="batch"):
        audio, lengths = load_batch_audio(
            [utterances[i].audio_filepath for i in batch], [utterances[i].source for i in batch]
        )
        states, frames = model.encode(audio.to(device), lengths.to(device))
        log_probs = model.ctc_log_probs(states).float().cpu().numpy()
        for row, (i, n) in enumerate(zip(batch, frames.tolist())):
            arrays[i] = log_probs[row, :n]
    return arrays, [u.text for u in utterances]


def tune_lm_weights(
    model_dir: str | Path,
    dev_manifest: str | Path,
    lm: str | Path,
    lm_weights: tuple[float, ...] = LM_WEIGHTS,
    word_bonuses: tuple[float, ...] = WORD_BONUSES,
    metric: str = "cer",
    beam_width: int = 32,
    device: str | None = None,
    progress: bool = False,
) -> LmTuning:
    """Every (``lm_weight``, ``word_bonus``) pair decoded on ``dev_manifest``; the pair with
    the lowest dev ``metric`` (cer or wer) chosen. A model with language masks is refused (tune
    on one language's sub-network through ``xasr export`` first)."""
    if metric not in METRICS:
        raise XasrError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")
    if not lm_weights or not word_bonuses:
        raise XasrError("the LM weight grid needs at least one weight and one word bonus")
    if LanguageMasks.load(resolve_model(model_dir)) is not None:
        raise XasrError(f"{model_dir} has language masks: tune the LM on one language's model")
    model, _, vocab = load_model_dir(model_dir)
    if not hasattr(model, "ctc_log_probs"):
        raise XasrError(f"{model_dir} has no CTC output: an n-gram LM fuses into CTC search")
    arrays, refs = dev_log_probs(model, dev_manifest, device, progress=progress)
    greedy = greedy_scores(arrays, refs, vocab)
    decoder = LmDecoder(vocab, lm, beam_width)
    table = []
    pairs = [(w, b) for w in lm_weights for b in word_bonuses]
    for weight, bonus in tqdm(pairs, disable=not progress, desc="LM weights", unit="pair"):
        decoder.set_weights(weight, bonus)
        scores = error_counts(refs, decoder.decode_arrays(arrays))
        table.append(
            {"lm_weight": weight, "word_bonus": bonus, "cer": scores.cer, "wer": scores.wer}
        )
    best = min(table, key=lambda row: (row[metric], row["lm_weight"], row["word_bonus"]))
    log.info("LM weights on dev: lm_weight %g, word_bonus %g (dev %s %.3f; greedy %.3f)",
             best["lm_weight"], best["word_bonus"], metric, best[metric], greedy[metric])  # fmt: skip
    return LmTuning(str(lm), metric, best["lm_weight"], best["word_bonus"], best["cer"],
                    best["wer"], greedy, table)  # fmt: skip


def greedy_scores(arrays: list[np.ndarray], refs: list[str], vocab) -> dict:
    """Dev CER and WER of greedy CTC decoding of the same log-probabilities."""
    hyps = []
    for array in arrays:
        log_probs = torch.from_numpy(array)[None]
        hyps += greedy_texts(log_probs, torch.tensor([array.shape[0]]), vocab)
    scores = error_counts(refs, hyps)
    return {"cer": scores.cer, "wer": scores.wer}
