"""Which machine a command runs on: the device or accelerator asked for, checked against what
torch sees here, so that a GPU asked for where there is none is one clear line, not a
traceback from Lightning or torch."""

from __future__ import annotations

import torch

from xasr.config import TrainConfig, train_option
from xasr.errors import XasrError

NO_GPU = "no CUDA GPU is visible to torch on this machine"


def torch_device(device: str | None, option: str = "--device") -> torch.device:
    """The inference device: ``None`` picks CUDA when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise XasrError(f"{option} {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type != "cuda":
        raise XasrError(f"{option} {device!r}: xasr runs on cpu or cuda, not {parsed.type}")
    if not torch.cuda.is_available():
        raise XasrError(f"{option} {device}: {NO_GPU}; use {option} cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise XasrError(
            f"{option} {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return parsed


def training_machine(cfg: TrainConfig) -> tuple[str, str]:
    """Lightning's ``(accelerator, precision)`` for ``cfg``, resolving "auto"; raises
    ``XasrError`` for a GPU where there is none, more GPUs than there are, or fp16 on a CPU
    (which Lightning would silently turn into bf16)."""
    accelerator = cfg.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu":
        if not torch.cuda.is_available():
            raise XasrError(
                f"{train_option('accelerator')} gpu: {NO_GPU}; use --accelerator cpu or auto"
            )
        if cfg.devices > torch.cuda.device_count():
            raise XasrError(
                f"{train_option('devices')} {cfg.devices}: only {torch.cuda.device_count()} "
                "CUDA GPU(s) visible"
            )
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    if precision == "16-mixed" and accelerator == "cpu":
        raise XasrError(
            f"{train_option('precision')} 16-mixed needs a CUDA GPU; on a CPU use bf16-mixed "
            "or 32-true"
        )
    return accelerator, precision
