"""The attention encoder-decoder (AED): the shape of the meta-transfer and speech-translation
papers' models, with an optional CTC branch (hybrid CTC/attention, Watanabe et al. 2017).

features -> VGG front end (two blocks of two 3x3 convolutions and a 2x2 max-pooling: 4x fewer
frames) -> Conformer or Transformer encoder -> Transformer decoder over the vocabulary plus one
start/end token (index ``len(vocab)``, owned by the model: vocab.json is the CTC model's) and,
with ``ctc_weight`` > 0, a linear CTC head on the encoder named ``head`` as in ``CtcModel``, so
that a CTC model's head transfers into it row by row.

It satisfies the model protocol (``xasr.models.protocol``: ``AsrModel`` and
``AttentionDecoderModel``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.config import AedConfig
from xasr.data.features import LogMel, padding_mask
from xasr.errors import XasrError
from xasr.models.conformer import ConformerEncoder
from xasr.models.ctc import ctc_loss, encode_audio
from xasr.models.frontends import Conv2dSubsampling
from xasr.models.protocol import DecoderCache

IGNORE = -100  # cross-entropy's ignore_index: padding positions of the decoder targets


class VggFrontend(nn.Module):
    """Two VGG blocks (3x3 conv, ReLU, 3x3 conv, ReLU, 2x2 max-pool), then a projection.

    forward(x, lengths): x : Tensor, shape = (batch, frames, n_mels)
    returns y : Tensor, shape = (batch, ceil(ceil(frames / 2) / 2), d_model), lengths.
    Padded frames are zeroed after every convolution, so an utterance's output does not depend
    on what it is batched with.
    """

    stride = 4  # feature frames per output frame (two 2x2 poolings): word times, export

    def __init__(self, n_mels: int, d_model: int, channels: int):
        super().__init__()
        c1, c2 = channels, 2 * channels
        self.block1 = nn.ModuleList(
            [nn.Conv2d(1, c1, 3, padding=1), nn.Conv2d(c1, c1, 3, padding=1)]
        )
        self.block2 = nn.ModuleList(
            [nn.Conv2d(c1, c2, 3, padding=1), nn.Conv2d(c2, c2, 3, padding=1)]
        )
        freq = ((n_mels + 1) // 2 + 1) // 2
        self.proj = nn.Linear(c2 * freq, d_model)

    @staticmethod
    def output_lengths(lengths: Tensor | int) -> Tensor | int:
        for _ in range(2):
            lengths = (lengths + 1) // 2  # 2x2 max-pooling, ceil mode
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        y = x.unsqueeze(1)  # (batch, 1, frames, n_mels)
        for block in (self.block1, self.block2):
            valid = padding_mask(lengths, y.shape[2])[:, None, :, None].to(y.dtype)
            for conv in block:
                y = F.relu(conv(y)) * valid
            y = F.max_pool2d(y, 2, ceil_mode=True)
            lengths = (lengths + 1) // 2
        batch, channels, frames, freq = y.shape
        return self.proj(y.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)), lengths


def sinusoids(length: int, d_model: int, device) -> Tensor:
    """The Transformer's sinusoidal positions, shape = (length, d_model)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(length, d_model, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return table


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoidal positions, pre-norm ``nn.TransformerDecoderLayer``s, final
    LayerNorm, output layer over ``n_tokens`` (the vocabulary and the start/end token).

    forward(tokens, memory, memory_lengths): tokens (batch, length) int64, memory (batch,
    frames, d_model) -> logits (batch, length, n_tokens); position i sees tokens <= i. With a
    ``DecoderCache`` holding the first ``cache.length`` tokens' states, only the later positions
    are computed (and added to the cache): a decoding step costs one position, not the prefix.
    """

    def __init__(self, n_tokens: int, cfg: AedConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.embed = nn.Embedding(n_tokens, cfg.d_model)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                cfg.d_model,
                cfg.n_heads,
                cfg.d_model * cfg.ff_mult,
                cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.decoder_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, n_tokens)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_lengths: Tensor,
        last_only: bool = False,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        cache = DecoderCache() if cache is None else cache
        start, length = cache.length, tokens.shape[1]
        x = self.embed(tokens[:, start:]) * math.sqrt(self.d_model)
        x = x + sinusoids(length, self.d_model, tokens.device)[start:].to(x.dtype)
        # Boolean masks, True = attended (scaled_dot_product_attention's convention; valid
        # under any autocast dtype): new position start + i sees the positions <= it, and
        # every frame inside its utterance.
        positions = torch.arange(length, device=tokens.device)
        causal = positions[None, :] <= positions[start:, None]
        frames = padding_mask(memory_lengths, memory.shape[1])[:, None, None, :]
        kept = []
        for i, layer in enumerate(self.layers):
            past = cache.layers[i] if start else None
            x, keys_values = decoder_layer(layer, x, past, causal, memory, frames)
            kept.append(keys_values)
        cache.layers = kept
        if last_only:  # decoding needs the next token's scores only: skip the others' output
            x = x[:, -1:]
        return self.out(self.norm(x))


def decoder_layer(
    layer: nn.TransformerDecoderLayer,
    x: Tensor,
    past: tuple[Tensor, ...] | None,
    causal: Tensor,
    memory: Tensor,
    frames: Tensor,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``nn.TransformerDecoderLayer.forward`` with ``norm_first`` (its parameters, its
    computation) for new positions ``x`` (batch, n, d_model), written out so that keys and
    values are kept: ``past`` is what an earlier call returned (or None). ``causal`` (n,
    positions), ``frames`` (batch, 1, 1, frames): True where attended.
    -> (output (batch, n, d_model), (self keys, self values, memory keys, memory values))."""
    self_attn, cross = layer.self_attn, layer.multihead_attn
    q, k, v = projections(self_attn, layer.norm1(x), 0, 3)
    if past is None:
        memory_k, memory_v = projections(cross, memory, 1, 3)
    else:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        memory_k, memory_v = past[2], past[3]
    x = x + layer.dropout1(attend(self_attn, q, k, v, causal))
    (q,) = projections(cross, layer.norm2(x), 0, 1)
    x = x + layer.dropout2(attend(cross, q, memory_k, memory_v, frames))
    h = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x)))))
    return x + layer.dropout3(h), (k, v, memory_k, memory_v)


def projections(attn: nn.MultiheadAttention, x: Tensor, first: int, last: int) -> list[Tensor]:
    """The query (0), key (1) and value (2) projections ``first`` to ``last`` - 1 of ``x``
    (batch, n, d_model) by ``attn``'s packed in-projection, each split into heads: (batch,
    heads, n, head_dim)."""
    d, heads = attn.embed_dim, attn.num_heads
    rows = slice(first * d, last * d)
    projected = F.linear(x, attn.in_proj_weight[rows], attn.in_proj_bias[rows])
    batch, n, _ = x.shape
    split = projected.view(batch, n, last - first, heads, d // heads).permute(2, 0, 3, 1, 4)
    return list(split.unbind(0))


def attend(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """``attn``'s attention of queries ``q`` over ``k``/``v`` (batch, heads, *, head_dim) where
    ``mask`` is True, dropout on the weights as in training, heads merged and projected out."""
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    batch, _, n, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(batch, n, attn.embed_dim))


class AedModel(nn.Module):
    """``sos_id`` = ``eos_id`` = the vocabulary size (one token starts and ends a sentence).

    ``head``: the CTC branch (None when ``ctc_weight`` is 0). The loss is
    ``ctc_weight`` x CTC + (1 - ``ctc_weight``) x label-smoothed cross-entropy per token.
    """

    blank_id = 0
    has_decoder = True  # capabilities (xasr.models.protocol): decoded by attention search

    def __init__(
        self,
        features: nn.Module,
        frontend: nn.Module,
        encoder: nn.Module,
        decoder: TransformerDecoder,
        head: nn.Linear | None,
        vocab_size: int,
        ctc_weight: float,
        label_smoothing: float,
    ):
        super().__init__()
        self.features = features
        self.frontend = frontend
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.vocab_size = vocab_size
        self.sos_id = self.eos_id = vocab_size
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing

    @property
    def has_ctc(self) -> bool:
        """Whether there is a CTC branch (``ctc_weight`` > 0 in the config)."""
        return self.head is not None

    def encode(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        """audio (batch, samples) -> encoder states (batch, frames, d_model), frame lengths."""
        return encode_audio(self, audio, lengths, augment)

    def ctc_log_probs(self, states: Tensor) -> Tensor:
        if self.head is None:
            raise XasrError(
                "this attention model has no CTC branch (ctc_weight 0): decode with the "
                "attention decoder (--decoder attention)"
            )
        return F.log_softmax(self.head(states).float(), dim=-1)

    def next_token_log_probs(
        self, tokens: Tensor, states: Tensor, lengths: Tensor, cache: DecoderCache | None = None
    ) -> Tensor:
        """Log-probabilities (batch, vocab + 1) of the token after each prefix ``tokens``
        (batch, length), which start with ``sos_id``; in fp32. ``cache``: the decoder's states
        of ``tokens[:, :cache.length]`` from earlier calls (updated to all of ``tokens``)."""
        logits = self.decoder(tokens, states, lengths, last_only=True, cache=cache)[:, -1]
        return F.log_softmax(logits.float(), dim=-1)

    def loss(self, batch: dict, augment=None) -> tuple[Tensor, dict[str, Tensor]]:
        """The hybrid loss of an ``AsrDataset`` batch and its parts ({"attention", "ctc"})."""
        states, frames = self.encode(batch["audio"], batch["audio_lengths"], augment)
        inputs, targets = self.teacher_forcing(batch["targets"], batch["target_lengths"])
        logits = self.decoder(inputs, states, frames).float()
        attention = F.cross_entropy(
            logits.flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )
        parts = {"attention": attention}
        if self.head is None or self.ctc_weight == 0:
            return attention, parts
        parts["ctc"] = ctc_loss(self.ctc_log_probs(states), frames, batch, self.blank_id)
        loss = self.ctc_weight * parts["ctc"] + (1 - self.ctc_weight) * attention
        return loss, parts

    def teacher_forcing(self, targets: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Padded targets (batch, U) -> decoder inputs [sos, y1..yn] and outputs [y1..yn, eos]
        (batch, U + 1), the outputs padded with ``IGNORE``."""
        batch, width = targets.shape
        positions = torch.arange(width + 1, device=targets.device)[None, :]
        sos = torch.full((batch, 1), self.sos_id, dtype=targets.dtype, device=targets.device)
        inputs = torch.cat([sos, targets], dim=1)
        outputs = torch.cat([targets, torch.zeros_like(sos)], dim=1)
        outputs = torch.where(positions == lengths[:, None], self.eos_id, outputs)
        outputs = torch.where(positions > lengths[:, None], IGNORE, outputs)
        inputs = torch.where(positions > lengths[:, None], self.eos_id, inputs)
        return inputs, outputs

    def vocab_params(self) -> dict[str, int]:
        """Parameters indexed by the vocabulary (``xasr.transfer.vocab_rows``): the CTC head's
        rows, the decoder's embedding and output rows. The last rows of the decoder's are the
        start/end token's (past the vocabulary)."""
        names = {"decoder.embed.weight": 0, "decoder.out.weight": 0, "decoder.out.bias": 0}
        if self.head is not None:
            names.update({"head.weight": 0, "head.bias": 0})
        return names

    def transferable_prefixes(self) -> tuple[str, ...]:
        """Parameters that copy by name from a source (less ``vocab_params``)."""
        return ("frontend.", "encoder.", "decoder.")

    def fixed_parameters(self) -> tuple[str, ...]:
        """Parameters that never train (none)."""
        return ()


def build_aed(cfg: AedConfig, vocab_size: int) -> AedModel:
    if cfg.frontend == "vgg":
        frontend = VggFrontend(cfg.n_mels, cfg.d_model, cfg.vgg_channels)
    else:
        frontend = Conv2dSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling_channels)
    return AedModel(
        features=LogMel(cfg.n_mels),
        frontend=frontend,
        encoder=ConformerEncoder(cfg, block=cfg.encoder),
        decoder=TransformerDecoder(vocab_size + 1, cfg),
        head=nn.Linear(cfg.d_model, vocab_size) if cfg.ctc_weight > 0 else None,
        vocab_size=vocab_size,
        ctc_weight=cfg.ctc_weight,
        label_smoothing=cfg.label_smoothing,
    )
