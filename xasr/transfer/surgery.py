"""Layer surgery: copying by parameter-name prefix, re-initialising and freezing layers.

Partial loading by parameter-name prefix (icefall's ``load_model_params``) is the primitive;
the parameters whose shape depends on the vocabulary are rebuilt row by row from the token map
(``xasr.transfer.vocab_rows``), so vocabularies of any size transfer without a shape error.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from xasr.config import ModelConfig
from xasr.errors import CheckpointError
from xasr.models.ctc import CtcModel


def check_same_architecture(source: ModelConfig, target: ModelConfig, source_name: str) -> None:
    """Raise naming every field that differs (dropout may differ: it has no weights)."""
    differ = {
        key: (value, asdict(target)[key])
        for key, value in asdict(source).items()
        if key != "dropout" and asdict(target)[key] != value
    }
    if differ:
        listed = ", ".join(f"{k}: source {a} vs requested {b}" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"cannot transfer from {source_name}: its architecture differs ({listed}); transfer "
            "keeps the source's architecture, so drop --size/--config or pick a source of that size"
        )


def copy_encoder(source: CtcModel, target: CtcModel, prefixes: tuple[str, ...]) -> int:
    """Copy every parameter under ``prefixes`` (``target.transferable_prefixes()``: all that
    does not depend on the vocabulary); returns how many tensors were copied."""
    source_state = source.state_dict()
    target_state = target.state_dict()
    copied = 0
    for name, tensor in target_state.items():
        if not name.startswith(prefixes):
            continue
        if name not in source_state or source_state[name].shape != tensor.shape:
            raise CheckpointError(
                f"source weight {name} is missing or has shape "
                f"{tuple(source_state[name].shape) if name in source_state else None}, "
                f"expected {tuple(tensor.shape)}: the checkpoint does not match its config"
            )
        tensor.copy_(source_state[name])
        copied += 1
    return copied


@torch.no_grad()
def reinit_top_layers(model: CtcModel, fresh: CtcModel, n: int) -> list[int]:
    """Re-initialise the top ``n`` encoder layers from an untrained model of the same shape."""
    layers = len(model.encoder.layers)
    if not 0 <= n <= layers:
        raise CheckpointError(f"--drop-layers {n}: the model has {layers} encoder layers")
    dropped = list(range(layers - n, layers))
    for i in dropped:
        model.encoder.layers[i].load_state_dict(fresh.encoder.layers[i].state_dict())
    return dropped


def frozen_parameter_names(model: CtcModel, k: int) -> set[str]:
    """Names of the front end's and the bottom ``k`` encoder layers' parameters."""
    layers = len(model.encoder.layers)
    if not 0 <= k <= layers:
        raise CheckpointError(f"--freeze-layers {k}: the model has {layers} encoder layers")
    if k == 0:
        return set()
    prefixes = ("frontend.", *(f"encoder.layers.{i}." for i in range(k)))
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
