"""The CTC model: features, front end, encoder, linear head. A vocabulary change is a head swap.

It satisfies the model protocol (``xasr.models.protocol.AsrModel``) that every training,
transfer and decoding path relies on, as the attention encoder-decoder (``xasr.models.aed``)
and the pretrained encoders (``xasr.models.pretrained``) do. ``forward`` gives the CTC
log-probabilities of audio (what the ONNX export computes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from xasr.config import ModelConfig
from xasr.data.features import LogMel
from xasr.models.conformer import ConformerEncoder
from xasr.models.frontends import Conv2dSubsampling


def ctc_loss(log_probs: Tensor, lengths: Tensor, batch: dict, blank: int) -> Tensor:
    """Mean CTC loss of a batch; ``log_probs`` (batch, frames, vocab), ``lengths`` (batch,)."""
    # ctc_loss wants (frames, batch, vocab); "mean" divides each utterance's loss by its
    # target length, so long and short utterances weigh alike.
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        batch["targets"],
        lengths,
        batch["target_lengths"],
        blank=blank,
        reduction="mean",
        zero_infinity=True,
    )


def encode_audio(model: nn.Module, audio: Tensor, lengths: Tensor, augment=None):
    """Both families' encoder path: ``model.features`` (log-mel), ``augment`` in training,
    ``model.frontend`` (4x fewer frames), ``model.encoder`` -> states, frame lengths."""
    feats, lengths = model.features(audio, lengths)
    if augment is not None:
        feats = augment(feats, lengths)
    x, lengths = model.frontend(feats, lengths)
    return model.encoder(x, lengths)


class CtcModel(nn.Module):
    """forward(audio, lengths) -> log_probs : Tensor, shape = (batch, frames, vocab), lengths.

    ``augment`` (optional) is applied to the features in training, e.g. SpecAugment.
    ``blank_id``: the CTC blank's index (0 in every xasr vocabulary).
    """

    blank_id = 0
    has_ctc = True  # capabilities (xasr.models.protocol): decoded by CTC search
    has_decoder = False

    def __init__(
        self, features: nn.Module, frontend: nn.Module, encoder: nn.Module, head: nn.Linear
    ):
        super().__init__()
        self.features = features
        self.frontend = frontend
        self.encoder = encoder
        self.head = head

    def encode(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        """audio (batch, samples) -> encoder states (batch, frames, d_model), frame lengths."""
        return encode_audio(self, audio, lengths, augment)

    def ctc_log_probs(self, states: Tensor) -> Tensor:
        """Encoder states (batch, frames, d_model) -> CTC log-probabilities (batch, frames,
        vocab), in fp32."""
        return F.log_softmax(self.head(states).float(), dim=-1)

    def forward(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        x, lengths = self.encode(audio, lengths, augment)
        return self.ctc_log_probs(x), lengths

    def loss(self, batch: dict, augment=None) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of an ``AsrDataset`` batch and its parts ({"ctc": ...})."""
        log_probs, lengths = self(batch["audio"], batch["audio_lengths"], augment)
        loss = ctc_loss(log_probs, lengths, batch, self.blank_id)
        return loss, {"ctc": loss}

    def vocab_params(self) -> dict[str, int]:
        """Parameters indexed by the vocabulary: {name: the axis of the tokens}. Every
        vocabulary change (``xasr.transfer.vocab_rows``) goes through these and only these."""
        return {"head.weight": 0, "head.bias": 0}

    def transferable_prefixes(self) -> tuple[str, ...]:
        """Parameters that do not depend on the vocabulary and copy by name from a source."""
        return ("frontend.", "encoder.")

    def fixed_parameters(self) -> tuple[str, ...]:
        """Parameters that never train, whatever is frozen (none here; a pretrained wav2vec2's
        convolutional feature encoder, ``xasr.models.pretrained``)."""
        return ()


def build_ctc(cfg: ModelConfig, vocab_size: int) -> CtcModel:
    """The untrained Conformer CTC model of ``cfg`` with a head of ``vocab_size`` rows."""
    return CtcModel(
        features=LogMel(cfg.n_mels),
        frontend=Conv2dSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling_channels),
        encoder=ConformerEncoder(cfg),
        head=nn.Linear(cfg.d_model, vocab_size),
    )
