"""An experiment's results as a table (results.csv) and the dry-run listing of its cells."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from xasr.experiments.config import Cell, Experiment
from xasr.experiments.recipe import EARLY_STEP
from xasr.io import write_text

CSV_COLUMNS = (
    "target",
    "base",
    "minutes",
    "seed",
    "strategy",
    "test_cer",
    "test_wer",
    "test_mer",
    "best_dev_cer",
    "steps",
    "best_step",
    "stopped_by",
    "train_seconds",
    "steps_to_threshold",
    f"dev_cer_at_step_{EARLY_STEP}",
    "source_cer_before",
    "source_cer_after",
    "source_cer_change",
    "source_wer_change",
    "target_cer_before",
    "target_cer_after",
    "target_cer_change",
    "bases",
    "cell",
)


def dry_run_listing(exp: Experiment, cells: list[Cell]) -> dict:
    states = {}
    lines = []
    for cell in cells:
        state, detail = cell.state()
        states[cell.id] = state
        lines.append(f"  {state:8} {cell.id}" + (f"  ({detail})" if detail else ""))
    counts = {s: list(states.values()).count(s) for s in ("done", "partial", "todo")}
    print(
        f"experiment {exp.name}: {len(cells)} cells in {exp.out} "
        f"(done {counts['done']}, partial {counts['partial']}, todo {counts['todo']})"
    )
    for base in exp.bases:
        if base.recipe is not None:
            built = (exp.out / "bases" / base.name / "figures.json").is_file()
            print(f"  base {base.name}: {'built' if built else 'to build'} from {base.recipe}")
    print("\n".join(lines))
    return {"cells": states, **counts}


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def save_outcome(out: Path, results: dict, report: str) -> None:
    """A ``kind:`` experiment's end: ``OUT/results.json``, ``OUT/report.md``, the report
    printed."""
    write_text(Path(out) / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    write_text(Path(out) / "report.md", report)
    print(report)
