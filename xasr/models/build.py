"""One explicit factory from a config to a model, and the self-describing model directory.

``FAMILIES`` is the one registration of a model family: its config class (``xasr.config``,
whose ``architecture`` names the family in config.json) and the function that builds its
untrained model, which satisfies the model protocol (``xasr.models.protocol``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xasr.config import (
    ARCH_FLAGS,
    SIZES,
    AedConfig,
    FamilyConfig,
    ModelConfig,
    PretrainedConfig,
    from_dict,
)
from xasr.data.vocab import VOCAB_FILE, Vocab, load_vocab, vocab_text
from xasr.errors import CheckpointError, XasrError
from xasr.io import write_files
from xasr.models.aed import build_aed
from xasr.models.ctc import build_ctc
from xasr.models.pretrained.importers import foreign_kind, import_pretrained
from xasr.models.pretrained.modules import build_pretrained
from xasr.models.protocol import AsrModel
from xasr.version import __version__

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class Family:
    config: type  # its frozen config dataclass
    build: Callable[..., AsrModel]  # (config, vocabulary size) -> the untrained model


FAMILIES: dict[str, Family] = {
    "conformer-ctc": Family(ModelConfig, build_ctc),
    "aed": Family(AedConfig, build_aed),
    "pretrained-ctc": Family(PretrainedConfig, build_pretrained),
}


def model_config(size: str, arch: str = "ctc") -> FamilyConfig:
    """The named size of an architecture (``--arch``: ctc or aed)."""
    if arch not in ARCH_FLAGS:
        raise XasrError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCH_FLAGS)}")
    sizes = SIZES[ARCH_FLAGS[arch]]
    if size not in sizes:
        raise XasrError(
            f"unknown model size {size!r} for --arch {arch}; choose one of {', '.join(sizes)}"
        )
    return sizes[size]


def build_model(cfg: FamilyConfig, vocab_size: int) -> AsrModel:
    """The untrained model of a config (``cfg.architecture`` picks the family)."""
    return FAMILIES[cfg.architecture].build(cfg, vocab_size)


def save_model_dir(
    directory: str | Path,
    model: nn.Module,
    cfg: FamilyConfig,
    vocab: Vocab,
    extra: dict | None = None,
) -> Path:
    """Write config.json, vocab.json and model.safetensors: all three, or (full disk) none, so
    the directory never mixes the weights of one export with the config of another."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"xasr_version": __version__, "model": asdict(cfg), **(extra or {})}
    config = json.dumps(meta, indent=1, ensure_ascii=False)
    vocab_json = vocab_text(vocab)
    write_files(
        {
            directory / WEIGHTS_FILE: lambda tmp: save_file(state, str(tmp)),
            directory / VOCAB_FILE: lambda tmp: tmp.write_text(vocab_json, encoding="utf-8"),
            directory / CONFIG_FILE: lambda tmp: tmp.write_text(config, encoding="utf-8"),
        }
    )
    return directory


def read_model_config(directory: str | Path) -> tuple[FamilyConfig, dict]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not an xasr model directory ({CONFIG_FILE} missing); pass a directory "
            "written by `xasr train`/`xasr transfer` or a shipped model name such as en-small"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if "model" not in meta and "model_type" in meta:
            raise CheckpointError(
                f"{directory} is a Hugging Face {meta['model_type']} directory, not an xasr "
                "model: transfer from it (xasr transfer --from DIR) to make one"
            )
        arch = meta["model"].get("architecture", "conformer-ctc")
        if arch not in FAMILIES:
            raise CheckpointError(
                f"{path}: unknown architecture {arch!r}; this xasr knows {', '.join(FAMILIES)}"
            )
        return from_dict(FAMILIES[arch].config, meta["model"], where=str(path)), meta
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{path} is corrupt ({err})") from None


def load_model_dir(
    directory: str | Path, device: str | torch.device = "cpu", need_head: bool = True
) -> tuple[AsrModel, FamilyConfig, Vocab]:
    """Load a model directory (or shipped model name) for inference or as a transfer source.

    A Hugging Face or CTranslate2 directory of a pretrained speech encoder is imported
    (``xasr.models.pretrained``); one without a CTC head has no vocabulary: its vocab is None
    with ``need_head=False`` (a transfer source), an error otherwise."""
    directory = resolve_model(directory)
    if foreign_kind(directory):
        model, cfg, vocab = import_pretrained(directory)
        if vocab is None and need_head:
            raise CheckpointError(
                f"{directory} is a pretrained encoder without a CTC head: transfer it to your "
                f"data first (xasr transfer --from {directory} ...)"
            )
        return model.to(device).eval(), cfg, vocab
    cfg, _ = read_model_config(directory)
    vocab = load_vocab(directory)
    model = build_model(cfg, len(vocab))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for corrupt files
        raise CheckpointError(f"{weights} is corrupt ({err})") from None
    # load_state_dict raises a bare RuntimeError on a shape mismatch, even with strict=False.
    expected = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (config wants {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointError(
            f"{weights} does not match its config: shapes differ for {', '.join(wrong[:3])}; "
            "the weights belong to another architecture or vocabulary"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.to(device).eval(), cfg, vocab


PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def resolve_model(name_or_path: str | Path) -> Path:
    """A model directory, a run directory (its ``model/`` is used, and the log says so), or
    the name of a model shipped in ``xasr/pretrained`` (e.g. en-small)."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() and (path / "model" / CONFIG_FILE).is_file():
            log.info("%s is a run directory: using its model, %s", path, path / "model")
            return path / "model"
        return path
    shipped = PRETRAINED_DIR / str(name_or_path)
    if shipped.is_dir():
        return shipped
    names = sorted(p.name for p in PRETRAINED_DIR.glob("*") if p.is_dir())
    raise CheckpointError(
        f"no model directory {name_or_path!r}; shipped models: {', '.join(names) or 'none'}"
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
