"""Convolutional front ends: log-mel frames to encoder frames."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions (4x fewer frames), then a projection to ``d_model``.

    forward(x, lengths): x : Tensor, shape = (batch, frames, n_mels)
    returns y : Tensor, shape = (batch, frames', d_model), with frames' = ceil-ish(frames / 4)
    """

    def __init__(self, n_mels: int, d_model: int, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        freq = ((n_mels + 1) // 2 + 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        for _ in range(2):
            lengths = (lengths + 1) // 2  # kernel 3, stride 2, padding 1
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        conv1, act1, conv2, act2 = self.conv
        # Zero the padded frames of the first convolution's output too: SiLU(bias) there would
        # otherwise leak into the last valid frame of the second one, so an utterance's output
        # would depend on what it is batched with.
        y = act1(conv1(x.unsqueeze(1)))  # (batch, channels, frames', freq')
        valid = torch.arange(y.shape[2], device=y.device)[None, :] < ((lengths + 1) // 2)[:, None]
        # In place: SiLU's backward needs its input, not this output; saves a pass over the
        # largest activation of the model (batch x channels x frames/2 x mels/2).
        y = act2(conv2(y.mul_(valid[:, None, :, None].to(y.dtype))))
        batch, channels, frames, freq = y.shape
        y = self.proj(y.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq))
        return y, torch.clamp(self.output_lengths(lengths), max=frames)
