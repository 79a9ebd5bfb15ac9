"""The decoding options of ``evaluate`` and ``transcribe``, and the strategy they name.

``decoder``: ``default`` (``default_strategy``: greedy CTC for a CTC model, greedy attention for
an encoder-decoder; with ``lm``, the CTC beam search with that n-gram LM), ``ctc`` (greedy CTC, or
the LM beam search with ``lm``: for an encoder-decoder, on its CTC branch), ``attention``
(attention beam search) or ``joint`` (attention beam search scored jointly with the CTC branch,
weight ``ctc_weight``). No torch at import: ``xasr transcribe --onnx`` reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xasr import checks
from xasr.errors import XasrError

DECODERS = ("default", "ctc", "attention", "joint")
LM_BEAM_WIDTH = 32  # the CTC beam search with an LM
ATTENTION_BEAM_WIDTH = 4  # attention and joint beam search


@dataclass(frozen=True)
class DecodingOptions:
    decoder: str = "default"
    lm: str | None = None  # a KenLM n-gram model (xasr build-lm): CTC beam search
    beam_width: int | None = None  # None: LM_BEAM_WIDTH with an LM, else ATTENTION_BEAM_WIDTH
    lm_weight: float = 0.5
    word_bonus: float = 1.0
    length_penalty: float = 1.0  # attention: finished hypotheses ranked by score / length^p
    ctc_weight: float = 0.3  # joint: the CTC prefix score's weight

    def __post_init__(self):
        checks.one_of("--decoder", self.decoder, DECODERS)
        if self.beam_width is not None:
            checks.integer("--beam-width", self.beam_width, at_least=1)
        checks.number("--lm-weight", self.lm_weight, at_least=0)
        checks.number("--word-bonus", self.word_bonus)
        checks.number("--length-penalty", self.length_penalty, at_least=0)
        checks.number("--ctc-weight", self.ctc_weight, at_least=0, at_most=1)
        if self.lm is not None:
            if self.decoder in ("attention", "joint"):
                raise XasrError(
                    f"--lm fuses an n-gram LM into CTC beam search; drop it or use --decoder ctc "
                    f"instead of {self.decoder}"
                )
            if not Path(self.lm).is_file():
                raise XasrError(f"--lm {self.lm} does not exist; `xasr build-lm` makes one")

    def strategy(self, model, vocab):
        """The decoding strategy (``xasr.decode.strategy``) for ``model`` and its vocabulary."""
        if self.lm is not None or self.decoder == "ctc":
            return self.ctc_strategy(vocab) or _greedy_ctc(vocab)
        if self.decoder == "default":
            return default_strategy(model, vocab)
        if not model.has_decoder:  # a capability, not a type
            raise XasrError(
                f"--decoder {self.decoder} needs an attention decoder; this is a CTC model: "
                "use --decoder ctc (or default)"
            )
        from xasr.decode.attention import AttentionSearch

        return AttentionSearch(
            vocab,
            beam_width=self.beam_width or ATTENTION_BEAM_WIDTH,
            length_penalty=self.length_penalty,
            ctc_weight=self.ctc_weight if self.decoder == "joint" else 0.0,
        )

    def ctc_strategy(self, vocab):
        """The LM beam search of ``lm`` (None without one: greedy). The ONNX path uses it."""
        if self.lm is None:
            return None
        from xasr.decode.lm import LmDecoder

        width = self.beam_width or LM_BEAM_WIDTH
        return LmDecoder(vocab, self.lm, width, self.lm_weight, self.word_bonus)


def default_strategy(model, vocab):
    """The strategy validation and ``evaluate`` use unless told otherwise, by what the model
    can do (``xasr.models.protocol``): greedy attention decoding, batched, for a model with an
    attention decoder; greedy CTC for one with a CTC head; None for a model with nothing to
    decode (a pre-training task: its validation is its loss)."""
    if model.has_decoder:
        from xasr.decode.attention import AttentionSearch

        return AttentionSearch(vocab)
    return _greedy_ctc(vocab) if model.has_ctc else None


def _greedy_ctc(vocab):
    from xasr.decode.greedy import GreedyCtc

    return GreedyCtc(vocab)
