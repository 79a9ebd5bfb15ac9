"""Which strategy won each (target, size) of a grid, told from chance: the strategy with the
lowest test CER against every other by the paired bootstrap over the test utterances
(``xasr.decode.significance``), from each cell's ``test.json`` (its hypotheses).

With several seeds, each utterance's errors and reference length are summed over the seeds
every compared strategy has, and the utterances are resampled: the unit stays the utterance
(a hard utterance is hard for every seed), so more seeds do not narrow the interval by
themselves. The interval covers the choice of test utterances, not the training noise
between seeds (the report's ± shows that); the best is picked on the same test set, and each
pair gets its own interval, with no correction for several comparisons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xasr.experiments.config import Experiment

TEST_FILE = "test.json"  # a cell's evaluate() output with its hypotheses


def seed_evaluations(out: Path, rows: list[dict]) -> list[dict] | None:
    """The rows' ``test.json`` contents, one per seed in seed order; None when one is missing."""
    evaluations = []
    for row in sorted(rows, key=lambda r: r["seed"]):
        path = out / row["cell"] / TEST_FILE
        if not path.is_file():
            return None
        evaluations.append(json.loads(path.read_text(encoding="utf-8")))
    return evaluations


def compare_with_best(out: Path, by_label: dict[str, list[dict]], metric: str = "cer") -> dict:
    """``by_label``: strategy label -> its rows (one per seed) of one target and size.

    Returns {"metric", "seeds" (those compared), "rates" (each label's rate over them),
    "best", "against": {label: ``bootstrap_counts`` of that label's rate minus the best's}};
    or, when no comparison can be made, {"missing": labels without ``test.json``},
    {"no_common_seeds": {label: its seeds}} or {"error": why (test sets that differ)}.
    """
    from xasr.decode.significance import bootstrap_counts, utterance_counts

    seeds = {label: sorted({r["seed"] for r in rows}) for label, rows in by_label.items()}
    common = sorted(set.intersection(*(set(s) for s in seeds.values())))
    if not common:
        return {"no_common_seeds": seeds}
    tests = {
        label: seed_evaluations(out, [r for r in rows if r["seed"] in common])
        for label, rows in by_label.items()
    }
    missing = [label for label, evaluations in tests.items() if evaluations is None]
    if missing:
        return {"missing": missing}
    ids = [h["id"] for h in next(iter(tests.values()))[0]["hypotheses"]]
    try:
        counted = {label: utterance_counts(e, metric, ids)[1] for label, e in tests.items()}
    except ValueError:  # e.g. a test manifest changed between cells
        return {"error": "the strategies' test.json files hold different utterances"}
    rates = {label: c[:, 0].sum() / max(c[:, 1].sum(), 1) for label, c in counted.items()}
    best = min(rates, key=rates.get)
    return {
        "metric": metric,
        "seeds": common,
        "rates": {label: float(r) for label, r in rates.items()},
        "best": best,
        "against": {
            label: bootstrap_counts(c, counted[best])
            for label, c in counted.items()
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
