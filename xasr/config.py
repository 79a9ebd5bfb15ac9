"""Frozen configuration dataclasses; YAML/JSON in, unknown keys rejected with the key named."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from xasr.errors import XasrError

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    """A Conformer CTC encoder; the vocabulary size comes from the vocabulary, not from here."""

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
        if self.d_model % self.n_heads:
            raise XasrError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise XasrError("d_model / n_heads must be even (rotary position embedding)")
        if self.conv_kernel % 2 == 0:
            raise XasrError(f"conv_kernel must be odd, got {self.conv_kernel}")


MODEL_SIZES: dict[str, ModelConfig] = {
    # about 4.7M parameters with a 40-token vocabulary
    "small": ModelConfig(d_model=144, n_layers=8, n_heads=4),
    # about 19M parameters
    "medium": ModelConfig(d_model=256, n_layers=12, n_heads=4, conv_kernel=31),
    "tiny": ModelConfig(d_model=64, n_layers=2, n_heads=2, subsampling_channels=32),  # tests
}


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; the same recipe runs transfer and scratch for a fair comparison."""

    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 300
    max_steps: int = 3000
    max_minutes: float | None = None
    max_batch_seconds: float = 120.0  # audio seconds per batch (per device)
    grad_clip: float = 5.0
    val_every: int = 100  # steps
    patience: int = 5  # validations without dev CER improvement before stopping
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
    except TypeError as err:
        raise XasrError(f"{where}: {err}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XasrError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise XasrError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise XasrError(f"{path}: expected a mapping at the top level")
    return data


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores ``None`` values (unset command-line options)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
