"""How every decoding path calls a model: through a strategy object, never by the model's type.

A strategy (greedy CTC, CTC prefix beam search with an n-gram LM, attention greedy/beam search,
joint CTC/attention scoring) holds its options, fixed when it is made, and decodes in two steps,
so that callers can time the search apart from the network:

* ``encode(model, audio, lengths) -> state``: the model's encoder (and, for CTC search, its CTC
  log-probabilities), through the model protocol (``model.encode``, ``model.ctc_log_probs``);
* ``search(model, state) -> texts``: everything after the encoder (the CTC search, or the
  attention decoder's steps).

``info()`` names the strategy and its options in results. What a model can do (its
``has_decoder``, ``has_ctc``: ``xasr.models.protocol``) picks the strategy that validation and
``evaluate`` use by default (``xasr.decode.options.default_strategy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # no torch at import: `xasr transcribe --onnx` uses LmDecoder without it
    from torch import Tensor


class DecodingStrategy(Protocol):
    name: str

    def encode(self, model, audio: Tensor, lengths: Tensor) -> Any: ...

    def search(self, model, state: Any) -> list[str]: ...

    def info(self) -> dict: ...


def decode(strategy: DecodingStrategy, model, audio: Tensor, lengths: Tensor) -> list[str]:
    """Texts of a batch: audio (batch, samples), lengths (batch,) -> one text per utterance."""
    return strategy.search(model, strategy.encode(model, audio, lengths))


class CtcStrategy:
    """Base of the strategies that search the CTC log-probabilities (``decode_log_probs``)."""

    name = "ctc"

    def encode(self, model, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> CTC log-probabilities (batch, frames, vocab) and frame lengths (batch,)."""
        states, frames = model.encode(audio, lengths)
        return model.ctc_log_probs(states), frames

    def search(self, model, state: tuple[Tensor, Tensor]) -> list[str]:
        return self.decode_log_probs(*state)

    def decode_log_probs(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        raise NotImplementedError
