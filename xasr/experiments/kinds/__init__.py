"""The experiment kinds, one module each (``xasr.experiments.engine.Kind``), registered here by
name in one dict you can grep, and ``run_experiment``, what ``xasr experiment`` calls."""

from __future__ import annotations

from pathlib import Path

from xasr.config import load_yaml
from xasr.errors import XasrError
from xasr.experiments import engine
from xasr.experiments.kinds import codeswitch, grid, multilingual, sparse_sharing
from xasr.experiments.st_transfer import run_st_transfer

KINDS = {
    "grid": grid.KIND,
    "multilingual": multilingual.KIND,
    "codeswitch": codeswitch.KIND,
    "sparse-sharing": sparse_sharing.KIND,
}

# Kinds still run by their own runner (early stopping, one seed, their own YAML rules): not
# yet moved onto the engine, so their verdicts follow the old rules (docs: experiments).
UNMIGRATED = {
    "st-transfer": run_st_transfer,
}


def kind_name(config: str | Path) -> str:
    """The kind a config names (``kind:``; none: the transfer grid)."""
    name = load_yaml(config).get("kind", "grid")
    if name not in KINDS and name not in UNMIGRATED:
        known = ", ".join(sorted([*KINDS, *UNMIGRATED]))
        raise XasrError(f"{config}: kind: unknown {name!r}; one of {known}")
    return name


def run_experiment(config: str | Path, out: str | Path | None = None, **options) -> dict:
    """``engine.run`` with the kind the config names (options: ``engine.run``'s)."""
    name = kind_name(config)
    if name in KINDS:
        return engine.run(KINDS[name], config, out, **options)
    if any(options.get(k) for k in ("dry_run", "only_report", "rerun_changed", "worker")) or (
        options.get("jobs", 1) > 1
    ):
        raise XasrError(
            f"kind {name} is not on the experiment engine yet: no --dry-run, --only-report, "
            "--rerun-changed or --jobs"
        )
    print(f"kind {name}: its own runner (early stopping, one seed): verdicts are provisional")
    return UNMIGRATED[name](config, out=out, progress=options.get("progress", True))
