"""Which strategy won each (target, size) of a grid, told from chance: the cell with the lowest
test CER against every other by the paired bootstrap over the test utterances
(``xasr.decode.significance``), read from each cell's ``test.json`` (its hypotheses).

Seeds are pooled as (seed, utterance) pairs, over the seeds every compared strategy has: the
interval covers the choice of test utterances, not the training noise between seeds (the
report's ± over seeds shows that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xasr.experiments.config import Experiment

TEST_FILE = "test.json"  # a cell's evaluate() output with its hypotheses


def pooled_hypotheses(out: Path, rows: list[dict]) -> dict | None:
    """One evaluation-shaped {"hypotheses": [...]} of the rows' test sets (one row per seed),
    ids prefixed by the seed; None when a cell has no ``test.json``."""
    hypotheses = []
    for row in sorted(rows, key=lambda r: r["seed"]):
        path = out / row["cell"] / TEST_FILE
        if not path.is_file():
            return None
        scored = json.loads(path.read_text(encoding="utf-8"))
        hypotheses += [{**h, "id": f"{row['seed']}/{h['id']}"} for h in scored["hypotheses"]]
    return {"hypotheses": hypotheses}


def compare_with_best(out: Path, by_label: dict[str, list[dict]], metric: str = "cer") -> dict:
    """``by_label``: strategy label -> its rows (over seeds) of one target and size.

    Returns {"metric", "seeds", "best": label, "against": {label: paired bootstrap of that
    label's rate minus the best's (``xasr.decode.significance.paired_bootstrap``)}}, or
    {"missing": [labels without hypotheses]} when some cell has no ``test.json``.
    """
    from xasr.decode.significance import compare_runs

    seeds = sorted(set.intersection(*({r["seed"] for r in rows} for rows in by_label.values())))
    common = {label: [r for r in rows if r["seed"] in seeds] for label, rows in by_label.items()}
    pooled = {label: pooled_hypotheses(out, rows) for label, rows in common.items()}
    missing = [label for label, tests in pooled.items() if tests is None]
    if missing or not seeds:
        return {"missing": missing}
    key = f"test_{metric}"
    best = min(common, key=lambda label: sum(r[key] for r in common[label]))
    return {
        "metric": metric,
        "seeds": seeds,
        "best": best,
        "against": {
            label: compare_runs(tests, pooled[best], metric)
            for label, tests in pooled.items()
            if label != best
        },
    }


def compare_grid(exp: Experiment, rows: list[dict]) -> dict:
    """{target: {"<N>": compare_with_best(...) of that target's strategies at N minutes}}, for
    every (target, size) with at least two strategies finished."""
    from xasr.experiments.report import group_rows

    comparisons: dict[str, dict] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        groups = group_rows(exp, [r for r in rows if r["target"] == target])
        for minutes in dict.fromkeys(m for by in groups.values() for m in by):
            by_label = {label: by[minutes] for label, by in groups.items() if minutes in by}
            if len(by_label) > 1:
                comparisons.setdefault(target, {})[f"{minutes:g}"] = compare_with_best(
                    exp.out, by_label
                )
    return comparisons
