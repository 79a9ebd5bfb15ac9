"""The transfer grid (no ``kind:``, or ``kind: grid``): bases x targets x train_minutes x seeds
x strategies, each cell a run directory
``OUT/cells/<target>/<base>/<N>min/seed<S>/<strategy>/`` trained by
``xasr.transfer.finetune.transfer`` and evaluated on the target's test set into ``cell.json``
(and its hypotheses, ``test.json``).

Scratch strategies (``scratch: true``) depend on a base only through its architecture (and
vocabulary kind): they run once per target/size/seed for each distinct architecture, in
``OUT/cells/<target>/arch-<tag>/...``, and stand for every base of that architecture.

Data: a synth target is built once at the largest size; a smaller size is the prefix of its
train manifest up to N minutes (``xasr.data.manifest.take_minutes``: XLT-Synth's train split is
the shortest prefix of a fixed pool order, so this prefix equals a smaller build). Real
manifests follow the same rule, in the order of the file (no shuffling). Both write
``OUT/data/<target>/train-<N>min.jsonl``.

The config, its cells and their runs: ``xasr.experiments.config``, ``.grid``, ``.cell``; the
comparisons: ``.compare``; the report: ``.report``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from xasr.config import TrainConfig, from_dict
from xasr.experiments.cell import (
    TargetData,
    build_bases,
    cell_row,
    cell_spec,
    clear_evaluations,
    prepare_data,
    prepare_source,
    run_cell,
)
from xasr.experiments.compare import compare_grid
from xasr.experiments.config import Experiment, load_experiment
from xasr.experiments.grid import plan_cells
from xasr.experiments.report import write_report
from xasr.experiments.results import write_csv
from xasr.io import write_text


class GridKind:
    name = "grid"

    def load(self, config: Path, out) -> Experiment:
        return load_experiment(config, out)

    def arms(self, exp: Experiment) -> list:
        return plan_cells(exp)

    def prepare(self, exp: Experiment, progress: bool) -> tuple:
        """(source_data's splits or None, {target: its TargetData}); the bases built."""
        clear_evaluations()
        build_bases(exp, progress)
        source = prepare_source(exp, progress) if exp.source_data else None
        return source, {t.name: prepare_data(exp, t, progress) for t in exp.targets}

    def spec(self, exp: Experiment, cell, data) -> dict:
        return cell_spec(exp, cell, data[0] if data is not None else None)

    def run_arm(self, exp: Experiment, cell, data, progress: bool) -> dict:
        source, targets = data
        return run_cell(exp, cell, targets[cell.target], source, progress)

    def finish(self, exp: Experiment, records: dict[str, dict], data) -> dict:
        cells = plan_cells(exp)
        rank = _read_rank(exp) if data is None else run_rank(exp, data[1])
        rows = [cell_row(exp, cell, records[cell.id]) for cell in cells if cell.id in records]
        missing = [cell.id for cell in cells if cell.id not in records]
        comparisons = compare_grid(exp, rows)
        results = {
            "name": exp.name,
            "config": str(exp.config),
            "recipe": asdict(exp.recipe),
            "budget": asdict(exp.budget),
            "threshold_cer": exp.threshold_cer,
            "cells": len(cells),
            "missing": missing,
            "rows": rows,
            "rank_sources": rank,
            "comparisons": comparisons,
        }
        exp.out.mkdir(parents=True, exist_ok=True)
        write_text(exp.out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
        write_csv(exp.out / "results.csv", rows)
        path, headline = write_report(exp, rows, rank, missing, comparisons)
        print(headline)
        print(f"report: {path}")
        return results

    def notes(self, exp: Experiment) -> list[str]:
        return [
            f"  base {base.name}: "
            + (
                "built"
                if (exp.out / "bases" / base.name / "figures.json").is_file()
                else "to build"
            )
            + f" from {base.recipe}"
            for base in exp.bases
            if base.recipe is not None
        ]


KIND = GridKind()


def _rank_path(exp: Experiment, target: str) -> Path:
    return exp.out / "rank" / target / "rank.json"


def run_rank(exp: Experiment, data: dict[str, TargetData], progress: bool = False) -> dict:
    """Quick source ranking per target (largest size, first seed), cached in OUT/rank."""
    if exp.rank_steps is None or len(exp.bases) < 2:
        return {}
    from xasr.experiments.rank import rank_sources

    ranks = {}
    by_model = {base.model: base.name for base in exp.bases}
    for target in exp.targets:
        path = _rank_path(exp, target.name)
        if not path.is_file():
            print(f"== rank sources for {target.name} ({exp.rank_steps} steps) ==", flush=True)
            cfg = from_dict(TrainConfig, {**asdict(exp.recipe), "seed": exp.seeds[0]})
            ranking = rank_sources(
                path.parent,
                data[target.name].train[max(exp.minutes)],
                data[target.name].dev,
                [base.model for base in exp.bases],
                cfg,
                steps=exp.rank_steps,
                progress=progress,
            )
            ranking = [{**r, "base": by_model.get(str(r["source"]), r["source"])} for r in ranking]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(ranking, indent=1))
        ranks[target.name] = json.loads(path.read_text())
    return ranks


def _read_rank(exp: Experiment) -> dict:
    return {
        t.name: json.loads(_rank_path(exp, t.name).read_text())
        for t in exp.targets
        if _rank_path(exp, t.name).is_file()
    }
