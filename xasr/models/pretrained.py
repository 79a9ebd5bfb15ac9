"""Speech encoders pretrained by others, from a directory on disk, behind the model protocol.

``xasr transfer --from DIR`` (and ``evaluate``, ``transcribe``) accept a Hugging Face model
directory (``save_pretrained``) of these families, or a CTranslate2 Whisper directory as
faster-whisper keeps it (``xasr.models.ctranslate2``):

| family | Hugging Face model | features | front end | encoder |
|---|---|---|---|---|
| wav2vec2 (XLS-R, MMS) | Wav2Vec2Model, Wav2Vec2ForCTC | the waveform (per-utterance normalised where the extractor does it) | feature_extractor (convolutions, 320x fewer frames), feature_projection | encoder (positional convolution, layers) |
| hubert | HubertModel, HubertForCTC | the same | the same | the same |
| wav2vec2-conformer | Wav2Vec2ConformerModel, ...ForCTC | the same | the same | the same |
| whisper | WhisperModel, WhisperForConditionalGeneration (its encoder) | Whisper's log-mel (``WhisperLogMel``), not padded to 30 s | conv1, conv2 (2x fewer frames), positions | layers, layer_norm |

Each becomes a ``PretrainedCtcModel``: an ordinary ``CtcModel`` (features, frontend, encoder,
head), so the token-aware head transfer, layer dropping and freezing (``encoder.layers``), the
forgetting remedies and the experiment grid work as for xasr's own models. A ``...ForCTC``
directory's head comes with its vocabulary (``vocab.json``): its rows are reordered into an xasr
vocabulary (the pad token is the CTC blank, ``|`` the space, letters lower-cased when that merges
nothing), so a transfer copies the rows of the tokens both vocabularies share. A directory
without a CTC head (Wav2Vec2Model, HuBERT, Whisper) gets a fresh head. The saved model directory
holds the Hugging Face config, so it loads without the original directory (transformers is
needed: the ``[hf]`` extra, which ``make`` installs).

SpecAugment (``TrainConfig.spec_augment``) masks Whisper's log-mel as it masks xasr's; for the
waveform families it masks time steps and channels of the feature projection's output (as
wav2vec2 fine-tuning masks its hidden states, with zeros rather than a learned embedding).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.config import PRETRAINED_FAMILIES, PretrainedConfig
from xasr.data.vocab import BLANK, SPACE, UNK, CharVocab
from xasr.errors import CheckpointError, DataError, XasrError
from xasr.models.ctc import CtcModel

log = logging.getLogger(__name__)

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


def foreign_kind(directory: Path) -> str | None:
    """``"hf"`` for a Hugging Face model directory, ``"ctranslate2"`` for a CTranslate2 one
    (``model.bin``), None for anything else (an xasr model directory)."""
    config = directory / "config.json"
    data = read_json(config) if config.is_file() else {}
    if "model" in data:
        return None
    if "model_type" in data:
        return "hf"
    return "ctranslate2" if (directory / "model.bin").is_file() else None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def import_pretrained(directory: str | Path):
    """(model, cfg, vocab) of a Hugging Face or CTranslate2 directory; vocab is None when the
    directory has no CTC head (a fresh head is added by the transfer)."""
    directory = Path(directory)
    if foreign_kind(directory) == "ctranslate2":
        from xasr.models.ctranslate2 import import_ctranslate2_whisper

        return import_ctranslate2_whisper(directory)
    return import_hf(directory)


def import_hf(directory: Path):
    transformers = transformers_module()
    data = read_json(directory / "config.json")
    family = data.get("model_type")
    if family not in PRETRAINED_FAMILIES:
        raise CheckpointError(
            f"{directory}: a Hugging Face {family!r} model; xasr imports "
            f"{', '.join(PRETRAINED_FAMILIES)} (with or without a CTC head)"
        )
    ctc = any(a.endswith("ForCTC") for a in data.get("architectures") or [])
    head = vocab = None
    if family == "whisper":
        hf = transformers.WhisperModel.from_pretrained(directory, local_files_only=True).encoder
    elif ctc:
        full = transformers.AutoModelForCTC.from_pretrained(directory, local_files_only=True)
        hf, head = getattr(full, full.base_model_prefix), full.lm_head
    else:
        hf = transformers.AutoModel.from_pretrained(directory, local_files_only=True)
    cfg = PretrainedConfig(
        family=family,
        hf_config=saved_hf_config(hf.config),
        normalize_waveform=do_normalize(directory),
        source=str(directory),
    )
    if head is not None:
        vocab, head = ctc_vocab(directory, head, hf.config)
    model = assemble(cfg, hf, len(vocab) if vocab else 2, head)
    log.info("imported %s (%s%s)", directory, family, ", with its CTC head" if vocab else "")
    return model.float().eval(), cfg, vocab


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


def has_ctc_head(directory: str | Path) -> bool:
    """Whether a model directory comes with a CTC head (and vocabulary): an xasr directory or
    a Hugging Face ...ForCTC one does; an encoder alone does not (read without loading it)."""
    directory = Path(directory)
    kind = foreign_kind(directory)
    if kind == "hf":
        archs = read_json(directory / "config.json").get("architectures") or []
        return any(a.endswith("ForCTC") for a in archs)
    return kind is None


def do_normalize(directory: Path) -> bool:
    """Whether the feature extractor normalises each waveform (preprocessor_config.json;
    wav2vec2's default, True, when the file is absent)."""
    path = directory / "preprocessor_config.json"
    return bool(read_json(path).get("do_normalize", True)) if path.is_file() else True


@torch.no_grad()
def ctc_vocab(directory: Path, lm_head: nn.Linear, config) -> tuple[CharVocab, nn.Linear]:
    """An xasr vocabulary of a ...ForCTC directory's ``vocab.json`` and its head's rows in that
    order: the pad token (the CTC blank) first, then the unknown token (a fresh row, never
    chosen, if there is none), then the others; ``|`` stays the space; letters are lower-cased
    unless that would merge two tokens."""
    path = directory / "vocab.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: a CTC model without vocab.json (its head's tokens)")
    table = read_json(path)
    if table and all(isinstance(v, dict) for v in table.values()):  # {lang: {token: id}}
        raise CheckpointError(f"{path}: one vocabulary per language; pass a one-language model")
    by_id = {int(i): str(t) for t, i in table.items()}
    blank = getattr(config, "pad_token_id", 0) or 0
    unknown = next((i for i, t in by_id.items() if t in ("<unk>", "[UNK]")), None)
    others = [i for i in sorted(by_id) if i not in (blank, unknown) and i < lm_head.out_features]
    names = [by_id[i] for i in others]
    lowered = [n.lower() for n in names]
    if len(set(lowered)) == len(lowered) and not {BLANK, UNK} & set(lowered):
        names = lowered
    order = [blank, unknown, *others]
    head = nn.Linear(lm_head.in_features, len(order))
    for row, source in enumerate(order):
        if source is None:  # no unknown token: a row that never wins
            head.weight[row].zero_()
            head.bias[row] = lm_head.bias.min() - 10.0
        else:
            head.weight[row] = lm_head.weight[source]
            head.bias[row] = lm_head.bias[source]
    tokens = [BLANK, UNK, *(SPACE if n == "|" else n for n in names)]
    return CharVocab(tokens), head
