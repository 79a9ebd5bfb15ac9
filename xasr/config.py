"""Frozen configuration dataclasses; YAML/JSON in, unknown keys rejected with the key named."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import yaml

from xasr import checks
from xasr.errors import XasrError

T = TypeVar("T")


class FamilyConfig(Protocol):
    """What every model family's config is (``ModelConfig``, ``AedConfig``,
    ``PretrainedConfig``): frozen, its ``architecture`` naming the family in a model
    directory's config.json (``xasr.models.build.FAMILIES`` maps it to the builder), and the
    capabilities its model will have, known without building it (the model says them too:
    ``xasr.models.protocol``)."""

    architecture: str
    has_decoder: ClassVar[bool]  # an attention decoder (and no single-graph export)

    def short_name(self, vocab_kind: str = "char") -> str:
        """A short name of the architecture and vocabulary kind (experiments' scratch cells
        are shared by the bases of one name)."""
        ...


@dataclass(frozen=True)
class ModelConfig:
    """A Conformer CTC encoder; the vocabulary size comes from the vocabulary, not from here."""

    has_decoder: ClassVar[bool] = False
    architecture: str = "conformer-ctc"
    n_mels: int = 80
    d_model: int = 144
    n_layers: int = 8
    n_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    subsampling_channels: int = 128
    dropout: float = 0.1
    # Dropout on attention probabilities forces PyTorch's slow "math" attention (3.5x slower
    # forward+backward on CPU than the fused kernel, measured); off by default.
    attention_dropout: float = 0.0

    def __post_init__(self):
        checks.one_of("architecture", self.architecture, ("conformer-ctc",))
        for name in ("n_mels", "d_model", "n_layers", "n_heads", "ff_mult", "conv_kernel"):
            checks.integer(name, getattr(self, name), at_least=1)
        checks.integer("subsampling_channels", self.subsampling_channels, at_least=1)
        checks.number("dropout", self.dropout, at_least=0, below=1)
        checks.number("attention_dropout", self.attention_dropout, at_least=0, below=1)
        if self.d_model % self.n_heads:
            raise XasrError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise XasrError("d_model / n_heads must be even (rotary position embedding)")
        if self.conv_kernel % 2 == 0:
            raise XasrError(f"conv_kernel must be odd, got {self.conv_kernel}")

    def short_name(self, vocab_kind: str = "char") -> str:
        return sized_name(self, MODEL_SIZES, "", vocab_kind)


MODEL_SIZES: dict[str, ModelConfig] = {
    # about 4.7M parameters with a 40-token vocabulary
    "small": ModelConfig(d_model=144, n_layers=8, n_heads=4),
    # about 19M parameters
    "medium": ModelConfig(d_model=256, n_layers=12, n_heads=4, conv_kernel=31),
    # about 1.0M parameters: experiments that must early-stop on 2 CPU cores
    "xsmall": ModelConfig(d_model=96, n_layers=4, n_heads=4, subsampling_channels=64),
    "tiny": ModelConfig(d_model=64, n_layers=2, n_heads=2, subsampling_channels=32),  # tests
}


@dataclass(frozen=True)
class AedConfig:
    """An attention encoder-decoder (``xasr.models.aed``): VGG front end (or the CTC model's
    convolutional one), Conformer or Transformer encoder, Transformer decoder, and a CTC branch
    on the encoder weighted by ``ctc_weight`` in the loss (0: none). The vocabulary gains one
    start/end token, owned by the model (vocab.json is unchanged)."""

    has_decoder: ClassVar[bool] = True
    architecture: str = "aed"
    n_mels: int = 80
    frontend: str = "vgg"  # "vgg" (two VGG blocks) or "conv2d" (the CTC model's: it copies)
    vgg_channels: int = 32  # the first VGG block's channels; the second has twice as many
    subsampling_channels: int = 128  # the conv2d front end's channels
    encoder: str = "conformer"  # "conformer" (copies from a CTC model) or "transformer"
    d_model: int = 144
    n_layers: int = 8  # encoder layers
    n_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15  # conformer encoder only
    decoder_layers: int = 4
    ctc_weight: float = 0.3  # loss = w * CTC + (1 - w) * attention
    label_smoothing: float = 0.1
    dropout: float = 0.1
    attention_dropout: float = 0.0

    def __post_init__(self):
        checks.one_of("architecture", self.architecture, ("aed",))
        checks.one_of("frontend", self.frontend, ("vgg", "conv2d"))
        checks.one_of("encoder", self.encoder, ("conformer", "transformer"))
        for name in ("n_mels", "d_model", "n_layers", "n_heads", "ff_mult", "conv_kernel"):
            checks.integer(name, getattr(self, name), at_least=1)
        for name in ("vgg_channels", "subsampling_channels", "decoder_layers"):
            checks.integer(name, getattr(self, name), at_least=1)
        checks.number("ctc_weight", self.ctc_weight, at_least=0, below=1)
        checks.number("label_smoothing", self.label_smoothing, at_least=0, below=1)
        checks.number("dropout", self.dropout, at_least=0, below=1)
        checks.number("attention_dropout", self.attention_dropout, at_least=0, below=1)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise XasrError(
                f"d_model {self.d_model} / n_heads {self.n_heads} must be an even integer "
                "(rotary position embedding)"
            )
        if self.conv_kernel % 2 == 0:
            raise XasrError(f"conv_kernel must be odd, got {self.conv_kernel}")

    def short_name(self, vocab_kind: str = "char") -> str:
        return sized_name(self, AED_SIZES, f"{self.architecture}-", vocab_kind)


# Named AED sizes: the encoders are those of the CTC sizes of the same name, so a CTC model's
# encoder stack copies into them (``xasr transfer --arch aed``).
AED_SIZES: dict[str, AedConfig] = {
    "small": AedConfig(d_model=144, n_layers=8, n_heads=4, decoder_layers=4),
    "medium": AedConfig(d_model=256, n_layers=12, n_heads=4, conv_kernel=31, decoder_layers=6),
    "xsmall": AedConfig(
        d_model=96, n_layers=4, subsampling_channels=64, vgg_channels=16, decoder_layers=2
    ),
    "tiny": AedConfig(
        d_model=64,
        n_layers=2,
        n_heads=2,
        subsampling_channels=32,
        vgg_channels=8,
        decoder_layers=1,
    ),
}

PRETRAINED_FAMILIES = ("wav2vec2", "hubert", "wav2vec2-conformer", "whisper")


@dataclass(frozen=True)
class PretrainedConfig:
    """A speech encoder pretrained by others (``xasr.models.pretrained``): a wav2vec2,
    wav2vec2-conformer, HuBERT or XLS-R model, or Whisper's encoder, with a linear CTC head.
    ``hf_config`` is the Hugging Face config (``config.json``) the encoder is rebuilt from;
    ``source`` says where it was imported from (information only)."""

    has_decoder: ClassVar[bool] = False
    family: str
    hf_config: dict
    architecture: str = "pretrained-ctc"
    freeze_feature_encoder: bool = True  # wav2vec2-like: the convolutional feature encoder
    normalize_waveform: bool = True  # wav2vec2-like: each utterance to zero mean, unit variance
    source: str = ""

    def __post_init__(self):
        checks.one_of("architecture", self.architecture, ("pretrained-ctc",))
        checks.one_of("family", self.family, PRETRAINED_FAMILIES)
        checks.boolean("freeze_feature_encoder", self.freeze_feature_encoder)
        checks.boolean("normalize_waveform", self.normalize_waveform)
        if not isinstance(self.hf_config, dict) or "model_type" not in self.hf_config:
            raise XasrError("hf_config must be a Hugging Face config with its model_type")

    def short_name(self, vocab_kind: str = "char") -> str:
        """``pretrained-<family>-<digest of the Hugging Face config>`` (whatever the
        vocabulary)."""
        digest = hashlib.sha1(json.dumps(self.hf_config, sort_keys=True).encode()).hexdigest()
        return f"pretrained-{self.family}-{digest[:6]}"


def sized_name(cfg, sizes: dict, prefix: str, vocab_kind: str) -> str:
    """``prefix`` + the name of the size ``cfg`` is (else ``d<d_model>x<n_layers>-<digest>``),
    ``-sp`` for a sentencepiece vocabulary."""
    names = [name for name, size in sizes.items() if size == cfg]
    if names:
        tag = names[0]
    else:
        digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:6]
        tag = f"d{cfg.d_model}x{cfg.n_layers}-{digest}"
    return prefix + tag + ("-sp" if vocab_kind == "sentencepiece" else "")


# The named sizes of each family (a model directory's config.json names its family; the
# families and their builders: ``xasr.models.build.FAMILIES``).
SIZES: dict[str, dict] = {"conformer-ctc": MODEL_SIZES, "aed": AED_SIZES, "pretrained-ctc": {}}
ARCH_FLAGS = {"ctc": "conformer-ctc", "aed": "aed"}  # --arch values


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; the same recipe runs transfer and scratch for a fair comparison."""

    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 300
    max_steps: int = 3000
    # More budgets that end a run (xasr.train.budget): audio seconds seen, forward-backward
    # passes (a meta-transfer step makes 2 x tasks). The cosine schedule follows max_steps.
    max_audio_seconds: float | None = None
    max_passes: int | None = None
    max_minutes: float | None = None
    max_batch_seconds: float = 120.0  # audio seconds per batch (per device)
    grad_clip: float = 5.0
    val_every: int = 100  # steps
    # Validations without dev CER improvement (more than min_delta) before stopping; None: no
    # early stopping, the run spends its whole budget (every arm of an experiment does).
    patience: int | None = 5
    min_delta: float = 0.002  # dev CER improvement that counts
    seed: int = 0
    devices: int = 1
    accelerator: str = "auto"
    precision: str = "auto"  # "auto": bf16-mixed on CUDA, 32 on CPU
    num_workers: int = 2
    spec_augment: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 5
    time_mask_fraction: float = 0.04  # of the utterance per mask
    vocab: str = "char"  # or "sentencepiece"
    vocab_size: int = 256  # sentencepiece only
    freeze_layers: int = 0  # freeze the front end and the bottom K encoder layers
    freeze_steps: int | None = None  # ... for the first S steps only (None: throughout)
    on_unknown: str = "error"  # characters outside the vocabulary: "error" or "unk"
    # An attention encoder-decoder's CTC weight in the training loss, in place of its config's
    # (None: the config's; 0: pure attention, the CTC branch kept but not trained): the
    # speech-translation stage of Wang et al. trains attention alone.
    ctc_loss_weight: float | None = None
    # Several training manifests (xasr.data.sources): each one's share of the audio seconds
    # by "temperature" (n^(1/T) of its seconds; T = 1: as much as it has), fixed "weights"
    # (--weights), or "balanced" (one batch of each per step); batches "mixed" or of one
    # "language" (source) each.
    mixing: str = "temperature"
    temperature: float = 1.0
    source_batches: str = "mixed"
    # The dev CER that early stopping and the best model watch: "all" (every dev utterance
    # pooled), "macro" (the mean of the languages' CERs) or a language code.
    monitor: str = "all"
    # Meta-transfer learning (xasr.train.meta; Winata et al. 2020): None trains as usual;
    # "paper" or "reference" makes every step a first-order MAML step of that variant. The
    # first --train manifest is the target: query batches of k_valid utterances come from it;
    # each task (every manifest with meta_tasks "all", as the paper; the others only with
    # "sources") adapts on a support batch of k_train utterances with SGD at inner_lr, its
    # gradient clipped to meta_clip (0: no clipping).
    meta_variant: str | None = None
    inner_lr: float = 1e-3
    meta_clip: float = 5.0
    k_train: int = 6
    k_valid: int = 6
    meta_tasks: str = "all"

    def __post_init__(self):
        """Every value in range before any work, the message naming key and flag."""
        n = train_option
        checks.number(n("lr"), self.lr, above=0)
        checks.number(n("weight_decay"), self.weight_decay, at_least=0)
        checks.integer(n("warmup_steps"), self.warmup_steps, at_least=0)
        checks.integer(n("max_steps"), self.max_steps, at_least=1)
        if self.max_minutes is not None:
            checks.number(n("max_minutes"), self.max_minutes, above=0)
        checks.number(n("max_batch_seconds"), self.max_batch_seconds, above=0)
        checks.number(n("grad_clip"), self.grad_clip, at_least=0)
        checks.integer(n("val_every"), self.val_every, at_least=1)
        if self.patience is not None:
            checks.integer(n("patience"), self.patience, at_least=0)
        if self.max_audio_seconds is not None:
            checks.number(n("max_audio_seconds"), self.max_audio_seconds, above=0)
        if self.max_passes is not None:
            checks.integer(n("max_passes"), self.max_passes, at_least=1)
        checks.number(n("min_delta"), self.min_delta, at_least=0)
        checks.integer(n("seed"), self.seed, at_least=0, at_most=2**32 - 1)
        checks.integer(n("devices"), self.devices, at_least=1)
        checks.one_of(n("accelerator"), self.accelerator, ACCELERATORS)
        checks.one_of(n("precision"), self.precision, PRECISIONS)
        checks.integer(n("num_workers"), self.num_workers, at_least=0)
        checks.boolean(n("spec_augment"), self.spec_augment)
        for name in ("freq_masks", "freq_mask_width", "time_masks", "freeze_layers"):
            checks.integer(n(name), getattr(self, name), at_least=0)
        checks.number(n("time_mask_fraction"), self.time_mask_fraction, at_least=0, below=1)
        checks.one_of(n("vocab"), self.vocab, VOCAB_KINDS)
        checks.integer(n("vocab_size"), self.vocab_size, at_least=2)
        if self.freeze_steps is not None:
            checks.integer(n("freeze_steps"), self.freeze_steps, at_least=1)
        checks.one_of(n("on_unknown"), self.on_unknown, ON_UNKNOWN)
        if self.ctc_loss_weight is not None:
            checks.number(n("ctc_loss_weight"), self.ctc_loss_weight, at_least=0, below=1)
        checks.one_of(n("mixing"), self.mixing, MIXINGS)
        checks.number(n("temperature"), self.temperature, above=0)
        checks.one_of(n("source_batches"), self.source_batches, SOURCE_BATCHES)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise XasrError(f"{n('monitor')} must be all, macro or a language code")
        if self.meta_variant is not None:
            checks.one_of(n("meta_variant"), self.meta_variant, META_VARIANTS)
        checks.number(n("inner_lr"), self.inner_lr, above=0)
        checks.number(n("meta_clip"), self.meta_clip, at_least=0)
        checks.integer(n("k_train"), self.k_train, at_least=1)
        checks.integer(n("k_valid"), self.k_valid, at_least=1)
        checks.one_of(n("meta_tasks"), self.meta_tasks, META_TASKS)
        if self.meta_variant is not None and self.precision == "16-mixed":
            raise XasrError(
                f"{n('meta_variant')} computes its gradients without a loss scaler: "
                "use --precision bf16-mixed or 32-true with meta-transfer learning"
            )

    @property
    def monitor_key(self) -> str:
        """The logged metric early stopping watches: val_cer, val_cer_macro, val_cer_<lang>."""
        return "val_cer" if self.monitor == "all" else f"val_cer_{self.monitor}"


ACCELERATORS = ("auto", "cpu", "gpu")
MIXINGS = ("temperature", "weights", "balanced")  # xasr.data.sources
SOURCE_BATCHES = ("mixed", "language")
META_VARIANTS = ("paper", "reference")  # xasr.train.meta
META_TASKS = ("all", "sources")  # every --train manifest is a task, or all but the target
VOCAB_KINDS = ("char", "sentencepiece")
ON_UNKNOWN = ("error", "unk")  # characters outside the vocabulary: stop, or map to <unk>
# The Lightning precisions xasr trains with ("auto": bf16-mixed on CUDA, 32-true on CPU);
# 16-mixed only on CUDA (xasr.device.training_machine).
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")

# TrainConfig's keys by what they are about, each key in one group. A training command
# declares the groups it uses and shows their flags only (``xasr.cli.options``); a --config
# YAML file may set any key.
TRAIN_GROUPS: dict[str, tuple[str, ...]] = {
    "optimisation": (
        "lr",
        "weight_decay",
        "warmup_steps",
        "max_steps",
        "grad_clip",
        "ctc_loss_weight",
    ),
    "stopping": (
        "max_audio_seconds",
        "max_passes",
        "max_minutes",
        "val_every",
        "patience",
        "min_delta",
        "monitor",
    ),
    "data": ("max_batch_seconds", "num_workers"),  # batches of one source's data
    "mixing": ("mixing", "temperature", "source_batches"),  # several --train manifests
    "vocabulary": ("vocab", "vocab_size", "on_unknown"),
    "augmentation": (
        "spec_augment",
        "freq_masks",
        "freq_mask_width",
        "time_masks",
        "time_mask_fraction",
    ),
    "freezing": ("freeze_layers", "freeze_steps"),  # a transfer's
    "meta-transfer": ("meta_variant", "inner_lr", "meta_clip", "k_train", "k_valid", "meta_tasks"),
    "machine": ("seed", "devices", "accelerator", "precision"),
}

# TrainConfig keys that have a command-line flag (each command shows those of its groups),
# with the flag; the others are set in a --config YAML file.
TRAIN_FLAGS = {
    "max_steps": "--max-steps",
    "max_audio_seconds": "--max-audio-seconds",
    "max_passes": "--max-passes",
    "max_minutes": "--max-minutes",
    "lr": "--lr",
    "warmup_steps": "--warmup-steps",
    "max_batch_seconds": "--batch-seconds",
    "val_every": "--val-every",
    "patience": "--patience",
    "seed": "--seed",
    "devices": "--devices",
    "accelerator": "--accelerator",
    "precision": "--precision",
    "num_workers": "--workers",
    "vocab": "--vocab",
    "vocab_size": "--vocab-size",
    "on_unknown": "--on-unknown",
    "spec_augment": "--no-spec-augment",
    "freeze_layers": "--freeze-layers",
    "freeze_steps": "--freeze-steps",
    "mixing": "--mixing",
    "temperature": "--temperature",
    "source_batches": "--source-batches",
    "monitor": "--monitor",
    "meta_variant": "--meta-transfer",
    "inner_lr": "--inner-lr",
    "meta_clip": "--meta-clip",
    "k_train": "--k-train",
    "k_valid": "--k-valid",
    "meta_tasks": "--meta-tasks",
}


def train_option(key: str) -> str:
    """How an error names a TrainConfig key: ``max_steps (--max-steps)``."""
    return f"{key} ({TRAIN_FLAGS[key]})" if key in TRAIN_FLAGS else key


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a frozen dataclass, naming unknown keys and the allowed ones."""
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise XasrError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    try:
        return cls(**data)
    except (TypeError, XasrError) as err:  # TypeError: a missing key
        raise XasrError(f"{where}: {err}") from None


def train_recipe(
    recipe: TrainConfig | Mapping[str, Any] | str | Path | None = None, **changes: Any
) -> TrainConfig:
    """A training recipe: ``recipe`` (None: the defaults; a TrainConfig; a mapping of its
    keys; a YAML file of them) with ``changes`` (its keys) over it, unknown keys refused."""
    if recipe is None or isinstance(recipe, Mapping):
        data, where = dict(recipe or {}), "recipe"
    elif isinstance(recipe, TrainConfig):
        data, where = dataclasses.asdict(recipe), "recipe"
    else:
        data, where = load_yaml(recipe), str(recipe)
    return from_dict(TrainConfig, {**data, **changes}, where)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XasrError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise XasrError(f"{path}{line}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise XasrError(f"{path}: expected a mapping at the top level")
    return data


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores ``None`` values (unset command-line options)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
