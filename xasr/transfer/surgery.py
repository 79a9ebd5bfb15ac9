"""Layer surgery: copying by parameter-name prefix, re-initialising and freezing layers.

Partial loading by parameter-name prefix (icefall's ``load_model_params``) is the primitive;
the parameters whose shape depends on the vocabulary are rebuilt row by row from the token map
(``xasr.transfer.vocab_rows``), so vocabularies of any size transfer without a shape error.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from xasr.config import FamilyConfig
from xasr.errors import CheckpointError


def check_same_architecture(source: FamilyConfig, target: FamilyConfig, source_name: str) -> None:
    """Raise naming every field that differs in what the weights are (dropout, label
    smoothing and the CTC loss weight may differ: they have no weights of their own)."""
    src, tgt = weight_shaping(source), weight_shaping(target)
    differ = {key: (value, tgt.get(key)) for key, value in src.items() if tgt.get(key) != value}
    if differ:
        listed = ", ".join(f"{k}: source {a} vs requested {b}" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"cannot transfer from {source_name}: its architecture differs ({listed}); transfer "
            "keeps the source's architecture, so drop --size/--config or pick a source of that size"
        )


WEIGHTLESS = ("dropout", "attention_dropout", "label_smoothing")


def weight_shaping(cfg: FamilyConfig) -> dict:
    """The config fields that decide the weights: all but WEIGHTLESS; of ``ctc_weight``, only
    whether there is a CTC branch."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in WEIGHTLESS}
    if "ctc_weight" in fields:
        fields["ctc_weight"] = "a CTC branch" if cfg.ctc_weight > 0 else "no CTC branch"
    return fields


@torch.no_grad()
def copy_parameters(source: nn.Module, target: nn.Module, names: tuple[str, ...]) -> int:
    """Copy the parameters ``names`` (a ``TransferPlan``'s ``copied``: checked for name and
    shape when it was made) from ``source`` into ``target``; returns how many."""
    source_params = dict(source.named_parameters())
    target_params = dict(target.named_parameters())
    for name in names:
        target_params[name].copy_(source_params[name])
    return len(names)


@torch.no_grad()
def reinit_top_layers(model: nn.Module, fresh: nn.Module, n: int) -> list[int]:
    """Re-initialise the top ``n`` encoder layers from an untrained model of the same shape."""
    layers = len(model.encoder.layers)
    if not 0 <= n <= layers:
        raise CheckpointError(f"--drop-layers {n}: the model has {layers} encoder layers")
    dropped = list(range(layers - n, layers))
    for i in dropped:
        model.encoder.layers[i].load_state_dict(fresh.encoder.layers[i].state_dict())
    return dropped


def frozen_parameter_names(model: nn.Module, k: int) -> set[str]:
    """Names of the front end's and the bottom ``k`` encoder layers' parameters."""
    layers = len(model.encoder.layers)
    if not 0 <= k <= layers:
        raise CheckpointError(f"--freeze-layers {k}: the model has {layers} encoder layers")
    if k == 0:
        return set()
    prefixes = ("frontend.", *(f"encoder.layers.{i}." for i in range(k)))
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
