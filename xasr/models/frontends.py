"""Convolutional front ends: log-mel frames to encoder frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions (4x fewer frames), then a projection to ``d_model``.

    forward(x, lengths): x : Tensor, shape = (batch, frames, n_mels)
    returns y : Tensor, shape = (batch, frames', d_model), with frames' = ceil-ish(frames / 4)

    Output frames past an utterance's own length are not meaningful (they are zero on CPU and
    whatever the bias makes them on GPU); everything downstream masks them.

    ``per_utterance``: run the convolutions one utterance at a time (``_forward_each``);
    None (default) does so on CPU only. False forces the batched path, e.g. for a traced or
    exported graph, whose shapes cannot depend on each utterance's length.
    """

    stride = 4  # feature frames per output frame

    def __init__(self, n_mels: int, d_model: int, channels: int, per_utterance: bool | None = None):
        super().__init__()
        self.per_utterance = per_utterance
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        freq = ((n_mels + 1) // 2 + 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: Tensor | int) -> Tensor | int:
        for _ in range(2):
            lengths = (lengths + 1) // 2  # kernel 3, stride 2, padding 1
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        frames = self.output_lengths(x.shape[1])
        out_lengths = torch.clamp(self.output_lengths(lengths), max=frames)
        per_utterance = self.per_utterance
        if per_utterance is None:  # on CPU (see _forward_each); on GPU batched calls are faster
            per_utterance = x.device.type == "cpu"
        if per_utterance:
            return self._forward_each(x, lengths, frames), out_lengths
        return self._forward_batched(x, lengths), out_lengths

    def _project(self, y: Tensor) -> Tensor:
        """(batch, channels, frames, freq) -> (batch, frames, d_model)."""
        batch, channels, frames, freq = y.shape
        return self.proj(y.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq))

    def _forward_each(self, x: Tensor, lengths: Tensor, frames: int) -> Tensor:
        """One utterance at a time, each cut to its own length.

        On CPU the front end is bound by memory traffic over its largest activation (channels x
        frames/2 x mels/2: 11 MB for 10 s at 128 channels), which conv1, SiLU, conv2 and their
        backward passes each read and write. One utterance's worth stays in the L3 cache from one
        op to the next, and no time is spent on padding: 2x faster forward + backward than the
        batched call on a 2-core EPYC (bench/speed.py's batch). Cutting at the length gives the
        same valid frames as the masked batched path: both convolve zeros past the end.
        """
        outputs = []
        for utterance, length in zip(x, lengths.tolist()):
            frames_in = max(length, 1)
            y = self.conv(utterance[None, None, :frames_in])  # (1, channels, frames', freq')
            y = self._project(y)
            outputs.append(F.pad(y, (0, 0, 0, frames - y.shape[1])))
        return torch.cat(outputs)

    def _forward_batched(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The whole batch in one call per op: faster on GPU, where launches dominate."""
        conv1, act1, conv2, act2 = self.conv
        # Zero the padded frames of the first convolution's output too: SiLU(bias) there would
        # otherwise leak into the last valid frame of the second one, so an utterance's output
        # would depend on what it is batched with.
        y = act1(conv1(x.unsqueeze(1)))  # (batch, channels, frames', freq')
        valid = torch.arange(y.shape[2], device=y.device)[None, :] < ((lengths + 1) // 2)[:, None]
        # In place: SiLU's backward needs its input, not this output; saves a pass over the
        # largest activation of the model (batch x channels x frames/2 x mels/2).
        y = act2(conv2(y.mul_(valid[:, None, :, None].to(y.dtype))))
        return self._project(y)
