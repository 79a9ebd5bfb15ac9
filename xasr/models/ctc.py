"""The CTC model: features, front end, encoder, linear head. A vocabulary change is a head swap."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CtcModel(nn.Module):
    """forward(audio, lengths) -> log_probs : Tensor, shape = (batch, frames, vocab), lengths.

    ``augment`` (optional) is applied to the features in training, e.g. SpecAugment.
    """

    def __init__(
        self, features: nn.Module, frontend: nn.Module, encoder: nn.Module, head: nn.Linear
    ):
        super().__init__()
        self.features = features
        self.frontend = frontend
        self.encoder = encoder
        self.head = head

    def encode(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        feats, lengths = self.features(audio, lengths)
        if augment is not None:
            feats = augment(feats, lengths)
        x, lengths = self.frontend(feats, lengths)
        return self.encoder(x, lengths)

    def forward(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        x, lengths = self.encode(audio, lengths, augment)
        return F.log_softmax(self.head(x).float(), dim=-1), lengths
