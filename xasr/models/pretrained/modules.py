"""The network modules of the pretrained encoders (``xasr.models.pretrained``): Whisper's
features and front end, wav2vec2's convolutional front end, the waveform normalisation, and
``PretrainedCtcModel``, which puts them behind the model protocol. ``assemble`` makes one
from a Hugging Face module; the importers (``importers``, ``ctranslate2``) read directories
into it. Nothing here reads a directory: importers depend on these modules, never the reverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.config import PretrainedConfig
from xasr.errors import CheckpointError, DataError, XasrError
from xasr.models.ctc import CtcModel

SAMPLE_RATE = 16_000
WHISPER_HOP = 160  # samples per log-mel frame (10 ms)
WHISPER_FFT = 400
# config keys that describe a saved file rather than the model
HF_CONFIG_DROPPED = (
    "transformers_version",
    "_name_or_path",
    "architectures",
    "torch_dtype",
    "dtype",
)


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise XasrError(
            "pretrained encoders need transformers: pip install -e '.[hf]' (make installs it)"
        ) from None
    return transformers


def hf_config(cfg: PretrainedConfig):
    """The Hugging Face config object of ``cfg.hf_config``."""
    transformers = transformers_module()
    data = dict(cfg.hf_config)
    return transformers.AutoConfig.for_model(data.pop("model_type"), **data)


class WaveformNorm(nn.Module):
    """audio (batch, samples), lengths -> the same, each utterance scaled to zero mean and unit
    variance over its own samples (Wav2Vec2FeatureExtractor's ``do_normalize``), padding 0."""

    hop = 1  # samples per output frame (the front end's input)

    def __init__(self, normalize: bool = True):
        super().__init__()
        self.normalize = normalize

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        valid = torch.arange(audio.shape[1], device=audio.device) < lengths[:, None]
        if not self.normalize:
            return audio * valid, lengths
        count = lengths.clamp(min=1)[:, None].to(audio.dtype)
        mean = (audio * valid).sum(1, keepdim=True) / count
        var = (((audio - mean) * valid) ** 2).sum(1, keepdim=True) / count
        return (audio - mean) / torch.sqrt(var + 1e-7) * valid, lengths


class WhisperLogMel(nn.Module):
    """audio (batch, samples) -> Whisper's log-mel features (batch, frames, n_mels), 100 frames
    a second, as ``WhisperFeatureExtractor`` computes them but without padding to 30 s.

    Power spectrum of a 400-point periodic-Hann STFT (hop 160), Slaney mel filters (0-8 kHz),
    log10 floored at 1e-10, then at 8 below the utterance's peak, then ``(x + 4) / 4``. Each
    utterance is followed by zeros, as Whisper's 30 s padding gives it, so its frames equal the
    extractor's; the peak is taken over the utterance's own frames (``lengths // 160``).
    """

    hop = WHISPER_HOP  # samples per feature frame

    def __init__(self, n_mels: int = 80):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        filters = mel_filter_bank(
            num_frequency_bins=1 + WHISPER_FFT // 2,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.tensor(filters.T, dtype=torch.float32), False)
        self.register_buffer("window", torch.hann_window(WHISPER_FFT), False)

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=audio.device.type, enabled=False):  # fp32 always
            return self._log_mel(audio, lengths)

    def _log_mel(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # frames of the batch from its shape, not from max(lengths): an exported graph's
        # shapes cannot depend on values (the same count when the longest fills the batch)
        kept = max(audio.shape[1] // WHISPER_HOP, 1)
        audio = F.pad(audio.float(), (0, WHISPER_FFT))  # zeros after the longest one too
        stft = torch.stft(audio, WHISPER_FFT, WHISPER_HOP, window=self.window, return_complex=True)
        frames = (lengths // WHISPER_HOP).clamp(min=1)
        power = stft[..., :kept].abs() ** 2  # (batch, 201, frames)
        log_mel = (self.filters @ power).clamp(min=1e-10).log10()
        valid = torch.arange(log_mel.shape[-1], device=audio.device) < frames[:, None]
        peak = log_mel.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2))
        log_mel = torch.maximum(log_mel, peak[:, None, None] - 8.0)
        return ((log_mel + 4.0) / 4.0).transpose(1, 2), frames


class ConvFeatureFrontend(nn.Module):
    """waveform (batch, samples) -> (batch, frames, hidden): wav2vec2's feature encoder (a
    stack of 1-D convolutions) and feature projection (layer norm, linear)."""

    def __init__(self, feature_extractor: nn.Module, feature_projection: nn.Module, hf_cfg):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.feature_projection = feature_projection
        self.convolutions = tuple(zip(hf_cfg.conv_kernel, hf_cfg.conv_stride))
        self.stride = math.prod(hf_cfg.conv_stride)  # input samples per output frame

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # a frozen feature encoder needs no graph: its activations on raw audio are large
        trains = any(p.requires_grad for p in self.feature_extractor.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            x = self.feature_extractor(audio).transpose(1, 2)
        x = self.feature_projection(x)
        if isinstance(x, tuple):  # wav2vec2's returns (projected, normalised input)
            x = x[0]
        for kernel, stride in self.convolutions:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return x, lengths.clamp(min=1)


class WhisperFrontend(nn.Module):
    """log-mel (batch, frames, n_mels) -> (batch, ceil(frames / 2), d_model): Whisper's two
    convolutions with GELU, plus its position embeddings for as many frames as there are (at
    most 1500: 30 s)."""

    stride = 2  # feature frames per output frame

    def __init__(self, conv1: nn.Conv1d, conv2: nn.Conv1d, embed_positions: nn.Embedding):
        super().__init__()
        self.conv1, self.conv2, self.embed_positions = conv1, conv2, embed_positions

    @property
    def max_seconds(self) -> float:
        """The longest utterance the position table covers (30 s for Whisper's 1500)."""
        return self.embed_positions.num_embeddings * self.stride * WHISPER_HOP / SAMPLE_RATE

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = F.gelu(self.conv1(feats.transpose(1, 2)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.embed_positions.num_embeddings:
            raise DataError(
                f"an utterance of {x.shape[1] / 50:.1f} s: Whisper's encoder takes at most "
                f"{self.max_seconds:g} s; split longer audio"
            )
        x = x + self.embed_positions.weight[: x.shape[1]]
        return x, torch.div(lengths - 1, 2, rounding_mode="floor") + 1


class WhisperLayers(nn.Module):
    """Whisper's encoder layers and final layer norm, over a batch padded to its longest
    utterance: padded frames are masked out of the attention (Whisper itself attends to 30 s
    of zero-padded audio)."""

    def __init__(self, layers: nn.ModuleList, layer_norm: nn.LayerNorm, hf_cfg):
        super().__init__()
        self.layers, self.layer_norm = layers, layer_norm
        self.hf_cfg = hf_cfg

    def forward(self, hidden_states: Tensor, attention_mask: Tensor):
        from transformers.masking_utils import create_bidirectional_mask
        from transformers.modeling_outputs import BaseModelOutput

        mask = create_bidirectional_mask(
            config=self.hf_cfg, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden_states))


class PretrainedCtcModel(CtcModel):
    """forward(audio, lengths) -> log_probs (batch, frames, vocab), lengths: a pretrained
    encoder with a linear CTC head. ``encoder`` is the Hugging Face module (``encoder.layers``
    are its layers); ``fixed`` names the parameters that never train (wav2vec2's convolutional
    feature encoder, by default; Whisper's position table, as in Whisper)."""

    def __init__(self, cfg: PretrainedConfig, features, frontend, encoder, head, fixed=()):
        super().__init__(features, frontend, encoder, head)
        self.augment_features = cfg.family == "whisper"  # log-mel: SpecAugment as usual
        self.fixed = tuple(fixed)

    def encode(self, audio: Tensor, lengths: Tensor, augment=None) -> tuple[Tensor, Tensor]:
        x, lengths = self.features(audio, lengths)
        if augment is not None and self.augment_features:
            x = augment(x, lengths)
        x, lengths = self.frontend(x, lengths)
        if augment is not None and not self.augment_features:
            x = augment(x, lengths)
        mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        out = self.encoder(hidden_states=x, attention_mask=mask).last_hidden_state
        return out, lengths

    def fixed_parameters(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.named_parameters() if n.startswith(self.fixed))


def build_pretrained(cfg: PretrainedConfig, vocab_size: int) -> PretrainedCtcModel:
    """The untrained model of ``cfg`` (its Hugging Face config rebuilt)."""
    return assemble(cfg, random_hf_encoder(cfg), vocab_size)


def random_hf_encoder(cfg: PretrainedConfig) -> nn.Module:
    transformers = transformers_module()
    config = hf_config(cfg)
    if cfg.family == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    classes = {
        "wav2vec2": transformers.Wav2Vec2Model,
        "hubert": transformers.HubertModel,
        "wav2vec2-conformer": transformers.Wav2Vec2ConformerModel,
    }
    return classes[cfg.family](config)


def assemble(cfg: PretrainedConfig, hf: nn.Module, vocab_size: int, head=None):
    """A ``PretrainedCtcModel`` from a Hugging Face base model (wav2vec2-like) or Whisper
    encoder ``hf``; ``head``: a trained linear head, else a fresh one of ``vocab_size`` rows."""
    config = hf.config
    if cfg.family == "whisper":
        features = WhisperLogMel(config.num_mel_bins)
        frontend = WhisperFrontend(hf.conv1, hf.conv2, hf.embed_positions)
        encoder = WhisperLayers(hf.layers, hf.layer_norm, config)
        hidden, fixed = config.d_model, ("frontend.embed_positions.",)
    else:
        if getattr(config, "add_adapter", False):
            raise CheckpointError(f"{cfg.source}: a model with an adapter after the encoder")
        features = WaveformNorm(cfg.normalize_waveform)
        if cfg.freeze_feature_encoder:  # as HF's freeze_feature_encoder(): no input gradient
            hf.feature_extractor._freeze_parameters()
        frontend = ConvFeatureFrontend(hf.feature_extractor, hf.feature_projection, config)
        encoder, hidden = hf.encoder, config.hidden_size
        fixed = ("frontend.feature_extractor.",) if cfg.freeze_feature_encoder else ()
    head = head if head is not None else nn.Linear(hidden, vocab_size)
    return PretrainedCtcModel(cfg, features, frontend, encoder, head, fixed)


def saved_hf_config(config) -> dict:
    """The Hugging Face config as a plain dict that rebuilds the same model, with LayerDrop
    off (a layer skipped at random leaves its parameters without a gradient, which DDP
    refuses)."""
    data = config.to_dict()
    data = {k: v for k, v in data.items() if k not in HF_CONFIG_DROPPED and not k.startswith("_")}
    for key in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop"):
        if key in data:
            data[key] = 0.0
    return data
