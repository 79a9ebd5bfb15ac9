"""One runner for every experiment kind.

A kind (``xasr.experiments.kinds``) says what is particular to its comparison: how its YAML
reads, which arms it has (an arm is one training run and one seed, in its own directory), how
it builds their data, how it trains and scores one, and what its report adds. The runner does
the rest alike for all of them:

* strict YAML (``load``): an unknown or misspelt key anywhere is one line naming it and the
  file; the common keys (``name``, ``out``, ``seeds``, ``budget``, ``early_stopping``,
  ``recipe``) read the same in every kind (``xasr.experiments.common``);
* ``--dry-run`` (the arms and their state) and ``--only-report`` (the report from finished
  arms, nothing trained; an arm made with other settings is an error naming it and the keys);
* resumption: a finished arm (``ARM/cell.json``) is only read, a killed one resumes from its
  checkpoint;
* reuse only by config: each arm records what it was started with (``ARM/cell-spec.json``,
  the kind's ``spec``), checked here before the kind runs it; a change is an error naming the key, or, with ``--rerun-changed``, the old directory is moved
  aside and the arm runs again;
* ``--jobs N``: the data is built here, then N one-thread worker processes take the arms
  (each by a lock), and the report is written once they end.

Adding a kind is one module with a ``KIND`` object and one line in ``kinds.KINDS``;
``xasr.experiments.kinds.run_experiment`` is the entry point (``xasr experiment``).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from xasr.errors import XasrError
from xasr.io import write_text


class Arm(Protocol):
    """One training run of one seed: ``id`` (unique, printed), ``dir`` (its run directory),
    ``seed``; ``state()`` says ("done" | "partial" | "todo", detail)."""

    dir: Path
    seed: int

    @property
    def id(self) -> str: ...

    def state(self) -> tuple[str, str]: ...


@runtime_checkable
class Kind(Protocol):
    """What one kind of experiment adds to the runner (module docstring)."""

    name: str

    def load(self, config: Path, out: str | Path | None) -> Any:
        """The checked setting (with ``out``); XasrError naming the key for any mistake."""

    def arms(self, setting) -> list[Arm]:
        """Every arm, in the order they run."""

    def prepare(self, setting, progress: bool) -> Any:
        """Build (or reuse) the data every arm needs; returns what ``run_arm`` reads."""

    def spec(self, setting, arm: Arm, data) -> dict:
        """What the arm's result depends on (its recipes, data, model), recorded in
        ``ARM/cell-spec.json`` and compared before the arm is reused or reported (``data``
        None with ``only_report``: manifest paths are not compared)."""

    def run_arm(self, setting, arm: Arm, data, progress: bool) -> dict:
        """Train (or resume) and score one arm; returns its record (``ARM/cell.json``)."""

    def finish(self, setting, records: dict[str, dict], data) -> dict:
        """Results and report from the finished arms' records ({arm id: record}; ``data``
        None with ``only_report``); returns the results."""

    def notes(self, setting) -> list[str]:
        """Lines for ``--dry-run`` beyond the arms (bases to build, ...)."""


def run(
    kind: Kind,
    config: str | Path,
    out: str | Path | None = None,
    dry_run: bool = False,
    only_report: bool = False,
    progress: bool = True,
    rerun_changed: bool = False,
    jobs: int = 1,
    worker: bool = False,
) -> dict:
    """Run (or resume) every arm of the experiment, then write its results and report.

    ``dry_run`` lists the arms and their state and runs nothing; ``only_report`` rebuilds the
    results and report from the finished arms' ``cell.json``; ``rerun_changed`` trains again an
    arm whose recorded config differs from the current one; ``jobs`` > 1 trains the arms in
    that many one-thread worker processes (``worker``: one of them). Returns the results (as
    written to ``OUT/results.json``).
    """
    if jobs < 1:
        raise XasrError(f"--jobs must be at least 1, got {jobs}")
    setting = kind.load(Path(config), out)
    arms = kind.arms(setting)
    if dry_run:
        return dry_run_listing(kind, setting, arms)
    if worker:
        return run_worker(kind, setting, arms, progress, rerun_changed)
    data = None
    if jobs > 1 and not only_report:
        data = kind.prepare(setting, progress)
        run_workers(config, setting.out, jobs, rerun_changed)
    records: dict[str, dict] = {}
    if only_report:
        records = finished_records(kind, setting, arms)
    else:
        data = data if data is not None else kind.prepare(setting, progress)
        for i, arm in enumerate(arms, start=1):
            check_spec(arm, kind.spec(setting, arm, data), rerun_changed)
            state, detail = arm.state()
            what = {"done": "finished", "todo": "training"}.get(state, detail)
            print(f"== [{i}/{len(arms)}] {arm.id}: {what} ==", flush=True)
            records[arm.id] = kind.run_arm(setting, arm, data, progress)
    return kind.finish(setting, records, data)


def finished_records(kind: Kind, setting, arms: list[Arm]) -> dict[str, dict]:
    """{arm id: record} of the finished arms, each made with the current settings: a report
    that mixed settings would compare unlike arms, so a change is an error naming them."""
    records, stale = {}, []
    for arm in arms:
        if not (arm.dir / RECORD).is_file():
            continue
        changed = spec_changes(arm, kind.spec(setting, arm, None))
        if changed:
            stale.append(f"{arm.id} ({', '.join(changed)})")
        records[arm.id] = json.loads((arm.dir / RECORD).read_text(encoding="utf-8"))
    if stale:
        raise XasrError(
            f"{len(stale)} finished arm(s) were made with other settings: {'; '.join(stale[:5])}"
            f"{'; ...' if len(stale) > 5 else ''}; run the experiment with --rerun-changed "
            "before reporting, or set the config back"
        )
    return records


RECORD = "cell.json"  # a finished arm's record


def run_state(directory: Path) -> tuple[str, str]:
    """An arm's state from its run directory: "done" (its record), "partial" (trained, or a
    checkpoint to resume from) or "todo"."""
    if (directory / RECORD).is_file():
        return "done", ""
    if (directory / "result.json").is_file():
        return "partial", "trained; evaluation only"
    if (directory / "checkpoints" / "last.ckpt").is_file():
        return "partial", "resumes from checkpoints/last.ckpt"
    return "todo", ""


def dry_run_listing(kind: Kind, setting, arms: list[Arm]) -> dict:
    states, lines = {}, []
    for arm in arms:
        state, detail = arm.state()
        states[arm.id] = state
        lines.append(f"  {state:8} {arm.id}" + (f"  ({detail})" if detail else ""))
    counts = {s: list(states.values()).count(s) for s in ("done", "partial", "todo")}
    print(
        f"experiment {setting.name}: {len(arms)} arms in {setting.out} "
        f"(done {counts['done']}, partial {counts['partial']}, todo {counts['todo']})"
    )
    print("\n".join([*kind.notes(setting), *lines]))
    return {"cells": states, **counts}


def run_workers(config, out: Path, jobs: int, rerun_changed: bool) -> None:
    """``jobs`` worker processes (``xasr experiment --worker``) of one thread each, their output
    in ``OUT/worker-<i>.log``; an error in any is raised once all have ended."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "xasr.cli", "experiment", str(config), "--out", str(out)]
    command += ["--worker", "--no-progress"] + (["--rerun-changed"] if rerun_changed else [])
    out.mkdir(parents=True, exist_ok=True)
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


def run_worker(kind: Kind, setting, arms: list[Arm], progress: bool, rerun_changed: bool) -> dict:
    """Run every arm no other worker holds (an exclusive lock on ``ARM.lock``); the report is
    the parent's."""
    torch.set_num_threads(1)
    data = kind.prepare(setting, progress)  # built by the parent already: only read
    trained = []
    for arm in arms:
        arm.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(arm.dir.parent / f"{arm.dir.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker has it
                continue
            # a finished arm too: its recorded config is checked (and with --rerun-changed it
            # is trained again), then its record read
            check_spec(arm, kind.spec(setting, arm, data), rerun_changed)
            if arm.state()[0] != "done":
                print(f"== {arm.id} ==", flush=True)
                trained.append(arm.id)
            kind.run_arm(setting, arm, data, progress)
    return {"trained": trained}


def changed_keys(old: dict, new: dict, tolerant: bool = True) -> list[str]:
    """The keys whose values differ between two arm specs, dotted (``recipe.lr``). A key only
    one side has is a change, except at the top level and in the dumps of config dataclasses
    (keys ending in ``recipe``, ``options`` or ``model``: a field added to xasr later is not a
    change); manifest paths and loader workers do not change what an arm measures."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        if key.endswith("_manifest") or key == "num_workers":
            continue
        if key not in old or key not in new:
            if not tolerant:
                changed.append(str(key))
            continue
        a, b = old[key], new[key]
        if isinstance(a, dict) and isinstance(b, dict):
            loose = str(key).endswith(TOLERANT)
            changed += [f"{key}.{k}" for k in changed_keys(a, b, loose)]
        elif a != json.loads(json.dumps(b)):
            changed.append(str(key))
    return changed


TOLERANT = ("recipe", "options", "model")  # dumps of dataclasses that may gain fields


def check_spec(arm: Arm, spec: dict, rerun_changed: bool = False) -> None:
    """An arm is reused only when its recorded spec (``ARM/cell-spec.json``) equals ``spec``. A
    change is an error naming the keys, or with ``rerun_changed`` the old directory is moved
    aside (``<dir>.replaced-N``: nothing is lost) and the arm runs again."""
    path = arm.dir / SPEC
    if path.is_file():
        changed = spec_changes(arm, spec)
        if not changed:
            return
        if not rerun_changed:
            raise XasrError(
                f"{arm.dir} was started with other settings ({', '.join(changed)}); run with "
                "--rerun-changed to train it again with the new ones (the old directory is "
                "kept beside it), or set another `out`"
            )
        aside = next(
            arm.dir.with_name(f"{arm.dir.name}.replaced-{i}")
            for i in range(1, 10_000)
            if not arm.dir.with_name(f"{arm.dir.name}.replaced-{i}").exists()
        )
        arm.dir.rename(aside)
        print(f"{arm.id}: {', '.join(changed)} changed; the old run is kept in {aside}")
    arm.dir.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(spec, indent=1, ensure_ascii=False))


SPEC = "cell-spec.json"


def spec_changes(arm: Arm, spec: dict) -> list[str]:
    """The keys in which ``spec`` differs from the arm's recorded one (none when unrecorded)."""
    path = arm.dir / SPEC
    if not path.is_file():
        return []
    return changed_keys(json.loads(path.read_text(encoding="utf-8")), spec)


def save_outcome(out: Path, results: dict, report: str) -> dict:
    """A kind's end: ``OUT/results.json`` and ``OUT/report.md`` written, the report printed."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    write_text(out / "report.md", report)
    print(report)
    return results


def save_record(arm: Arm, record: dict) -> dict:
    """Write an arm's record, with the code that made it (``code_version``) unless recorded."""
    record = {**record, "code": record.get("code") or code_version()}
    write_text(arm.dir / RECORD, json.dumps(record, indent=1, ensure_ascii=False))
    return record


def code_version() -> str:
    """The git commit of the xasr package that runs (``+dirty`` with uncommitted changes), or
    "unknown" outside a git checkout: what a report says its arms were made with."""
    package = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
