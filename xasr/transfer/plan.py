"""A transfer's plan, decided once: what the target takes from its source.

The same frozen ``TransferPlan`` initialises the target (``xasr.transfer.finetune``) and
anchors L2-SP/EWC (``forgetting_penalty``), so the token map is read once and the penalty
anchors exactly what was copied.

Between models of one family (CTC to CTC, AED to AED) every transferable parameter must be in
the source with its shape (anything else means a corrupt checkpoint). Between families (CTC to
AED and back) the parameters whose names and shapes match are copied and the rest start fresh:
a CTC model's front end and encoder go into an AED of the same encoder shape, its CTC head into
the AED's CTC branch; the decoder starts fresh. ``init_modules`` says which (icefall-style).
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
    start fresh, with --reinit-head or --scratch). ``copied``: parameters copied by name (none
    for --scratch). ``vocab_rows``: vocabulary-indexed parameters rebuilt row by row from the
    source's (``xasr.transfer.vocab_rows``; those the source lacks start fresh).
    ``dropped_layers``: encoder layers re-initialised after the copy. ``frozen``: parameter
    names held still (throughout, or for --freeze-steps)."""

    token_map: TokenMap | None
    copied: tuple[str, ...]
    vocab_rows: tuple[str, ...]
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

    def init_modules(self, model: nn.Module) -> dict[str, list[str]]:
        """The target's top-level modules by how they start: ``copied`` (every parameter),
        ``partly_copied``, ``vocab_rows`` (rebuilt token by token) and ``fresh``."""
        taken = set(self.copied)
        rows = set(self.vocab_rows) if self.token_map is not None else set()
        vocab = model.vocab_params()
        kinds: dict[str, list[str]] = {}
        for module, _ in model.named_children():
            names = [n for n, _ in model.named_parameters() if n.startswith(module + ".")]
            if not names:
                continue
            plain = [n for n in names if n not in vocab]
            copied = [n for n in plain if n in taken]
            if plain and len(copied) == len(plain):
                kind = "copied"
            elif copied:
                kind = "partly_copied"
            elif any(n in rows for n in names):
                kind = "vocab_rows"
            else:
                kind = "fresh"
            kinds.setdefault(kind, []).append(module)
        return kinds


def plan_transfer(
    model: nn.Module,
    vocab,
    source_vocab,
    scratch: bool,
    reinit_head: bool,
    drop_layers: int,
    freeze_layers: int,
    token_map_file: str | None = None,
    source_shapes: dict[str, tuple[int, ...]] | None = None,
    same_family: bool = True,
) -> TransferPlan:
    """The plan for ``model`` (the target, built with ``vocab``) from a source with
    ``source_vocab`` and parameter shapes ``source_shapes`` (None for scratch)."""
    # a source without a vocabulary (a pretrained encoder with no CTC head) gives its weights
    # but no head rows
    copies = not scratch and source_shapes is not None
    token_map = None
    if copies and not reinit_head and source_vocab is not None:
        token_map = map_tokens(vocab.tokens, source_vocab.tokens, read_user_map(token_map_file))
    n_layers = len(model.encoder.layers)
    if not 0 <= drop_layers <= n_layers:
        raise CheckpointError(
            f"--drop-layers {drop_layers}: the model has {n_layers} encoder layers"
        )
    dropped = tuple(range(n_layers - drop_layers, n_layers)) if copies and drop_layers else ()
    copied, rows = (), ()
    frozen = frozenset(frozen_parameter_names(model, freeze_layers))
    if copies:  # a random feature encoder (a scratch baseline) must train
        frozen |= set(model.fixed_parameters())
    if copies:
        copied = copyable(model, source_shapes or {}, strict=same_family)
        rows = vocab_rows_in(model, source_shapes or {})
        if not copied and not rows:
            raise CheckpointError(
                "no parameter of the source matches the requested architecture (names and "
                "shapes); ask for the source's size (--size) or train it from scratch (--scratch)"
            )
        if not same_family:  # freezing what starts fresh would keep it random
            frozen &= frozenset(copied)
    return TransferPlan(
        token_map=token_map if rows else None,
        copied=copied,
        vocab_rows=rows,
        dropped_layers=dropped,
        frozen=frozen,
    )


def vocab_rows_in(model: nn.Module, source_shapes: dict) -> tuple[str, ...]:
    """The target's vocabulary-indexed parameters that the source has with the same shape
    apart from the vocabulary axis, a layer's together or not at all (a bias is no use
    without its weight's rows)."""
    layers: dict[str, list[tuple[str, bool]]] = {}
    for name, axis in model.vocab_params().items():
        shape = source_shapes.get(name)
        target = tuple(model.get_parameter(name).shape)
        ok = (
            shape is not None
            and len(shape) == len(target)
            and all(a == b for i, (a, b) in enumerate(zip(shape, target)) if i != axis)
        )
        layers.setdefault(name.rpartition(".")[0], []).append((name, ok))
    return tuple(n for params in layers.values() if all(ok for _, ok in params) for n, _ in params)


def copyable(model: nn.Module, source_shapes: dict, strict: bool) -> tuple[str, ...]:
    """The target's parameters under ``model.transferable_prefixes()`` (less its vocabulary
    rows) that the source has with the same shape; ``strict``: all of them or an error.

    A layer's parameters copy together or not at all: a projection whose weight differs in
    shape keeps its fresh bias too, even where the bias's shape matches."""
    prefixes = model.transferable_prefixes()
    vocab = model.vocab_params()
    layers: dict[str, list[tuple[str, bool]]] = {}
    for name, param in model.named_parameters():
        if not name.startswith(prefixes) or name in vocab:
            continue
        shape = source_shapes.get(name)
        if strict and shape != tuple(param.shape):
            raise CheckpointError(
                f"source weight {name} is missing or has shape {shape}, expected "
                f"{tuple(param.shape)}: the checkpoint does not match its config"
            )
        layers.setdefault(name.rpartition(".")[0], []).append((name, shape == tuple(param.shape)))
    return tuple(n for params in layers.values() if all(ok for _, ok in params) for n, _ in params)
