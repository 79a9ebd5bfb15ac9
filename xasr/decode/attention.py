"""Attention decoding of an encoder-decoder (``xasr.models.aed``): greedy, beam search with
length normalisation, and joint CTC/attention scoring (Watanabe et al. 2017), batched.

A hypothesis's score is the sum over its tokens of
``(1 - ctc_weight) * log p_att(token | prefix) + ctc_weight * (log p_ctc(prefix + token) -
log p_ctc(prefix))``, where ``p_ctc(prefix)`` is the CTC prefix probability (the probability of
all alignments that start with the prefix; for the end token, of the whole sequence). Finished
hypotheses are ranked by ``score / length ** length_penalty`` (length in tokens with the end
token). Each step takes the ``beam_width`` best expansions of the live hypotheses of every
utterance; those that end move to the finished list, the others carry on. An utterance is done
when no live hypothesis is left, or when it has ``beam_width`` finished ones and the best of
them beats every live one as that would rank were it to end at once (a heuristic: a live one
may still end better; fairseq stops at ``beam_width`` finished alone), or at
``max_length_ratio`` x its encoder frames tokens (then its live hypotheses count as finished).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xasr import checks
from xasr.models.protocol import DecoderCache

NEG = float("-inf")


@dataclass(frozen=True)
class AttentionSearch:
    """The attention decoding strategy (``xasr.decode.strategy``); ``beam_width`` 1 and
    ``ctc_weight`` 0 is greedy decoding."""

    vocab: object
    beam_width: int = 1
    length_penalty: float = 1.0
    ctc_weight: float = 0.0
    max_length_ratio: float = 1.0  # tokens per encoder frame (4x subsampled: 25 per second)

    def __post_init__(self):
        checks.integer("--beam-width", self.beam_width, at_least=1)
        checks.number("--length-penalty", self.length_penalty, at_least=0)
        checks.number("--ctc-weight", self.ctc_weight, at_least=0, at_most=1)
        checks.number("max_length_ratio", self.max_length_ratio, above=0)

    @property
    def name(self) -> str:
        if self.ctc_weight > 0:
            return "joint-ctc-attention"
        return "attention-greedy" if self.beam_width == 1 else "attention-beam"

    def info(self) -> dict:
        return {
            "name": self.name,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
            "ctc_weight": self.ctc_weight,
        }

    def encode(self, model, audio: Tensor, lengths: Tensor):
        states, frames = model.encode(audio, lengths)
        ctc = model.ctc_log_probs(states) if self.ctc_weight > 0 else None
        return states, frames, ctc

    def search(self, model, state) -> list[str]:
        return [self.vocab.decode(ids) for ids in self.search_ids(model, *state)]

    def search_ids(
        self, model, states: Tensor, frames: Tensor, ctc: Tensor | None
    ) -> list[list[int]]:
        """Token ids (without start/end) of the best hypothesis of each utterance."""
        if self.beam_width == 1 and ctc is None:
            return greedy_search(model, states, frames, self.max_length_ratio)
        return BeamSearch(self, model, states, frames, ctc).run()


@torch.no_grad()
def greedy_search(model, states: Tensor, frames: Tensor, ratio: float) -> list[list[int]]:
    """The most likely next token at each step, for the whole batch at once."""
    batch = states.shape[0]
    limits = max_lengths(frames, ratio)
    tokens = torch.full((batch, 1), model.sos_id, dtype=torch.long, device=states.device)
    done = torch.zeros(batch, dtype=torch.bool, device=states.device)
    cache = DecoderCache()
    for step in range(int(limits.max())):
        log_probs = model.next_token_log_probs(tokens, states, frames, cache)
        log_probs[:, model.blank_id] = NEG  # the blank is CTC's, never the decoder's
        best = torch.where(done, model.eos_id, log_probs.argmax(-1))
        tokens = torch.cat([tokens, best[:, None]], dim=1)
        done |= (best == model.eos_id) | (step + 1 >= limits)
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(model.eos_id)] if model.eos_id in row else row)
    return out


def max_lengths(frames: Tensor, ratio: float) -> Tensor:
    return (frames.float() * ratio).ceil().long().clamp(min=1)


class CtcPrefixScorer:
    """CTC prefix log-probabilities of every one-token extension of N hypotheses at once.

    ``log_probs``: (N, frames, vocab) CTC log-probabilities, ``lengths``: (N,). State per
    hypothesis: the log-probability of its prefix over frames 0..t ending in a non-blank
    (``r_n``) or a blank (``r_b``), shape = (frames, N); its prefix score; its last token.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int):
        self.x = log_probs.transpose(0, 1)  # (frames, N, vocab)
        self.lengths = lengths
        self.blank = blank
        frames, n, _ = self.x.shape
        self.r_n = torch.full((frames, n), NEG, device=log_probs.device)
        self.r_b = torch.cumsum(self.x[:, :, blank], dim=0)  # the empty prefix: all blanks
        self.prefix = torch.zeros(n, device=log_probs.device)
        self.last = torch.full((n,), -1, dtype=torch.long, device=log_probs.device)
        self.started = False  # whether the prefix has a token yet

    def extensions(self) -> tuple[Tensor, Tensor, Tensor]:
        """-> (scores (N, vocab + 1): log p_ctc(prefix + c), the end token last, with
        r_n and r_b of every extension, (frames, N, vocab))."""
        x = self.x
        frames, n, vocab = x.shape
        same = torch.arange(vocab, device=x.device)[None, :] == self.last[:, None]  # (N, vocab)
        # phi[t]: the prefix over frames 0..t, ready for c to start at frame t + 1 (after a
        # blank, or after a different last token).
        phi = torch.logaddexp(self.r_b[:, :, None], self.r_n[:, :, None].expand(-1, -1, vocab))
        phi = torch.where(same[None], self.r_b[:, :, None], phi)
        r_n = torch.full((frames, n, vocab), NEG, device=x.device)
        r_b = torch.full((frames, n, vocab), NEG, device=x.device)
        if not self.started:
            r_n[0] = x[0]
        for t in range(1, frames):
            r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + x[t]
            r_b[t] = torch.logaddexp(r_n[t - 1], r_b[t - 1]) + x[t, :, self.blank, None]
        valid = torch.arange(frames, device=x.device)[:, None] < self.lengths[None, :]
        starts = torch.cat([r_n[:1], phi[:-1] + x[1:]], dim=0)  # c emitted first at frame t
        starts = starts.masked_fill(~valid[:, :, None], NEG)
        scores = torch.logsumexp(starts, dim=0)  # (N, vocab)
        scores[:, self.blank] = NEG
        last_frame = (self.lengths - 1).clamp(min=0)
        index = torch.arange(n, device=x.device)
        end = torch.logaddexp(self.r_n[last_frame, index], self.r_b[last_frame, index])
        return torch.cat([scores, end[:, None]], dim=1), r_n, r_b

    def select(self, rows: Tensor, tokens: Tensor, scores: Tensor, r_n: Tensor, r_b: Tensor):
        """Keep hypothesis ``rows[i]`` extended by ``tokens[i]`` (not the end token) as the new
        hypothesis i; ``scores``, ``r_n``, ``r_b``: what ``extensions`` returned."""
        self.r_n = r_n[:, rows, tokens]
        self.r_b = r_b[:, rows, tokens]
        self.prefix = scores[rows, tokens]
        self.last = tokens
        self.started = True


class BeamSearch:
    """One batched beam search (see the module docstring); ``run()`` -> token ids."""

    def __init__(self, opts: AttentionSearch, model, states, frames, ctc: Tensor | None):
        self.opts, self.model = opts, model
        k = opts.beam_width
        self.batch = states.shape[0]
        self.states = states.repeat_interleave(k, dim=0)  # (batch * k, frames, d_model)
        self.frames = frames.repeat_interleave(k)
        self.limits = max_lengths(frames, opts.max_length_ratio).tolist()
        self.scorer = (
            CtcPrefixScorer(ctc.repeat_interleave(k, dim=0), self.frames, model.blank_id)
            if ctc is not None
            else None
        )
        self.finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(self.batch)]
        self.done = [False] * self.batch
        self.cache = DecoderCache()  # rows follow the live hypotheses, as ``tokens`` does

    @torch.no_grad()
    def run(self) -> list[list[int]]:
        k, model = self.opts.beam_width, self.model
        device = self.states.device
        tokens = torch.full((self.batch * k, 1), model.sos_id, dtype=torch.long, device=device)
        scores = torch.full((self.batch, k), NEG, device=device)
        scores[:, 0] = 0.0  # one live hypothesis (the empty one) per utterance at first
        for step in range(max(self.limits)):
            joint, ctc = self.step_scores(tokens)
            width = joint.shape[1]
            total = (scores.reshape(-1, 1) + joint).reshape(self.batch, k * width)
            best, index = total.topk(k, dim=1)  # (batch, k)
            beam, token = index // width, index % width
            rows = (torch.arange(self.batch, device=device)[:, None] * k + beam).reshape(-1)
            token_flat = token.reshape(-1)
            scores = self.move_finished(best, token, tokens, rows, step)
            tokens = torch.cat([tokens[rows], token_flat[:, None]], dim=1)
            self.cache.select(rows)
            if self.scorer is not None:
                keep = torch.where(token_flat == model.eos_id, 0, token_flat)
                self.scorer.select(rows, keep, *ctc)
            if all(self.done):
                break
        return [self.best(b) for b in range(self.batch)]

    def step_scores(self, tokens: Tensor):
        """Per-token score increments of every live hypothesis, (batch * k, vocab + 1)."""
        log_probs = self.model.next_token_log_probs(tokens, self.states, self.frames, self.cache)
        log_probs[:, self.model.blank_id] = NEG
        if self.scorer is None:
            return log_probs, None
        ctc_scores, r_n, r_b = self.scorer.extensions()
        w = self.opts.ctc_weight
        increment = ctc_scores - self.scorer.prefix[:, None]
        # A prefix CTC rules out (an ended slot's row, kept for its shape) extends to nothing.
        increment = increment.masked_fill(self.scorer.prefix[:, None] == NEG, NEG)
        joint = w * increment if w == 1 else (1 - w) * log_probs + w * increment  # 0 * -inf
        return joint, (ctc_scores, r_n, r_b)

    def move_finished(self, best, token, tokens, rows, step) -> Tensor:
        """Record hypotheses that ended (or reached the length limit); returns the live
        scores (batch, k), -inf for slots that ended and for done utterances."""
        eos = self.model.eos_id
        k = self.opts.beam_width
        # One transfer to the CPU per step, then plain Python per utterance.
        live, token_l, prefixes = best.tolist(), token.tolist(), tokens[rows, 1:].tolist()
        for b in range(self.batch):
            if self.done[b]:
                live[b] = [NEG] * k
                continue
            for j in range(k):
                score = live[b][j]
                if score == NEG:
                    continue
                ended = token_l[b][j] == eos
                if ended or step + 1 >= self.limits[b]:
                    ids = prefixes[b * k + j] + ([] if ended else [token_l[b][j]])
                    # a cut hypothesis has no end token: its length is its tokens
                    length = len(ids) + 1 if ended else len(ids)
                    self.finished[b].append((self.normalised(score, length), ids))
                    live[b][j] = NEG
            if self.utterance_done(b, max(live[b]), step):
                self.done[b] = True
                live[b] = [NEG] * k
        return torch.tensor(live, device=best.device)

    def utterance_done(self, b: int, best_live: float, step: int) -> bool:
        """No live hypothesis left, or ``beam_width`` finished ones of which the best beats the
        best live hypothesis were it to end now (its length then: step + 2 with the end)."""
        if best_live == NEG:
            return True
        if len(self.finished[b]) < self.opts.beam_width:
            return False
        return self.normalised(best_live, step + 2) <= max(f for f, _ in self.finished[b])

    def normalised(self, score: float, length: int) -> float:
        return score / length**self.opts.length_penalty

    def best(self, b: int) -> list[int]:
        if not self.finished[b]:
            return []
        return max(self.finished[b], key=lambda pair: pair[0])[1]
