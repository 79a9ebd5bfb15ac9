"""`xasr experiment CONFIG.yaml`: one resumable grid of transfer runs, its results and report.

Cells are bases x targets x train_minutes x seeds x strategies. Each cell is a run directory
``OUT/cells/<target>/<base>/<N>min/seed<S>/<strategy>/`` trained by
``xasr.transfer.finetune.transfer`` and evaluated on the target's test set into ``cell.json``.

Resumability: a cell with ``cell.json`` is finished and only re-read; a cell whose training
finished (``result.json``) is only evaluated; a cell killed mid-training resumes from its
``checkpoints/last.ckpt`` (transfer's own resume). Each cell keeps the recipe and options it
was started with (``cell-spec.json``); a config that changes them for an existing cell is an
error rather than a silent mix of old and new results.

Scratch strategies (``scratch: true``) depend on a base only through its architecture (and
vocabulary kind): they run once per target/size/seed for each distinct architecture, in
``OUT/cells/<target>/arch-<tag>/...``, and stand for every base of that architecture.

Data: a synth target is built once at the largest size; a smaller size is the prefix of its
train manifest up to N minutes (``xasr.data.manifest.take_minutes``: XLT-Synth's train split is
the shortest prefix of a fixed pool order, so this prefix equals a smaller build). Real
manifests follow the same rule, in the order of the file (no shuffling). Both write
``OUT/data/<target>/train-<N>min.jsonl``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from xasr.config import TrainConfig, from_dict
from xasr.errors import XasrError
from xasr.experiments.cell import (
    TargetData,
    build_bases,
    cell_row,
    clear_evaluations,
    prepare_data,
    prepare_source,
    run_cell,
)
from xasr.experiments.compare import compare_grid
from xasr.experiments.config import Experiment, load_experiment
from xasr.experiments.grid import plan_cells
from xasr.experiments.report import write_report
from xasr.experiments.results import dry_run_listing, write_csv
from xasr.io import write_text


def run_experiment(
    config: str | Path,
    out: str | Path | None = None,
    dry_run: bool = False,
    only_report: bool = False,
    progress: bool = True,
    rerun_changed: bool = False,
    jobs: int = 1,
    worker: bool = False,
) -> dict:
    """Run (or resume) every cell of the experiment, then write results and the report.

    ``dry_run`` lists the cells and their state (done / partial / todo) and runs nothing;
    ``only_report`` rebuilds results and report from the finished cells' ``cell.json``;
    ``rerun_changed`` trains again a cell whose recorded config differs from the current one
    (otherwise that is an error naming the keys). ``jobs`` > 1 prepares the data here, then
    trains the cells in that many worker processes of one thread each (``worker``: one of
    them; each cell is taken by one worker through a lock) and writes the report once they end.
    Returns the results (as written to ``OUT/results.json``).
    """
    exp = load_experiment(config, out)
    cells = plan_cells(exp)
    if dry_run:
        return dry_run_listing(exp, cells)
    if worker:
        return run_worker(exp, cells, progress, rerun_changed)
    if jobs > 1 and not only_report:
        prepare_all(exp, progress)
        run_workers(config, exp.out, jobs, rerun_changed)
    records: dict[str, dict] = {}  # cell id -> its cell.json
    if only_report:
        for cell in cells:
            if (cell.dir / "cell.json").is_file():
                records[cell.id] = json.loads((cell.dir / "cell.json").read_text())
        rank = _read_rank(exp)
    else:
        clear_evaluations()
        source, data = prepare_all(exp, progress)
        for i, cell in enumerate(cells, start=1):
            state, detail = cell.state()
            what = {"done": "finished", "todo": "training"}.get(state, detail)
            print(f"== [{i}/{len(cells)}] {cell.id}: {what} ==", flush=True)
            records[cell.id] = run_cell(
                exp, cell, data[cell.target], source, progress, rerun_changed
            )
        rank = run_rank(exp, data, progress)
    rows = [cell_row(exp, cell, records[cell.id]) for cell in cells if cell.id in records]
    missing = [cell.id for cell in cells if cell.id not in records]
    comparisons = compare_grid(exp, rows)
    results = {
        "name": exp.name,
        "config": str(exp.config),
        "recipe": asdict(exp.recipe),
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


def prepare_all(exp: Experiment, progress: bool) -> tuple[TargetData | None, dict]:
    """The bases built from recipes, source_data's and every target's data."""
    build_bases(exp, progress)
    source = prepare_source(exp, progress) if exp.source_data else None
    return source, {t.name: prepare_data(exp, t, progress) for t in exp.targets}


def run_workers(config, out: Path, jobs: int, rerun_changed: bool) -> None:
    """``jobs`` worker processes (``xasr experiment --worker``) of one thread each, their
    output in ``OUT/worker-<i>.log``; an error in any is raised once all have ended."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "xasr.cli", "experiment", str(config), "--out", str(out)]
    command += ["--worker", "--no-progress"] + (["--rerun-changed"] if rerun_changed else [])
    procs = []
    for i in range(jobs):
        log = (out / f"worker-{i}.log").open("a")
        procs.append(
            (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
        print(f"worker {i}: {out / f'worker-{i}.log'}", flush=True)
    failed = []
    for i, (proc, log) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(f"worker {i} (exit {proc.returncode}, see {log.name})")
        log.close()
    if failed:
        raise XasrError("experiment workers failed: " + "; ".join(failed))


def run_worker(exp: Experiment, cells: list, progress: bool, rerun_changed: bool) -> dict:
    """Train every cell no other worker holds (an exclusive lock on ``CELL.lock``); the report
    is the parent's."""
    torch.set_num_threads(1)
    source, data = prepare_all(exp, progress)  # built already: only read
    trained = []
    for cell in cells:
        if cell.state()[0] == "done":
            continue
        cell.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(cell.dir.parent / f"{cell.dir.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker trains it
                continue
            if cell.state()[0] == "done":  # finished by another worker meanwhile
                continue
            print(f"== {cell.id} ==", flush=True)
            run_cell(exp, cell, data[cell.target], source, progress, rerun_changed)
            trained.append(cell.id)
    return {"trained": trained}


def _rank_path(exp: Experiment, target: str) -> Path:
    return exp.out / "rank" / target / "rank.json"


def run_rank(exp: Experiment, data: dict[str, TargetData], progress: bool) -> dict | None:
    """Quick source ranking per target (largest size, first seed); None: the hook is absent."""
    if exp.rank_steps is None or len(exp.bases) < 2:
        return {}
    try:
        from xasr.experiments.rank import rank_sources
    except ImportError:
        return None
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
