"""The grid of cells: bases x targets x train_minutes x seeds x strategies, each a run directory;
scratch cells shared by every base of one architecture."""

from __future__ import annotations

from xasr.experiments.config import Base, Cell, Experiment


def plan_cells(exp: Experiment) -> list[Cell]:
    """Every cell of the grid, smaller sizes first; scratch once per architecture."""
    cells = []
    for target in exp.targets:
        for minutes in exp.minutes:
            for seed in exp.seeds:
                for strategy in exp.strategies:
                    groups: dict[str, list[Base]] = {}
                    for base in exp.bases:
                        key = f"arch-{base.arch}" if strategy.scratch else base.name
                        groups.setdefault(key, []).append(base)
                    for key, bases in groups.items():
                        cells.append(
                            Cell(
                                target=target.name,
                                base=key,
                                minutes=minutes,
                                seed=seed,
                                strategy=strategy,
                                source=bases[0],
                                bases=tuple(b.name for b in bases),
                                dir=exp.out
                                / "cells"
                                / target.name
                                / key
                                / f"{minutes:g}min"
                                / f"seed{seed}"
                                / strategy.name,
                            )
                        )
    return cells
