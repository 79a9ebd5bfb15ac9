"""A transfer's plan, decided once: what the target takes from its source.

The same frozen ``TransferPlan`` initialises the target (``xasr.transfer.finetune``) and
anchors L2-SP/EWC (``forgetting_penalty``), so the token map is read once and the penalty
anchors exactly what was copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from xasr.errors import CheckpointError
from xasr.transfer.surgery import frozen_parameter_names
from xasr.transfer.vocab_map import TokenMap, map_tokens, read_user_map


@dataclass(frozen=True)
class TransferPlan:
    """``token_map``: target token -> source token for the vocabulary rows (None: the rows
    start fresh, with --reinit-head or --scratch). ``copied_prefixes``: parameters copied by
    name (none for --scratch). ``dropped_layers``: encoder layers re-initialised after the
    copy. ``frozen``: parameter names held still (throughout, or for --freeze-steps)."""

    token_map: TokenMap | None
    copied_prefixes: tuple[str, ...]
    dropped_layers: tuple[int, ...]
    frozen: frozenset[str]

    @property
    def dropped_prefixes(self) -> tuple[str, ...]:
        return tuple(f"encoder.layers.{i}." for i in self.dropped_layers)

    @property
    def anchored_rows(self) -> dict[int, int]:
        """Vocabulary rows a penalty may pull toward the source: shared tokens only (a mapped
        ä only starts from a)."""
        return dict(self.token_map.copied) if self.token_map is not None else {}


def plan_transfer(
    model: nn.Module,
    vocab,
    source_vocab,
    scratch: bool,
    reinit_head: bool,
    drop_layers: int,
    freeze_layers: int,
    token_map_file: str | None = None,
) -> TransferPlan:
    """The plan for ``model`` (the target, built with ``vocab``) from a source with
    ``source_vocab`` (None for scratch)."""
    copies = not scratch and source_vocab is not None
    token_map = None
    if copies and not reinit_head:
        token_map = map_tokens(vocab.tokens, source_vocab.tokens, read_user_map(token_map_file))
    n_layers = len(model.encoder.layers)
    if not 0 <= drop_layers <= n_layers:
        raise CheckpointError(
            f"--drop-layers {drop_layers}: the model has {n_layers} encoder layers"
        )
    dropped = tuple(range(n_layers - drop_layers, n_layers)) if copies and drop_layers else ()
    return TransferPlan(
        token_map=token_map,
        copied_prefixes=model.transferable_prefixes() if copies else (),
        dropped_layers=dropped,
        frozen=frozenset(frozen_parameter_names(model, freeze_layers)),
    )
