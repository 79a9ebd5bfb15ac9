"""80-dim log-mel features on torch.stft, and SpecAugment masks, both batched on the device.

Written on torch instead of torchaudio (which would pin an old torch and gigabytes of CUDA
wheels). Features are computed inside the model, so a checkpoint takes raw 16 kHz audio and
the GPU computes them with the rest of the forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xasr.data.audio import SAMPLE_RATE

WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512


def mel_filterbank(
    n_mels: int,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 20.0,
    f_max: float | None = None,
) -> Tensor:
    """Triangular HTK-mel filters, shape = (n_fft // 2 + 1, n_mels)."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(hz):
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = hz[:-2], hz[1:-1], hz[2:]
    rising = (bins[:, None] - lower) / (center - lower)
    falling = (upper - bins[:, None]) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def frame_lengths(sample_lengths: Tensor) -> Tensor:
    """Number of feature frames for each waveform length (centred STFT)."""
    return sample_lengths // HOP_LENGTH + 1


class LogMel(nn.Module):
    """Waveforms to per-utterance-normalised log-mel frames.

    forward(audio, lengths): audio : Tensor, shape = (batch, samples), lengths : (batch,)
    returns feats : Tensor, shape = (batch, frames, n_mels), and frame lengths : (batch,)
    """

    hop = HOP_LENGTH  # samples per feature frame

    def __init__(self, n_mels: int = 80):
        super().__init__()
        # Not persistent: fixed by the formula, so checkpoints hold only learned weights.
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_mels), persistent=False)

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            # Zero (not reflect) padding at the edges: in a batch, a short utterance's last
            # frames see the zeros of the padding, so alone they must see zeros too.
            spec = torch.stft(
                audio.float(),
                N_FFT,
                HOP_LENGTH,
                WIN_LENGTH,
                self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (batch, freq, frames)
            feats = torch.log(power.transpose(1, 2) @ self.filters + 1e-6)
            frames = frame_lengths(lengths)
            return normalize_per_utterance(feats, frames), frames


def padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """True at valid positions, shape = (batch, max_length)."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def normalize_per_utterance(feats: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance per utterance and mel bin over valid frames; padding stays 0.

    Per-utterance statistics need nothing stored with the model and make a model move between
    corpora and microphones without recomputing global statistics.
    """
    mask = padding_mask(lengths, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
    count = mask.sum(1, keepdim=True).clamp(min=1)
    mean = (feats * mask).sum(1, keepdim=True) / count
    var = ((feats - mean).square() * mask).sum(1, keepdim=True) / count
    return (feats - mean) / torch.sqrt(var + 1e-5) * mask


def spec_augment(
    feats: Tensor,
    lengths: Tensor,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_fraction: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment frequency and time masks (no time warp), vectorised over the batch.

    feats : Tensor, shape = (batch, frames, n_mels); masked values become 0 (the mean after
    normalisation). Time masks are at most ``time_fraction`` of each utterance long.
    """
    batch, frames, n_mels = feats.shape
    device = feats.device
    keep = torch.ones(batch, frames, n_mels, dtype=torch.bool, device=device)
    mel_index = torch.arange(n_mels, device=device)
    frame_index = torch.arange(frames, device=device)

    def rand(*shape):  # drawn on the CPU so a seeded generator gives the same masks anywhere
        return torch.rand(*shape, generator=generator, device="cpu").to(device)

    for _ in range(freq_masks):
        width = (rand(batch) * (freq_width + 1)).long()
        start = (rand(batch) * (n_mels - width).clamp(min=1)).long()
        hit = (mel_index >= start[:, None]) & (mel_index < (start + width)[:, None])
        keep &= ~hit[:, None, :]
    max_width = (lengths.float() * time_fraction).long()
    for _ in range(time_masks):
        width = (rand(batch) * (max_width + 1).float()).long()
        start = (rand(batch) * (lengths - width).clamp(min=1).float()).long()
        hit = (frame_index >= start[:, None]) & (frame_index < (start + width)[:, None])
        keep &= ~hit[:, :, None]
    return feats * keep
