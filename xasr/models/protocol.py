"""The model protocol: what training, transfer, decoding and export ask of a model, whatever
its family. Every family (``xasr.models.ctc``, ``xasr.models.aed``) and the pretrained
wrappers (``xasr.models.pretrained``) satisfy ``AsrModel``; the encoder-decoder also
``AttentionDecoderModel``; a model that is only trained (continued self-supervised
pre-training, ``xasr.models.ssl``) ``TrainableModel``. ``tests/test_protocol.py`` checks each
family registered in ``xasr.models.build``.

Callers ask a model what it can do (``has_ctc``, ``has_decoder``), never which family it is:
a new family is one module that satisfies these protocols, plus one registration (its config
class and builder in ``xasr.models.build.FAMILIES``). The model's config says the same
capabilities without building the model (``xasr.config.FamilyConfig``).

Shapes: audio (batch, samples) at 16 kHz, lengths (batch,) in samples; encoder states (batch,
frames, d_model), frame lengths (batch,); CTC log-probabilities (batch, frames, vocab) in fp32.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class TrainableModel(Protocol):
    """What the training loop (``xasr.train``) and language masks (``xasr.models.masks``) ask.

    ``has_ctc``: CTC log-probabilities over the vocabulary (``ctc_log_probs``) to decode with;
    ``has_decoder``: an attention decoder (``AttentionDecoderModel``). A model with neither has
    nothing to decode: its validation is its loss."""

    has_ctc: bool
    has_decoder: bool

    def loss(self, batch: dict, augment=None) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of an ``AsrDataset`` batch and its named parts; ``augment``
        (e.g. SpecAugment) is applied in training."""
        ...

    def vocab_params(self) -> dict[str, int]:
        """Parameters indexed by the vocabulary: {name: the axis of the tokens}. Every
        vocabulary change (``xasr.transfer.vocab_rows``) goes through these and only these."""
        ...

    def fixed_parameters(self) -> tuple[str, ...]:
        """Parameters that never train, whatever is frozen."""
        ...


@runtime_checkable
class AsrModel(TrainableModel, Protocol):
    """A speech recogniser: ``features`` (audio -> features), ``frontend`` (subsampling),
    ``encoder`` (whose ``layers`` layer surgery drops, re-initialises and freezes) and a CTC
    ``head`` (None when the model has no CTC branch); ``blank_id``: the CTC blank's index (0 in
    every xasr vocabulary)."""

    blank_id: int
    features: nn.Module
    frontend: nn.Module
    encoder: nn.Module
    head: nn.Module | None

    def encode(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        """audio (batch, samples), lengths -> encoder states (batch, frames, d_model), frame
        lengths (batch,)."""
        ...

    def ctc_log_probs(self, states: Tensor) -> Tensor:
        """Encoder states -> CTC log-probabilities (batch, frames, vocab) in fp32; an
        ``XasrError`` where ``has_ctc`` is False."""
        ...

    def transferable_prefixes(self) -> tuple[str, ...]:
        """Parameter-name prefixes that copy by name from a source (less ``vocab_params``)."""
        ...


@runtime_checkable
class AttentionDecoderModel(AsrModel, Protocol):
    """An ``AsrModel`` with an attention decoder (``has_decoder``), as the attention search
    (``xasr.decode.attention``) drives it: ``sos_id`` starts every prefix and ``eos_id`` ends
    a hypothesis (the decoder's vocabulary is the model's plus that token)."""

    sos_id: int
    eos_id: int

    def next_token_log_probs(
        self, tokens: Tensor, states: Tensor, lengths: Tensor, cache: DecoderCache | None = None
    ) -> Tensor:
        """Log-probabilities (batch, vocab + 1) of the token after each prefix ``tokens``
        (batch, length); ``cache`` holds the decoder's states of earlier calls' prefixes."""
        ...


class DecoderCache:
    """What an incremental decoding has computed so far, per decoder layer: the self-attention
    keys and values of the tokens already decoded, (batch, heads, length, head_dim), and the
    cross-attention keys and values of the encoder states, (batch, heads, frames, head_dim),
    so that a step runs the decoder on the newest token only and projects the encoder states
    once. ``select(rows)`` follows a beam search's choice of hypotheses. The search makes it
    (``xasr.decode.attention``), the decoder fills it (``xasr.models.aed``): it lives here,
    with the protocol both sides speak."""

    def __init__(self):
        self.layers: list[tuple[Tensor, ...]] = []

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0

    def select(self, rows: Tensor) -> None:
        self.layers = [tuple(x[rows] for x in layer) for layer in self.layers]
