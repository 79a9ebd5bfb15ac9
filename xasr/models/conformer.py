"""Conformer encoder (Gulati et al. 2020) with rotary positions and fused attention.

Blocks follow the paper's macaron layout: half feed-forward, self-attention, convolution,
half feed-forward, final LayerNorm. Rotary position embeddings replace relative positional
encoding: they need no extra parameters and let attention run through
``scaled_dot_product_attention`` (flash/efficient kernels on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.config import ModelConfig
from xasr.data.features import padding_mask
from xasr.models.dropout import Dropout


def rotary_tables(length: int, head_dim: int, device) -> Tensor:
    """Unit complex rotations e^(i t theta_j), shape = (length, head_dim // 2), complex64."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(length, device=device).float()[:, None] * inv_freq[None, :]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate pairs of channels (x[2j], x[2j+1]) by the frame's angle for pair j.

    x : Tensor, shape = (..., frames, head_dim); rotation : (frames, head_dim // 2) complex.
    One complex multiply: (x1 + i x2)(cos + i sin) = (x1 cos - x2 sin) + i (x1 sin + x2 cos),
    a single pass forward and backward where the real-valued form takes six strided ones and
    a stack (a third of the attention's CPU time). Computed in fp32 (no bf16 complex type).
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * mult),
            nn.SiLU(),
            Dropout(dropout),
            nn.Linear(d_model * mult, d_model),
            Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.out_dropout = Dropout(dropout)
        self.attention_dropout = attention_dropout

    def forward(self, x: Tensor, attn_mask: Tensor, rotary: Tensor) -> Tensor:
        """x : (batch, frames, d_model); attn_mask : bool (batch, 1, 1, frames), True = attend;
        rotary : complex (frames, head_dim // 2), from ``rotary_tables``."""
        batch, frames, d_model = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, frames, 3, self.n_heads, -1)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, batch, heads, frames, head_dim)
        # split, not indexing: its backward is one cat, where indexing fills zeros per slice.
        qk, v = qkv.split([2, 1])
        q, k = apply_rotary(qk, rotary)  # q and k in one pass
        v = v.squeeze(0)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(batch, frames, d_model)
        return self.out_dropout(self.out(y))


class ConvModule(nn.Module):
    """Pointwise GLU, depthwise conv, LayerNorm (not BatchNorm: padding would skew its
    statistics and a transferred model would carry the source corpus's running stats), SiLU,
    pointwise."""

    def __init__(self, d_model: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x : (batch, frames, d_model); valid : (batch, frames, 1), zero at padding."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1) * valid
        y = F.silu(self.conv_norm(self._depthwise_over_time(y)))
        return self.dropout(self.pointwise_out(y))

    def _depthwise_over_time(self, y: Tensor) -> Tensor:
        """The depthwise convolution on (batch, frames, d_model) -> the same shape.

        Run as a (1 x kernel) conv2d on a channels-last view of ``y`` rather than a Conv1d on
        ``y.transpose(1, 2)``: no transposed copies, and oneDNN's channels-last depthwise kernel
        is 4x faster forward + backward on CPU (bench/speed.py's batch, 2 cores). The weights
        stay the Conv1d's, so checkpoints are unchanged.
        """
        conv = self.depthwise
        grid = y.unsqueeze(1).permute(0, 3, 1, 2)  # (batch, d_model, 1, frames), channels last
        out = F.conv2d(
            grid,
            conv.weight.unsqueeze(2),
            conv.bias,
            padding=(0, conv.padding[0]),
            groups=conv.groups,
        )
        return out.permute(0, 2, 3, 1).squeeze(1)


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ff1 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention_dropout)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x, attn_mask, valid, rotary):
        x = torch.add(x, self.ff1(x), alpha=0.5)  # one pass instead of a mul and an add
        x = x + self.attn(x, attn_mask, rotary)
        x = x + self.conv(x, valid)
        x = torch.add(x, self.ff2(x), alpha=0.5)
        return self.norm(x)


class TransformerBlock(nn.Module):
    """A pre-norm Transformer encoder layer: self-attention, feed-forward, final LayerNorm.
    Its names differ from the Conformer block's on purpose: a Conformer's macaron half-step
    feed-forward is not a Transformer's, so a transfer between the two copies no layer."""

    def __init__(self, cfg):
        super().__init__()
        self.self_attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention_dropout)
        self.feed_forward = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x, attn_mask, valid, rotary):
        x = x + self.self_attn(x, attn_mask, rotary)
        return self.final_norm(x + self.feed_forward(x))


BLOCKS = {"conformer": ConformerBlock, "transformer": TransformerBlock}


class ConformerEncoder(nn.Module):
    """forward(x, lengths): x : Tensor, shape = (batch, frames, d_model) -> same shape, lengths.

    ``block``: "conformer" (default) or "transformer" layers (``BLOCKS``); ``cfg`` is any
    config with d_model, n_heads, n_layers, ff_mult, conv_kernel and the dropouts.
    """

    def __init__(self, cfg: ModelConfig, block: str = "conformer"):
        super().__init__()
        self.head_dim = cfg.d_model // cfg.n_heads
        self.layers = nn.ModuleList(BLOCKS[block](cfg) for _ in range(cfg.n_layers))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = padding_mask(lengths, x.shape[1])
        attn_mask = mask[:, None, None, :]
        valid = mask.unsqueeze(-1).to(x.dtype)
        rotary = rotary_tables(x.shape[1], self.head_dim, x.device)
        for layer in self.layers:
            x = layer(x, attn_mask, valid, rotary)
        return x, lengths
