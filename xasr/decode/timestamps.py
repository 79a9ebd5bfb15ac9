"""Word start and end times from a CTC model's log-probabilities (numpy only, no torch: the
ONNX path uses it too).

A token's span is the frames it occupies on the best CTC path: for greedy decoding the path is
the per-frame argmax (``greedy_spans``); for a text that another search produced (the n-gram LM
beam search, an attention decoder) it is the Viterbi forced alignment of that text
(``aligned_spans``). A word starts at the first frame of its first token and ends after the
last frame of its last token: ``start = first * frame_seconds``, ``end = (last + 1) *
frame_seconds``. Measured on utterances built from separately synthesized words with known
silences between them (docs/deployment.md), this rule is within 0.1 s of the true boundaries
without any shift, so none is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xasr.data.vocab import SPACE

SP_SPACE = "\u2581"  # sentencepiece's word-start mark
NEG = -1e30


@dataclass(frozen=True)
class Word:
    """A word of a transcript and its time in the audio, in seconds."""

    text: str
    start: float
    end: float

    def to_json(self) -> dict:
        return {"word": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}

    def shifted(self, seconds: float) -> Word:
        return Word(self.text, self.start + seconds, self.end + seconds)


Span = tuple[int, int, int]  # (token id, first frame, last frame)


def greedy_spans(log_probs: np.ndarray, blank_id: int = 0) -> list[Span]:
    """log_probs : np.ndarray, shape = (frames, vocab) -> the tokens of the greedy CTC path
    (repeats merged, blanks dropped), each with the first and last frame it occupies."""
    best = np.asarray(log_probs).argmax(axis=-1)
    if best.size == 0:
        return []
    changes = np.flatnonzero(np.diff(best)) + 1  # where a run of one label starts
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes, [best.size]]) - 1
    return [(int(best[s]), int(s), int(e)) for s, e in zip(starts, ends) if best[s] != blank_id]


def aligned_spans(log_probs: np.ndarray, ids: list[int], blank_id: int = 0) -> list[Span] | None:
    """The Viterbi (best-path) CTC alignment of the token ids ``ids`` to log_probs (frames,
    vocab): each token with its first and last frame; None where the text cannot fit (more
    tokens and repeats than frames).

    The usual trellis over the blank-interleaved labels (2 * len(ids) + 1 states), one numpy
    step per frame: about 1 ms per second of audio for a sentence."""
    log_probs = np.asarray(log_probs, dtype=np.float32)
    frames, states = log_probs.shape[0], 2 * len(ids) + 1
    if not ids:
        return []
    labels = np.full(states, blank_id)
    labels[1::2] = ids
    skip = np.zeros(states, dtype=bool)  # a token may follow the previous one without a blank
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(states, NEG)
    score[:2] = log_probs[0, labels[:2]]
    moves = np.zeros((frames, states), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    candidates = np.full((3, states), NEG)
    for t in range(1, frames):
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        candidates[2, 2:] = np.where(skip[2:], score[:-2], NEG)
        moves[t] = candidates.argmax(axis=0)
        score = candidates[moves[t], np.arange(states)] + log_probs[t, labels]
    last = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    if score[last] <= NEG / 2:
        return None
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = last
        last -= moves[t, last]
    spans: dict[int, list[int]] = {}
    for t, s in enumerate(path.tolist()):
        if s % 2:
            spans.setdefault(s // 2, [t, t])[1] = t
    return [(ids[k], spans[k][0], spans[k][1]) for k in range(len(ids))]


def _word_start(token: str) -> bool:
    return token.startswith(SP_SPACE)


def _separator(token: str) -> bool:
    return token in (SPACE, SP_SPACE)


def words_from_spans(spans: list[Span], vocab, frame_seconds: float) -> list[Word]:
    """Tokens with their frames -> words with their times. A character vocabulary separates
    words by its space token (``|``); a sentencepiece one starts each word with ``▁``. A
    word's text is the vocabulary's decoding of its tokens."""
    groups: list[list[Span]] = []
    open_word = False
    for span in spans:
        token = vocab.tokens[span[0]]
        if _separator(token):
            open_word = False
            continue
        if not open_word or _word_start(token):
            groups.append([])
        groups[-1].append(span)
        open_word = True
    words = []
    for group in groups:
        text = vocab.decode([token_id for token_id, _, _ in group])
        if text:
            words.append(
                Word(text, group[0][1] * frame_seconds, (group[-1][2] + 1) * frame_seconds)
            )
    return words


def word_times(
    log_probs: np.ndarray, vocab, frame_seconds: float, text: str | None = None
) -> list[Word]:
    """The words of one utterance with their times: log_probs (frames, vocab) as the model
    gave them, ``frame_seconds`` seconds per frame. ``text``: None for greedy decoding (the
    argmax path's words), or another search's text, which is forced-aligned; where it cannot
    be aligned (an attention decoder's text longer than the frames allow) the greedy path's
    words are returned instead."""
    spans = None
    if text is not None:
        spans = aligned_spans(log_probs, vocab.encode(text), vocab.blank_id)
    if spans is None:
        spans = greedy_spans(log_probs, vocab.blank_id)
    return words_from_spans(spans, vocab, frame_seconds)
