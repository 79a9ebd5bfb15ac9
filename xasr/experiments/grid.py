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
                        if strategy.bases is not None and base.name not in strategy.bases:
                            continue
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


def row_label(exp: Experiment, row: dict, strategy: str | None = None) -> str:
    """Row label in the tables: the strategy (or ``strategy``, e.g. its family), prefixed by
    the base when there are several."""
    strategy = strategy or row["strategy"]
    if len(exp.bases) == 1:
        return strategy
    if row["scratch"]:
        archs = {b.arch for b in exp.bases}
        return strategy + (f" ({row['base']})" if len(archs) > 1 else "")
    return f"{row['base']} / {strategy}"


def group_rows(exp: Experiment, rows: list[dict]) -> dict[str, dict[float, list[dict]]]:
    """label -> minutes -> rows (over seeds), in the config's order."""
    groups: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        groups.setdefault(row_label(exp, row), {}).setdefault(row["minutes"], []).append(row)
    return groups


def family_rows(exp: Experiment, rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """family label -> member label -> rows, for one target and size (``exp.select``)."""
    families: dict[str, dict[str, list[dict]]] = {}
    for family, members in exp.select:
        for row in rows:
            if row["strategy"] in members:
                by = families.setdefault(row_label(exp, row, family), {})
                by.setdefault(row_label(exp, row), []).append(row)
    return families
