"""The experiment kinds, one module each (``xasr.experiments.engine.Kind``), registered here by
name in one dict you can grep, and ``run_experiment``, what ``xasr experiment`` calls."""

from __future__ import annotations

from pathlib import Path

from xasr.config import load_yaml
from xasr.errors import XasrError
from xasr.experiments import engine
from xasr.experiments.kinds import codeswitch, grid, multilingual, sparse_sharing, st_transfer

KINDS = {
    "grid": grid.KIND,
    "multilingual": multilingual.KIND,
    "codeswitch": codeswitch.KIND,
    "sparse-sharing": sparse_sharing.KIND,
    "st-transfer": st_transfer.KIND,
}


def kind_name(config: str | Path) -> str:
    """The kind a config names (``kind:``; none: the transfer grid)."""
    name = load_yaml(config).get("kind", "grid")
    if name not in KINDS:
        raise XasrError(f"{config}: kind: unknown {name!r}; one of {', '.join(sorted(KINDS))}")
    return name


def run_experiment(config: str | Path, out: str | Path | None = None, **options) -> dict:
    """``engine.run`` with the kind the config names (options: ``engine.run``'s)."""
    return engine.run(KINDS[kind_name(config)], config, out, **options)
