"""Comparisons told from chance, with every choice made on dev.

* ``select_on_dev``: of several settings of one method (a family: ranks, sparsities, inner
  learning rates), the one with the lowest mean best-dev score over its seeds; the test set
  never takes part, so its figures stay an honest estimate of the chosen setting.
* ``compare_labels``: one arm against another on their test hypotheses (each run's
  ``test.json``) by the hierarchical bootstrap over training seeds and test utterances
  (``xasr.decode.significance.hierarchical_bootstrap``).
* ``compare_with_best``: the arm chosen on dev against every other.
* A primary verdict (``primary_verdict``) is named in the config before any result: "held"
  when its interval lies below zero, "reversed" above, "no difference" otherwise.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from xasr.decode.significance import hierarchical_bootstrap, seed_counts, verdict_word
from xasr.experiments.config import Experiment
from xasr.experiments.grid import family_rows, group_rows

TEST_FILE = "test.json"  # a run's evaluate() output with its hypotheses
DEV_KEY = "best_dev_cer"  # a row's monitored dev score at its best checkpoint


def seed_evaluations(out: Path, rows: list[dict]) -> list[dict] | None:
    """The rows' ``test.json`` contents, one per seed in seed order; None when one is missing."""
    evaluations = []
    for row in sorted(rows, key=lambda r: r["seed"]):
        path = out / row["cell"] / row.get("test_file", TEST_FILE)
        if not path.is_file():
            return None
        evaluations.append(json.loads(path.read_text(encoding="utf-8")))
    return evaluations


def select_on_dev(by_label: dict[str, list[dict]]) -> str:
    """The label whose rows have the lowest mean ``best_dev_cer`` (ties: the first given)."""
    return min(by_label, key=lambda label: statistics.mean(r[DEV_KEY] for r in by_label[label]))


def compare_labels(out: Path, a: list[dict], b: list[dict], metric: str = "cer") -> dict:
    """Arm ``a``'s rows (one per seed) against ``b``'s on the same test set: the hierarchical
    bootstrap of ``rate(a) - rate(b)``, or {"missing": ...} / {"error": ...} when it cannot be
    made."""
    tests = [seed_evaluations(out, rows) for rows in (a, b)]
    if any(t is None for t in tests):
        return {"missing": "no test hypotheses (a run's test.json): a run decodes them again"}
    ids = [h["id"] for h in tests[0][0]["hypotheses"]]
    try:
        counts = [seed_counts(t, metric, ids) for t in tests]
    except ValueError:  # e.g. a test manifest changed between runs
        return {"error": "the runs' test.json files hold different utterances"}
    return {"metric": metric, **hierarchical_bootstrap(*counts)}


def compare_with_best(out: Path, by_label: dict[str, list[dict]], metric: str = "cer") -> dict:
    """``by_label``: arm label -> its rows (one per seed) of one comparable group.

    Returns {"metric", "best" (chosen on dev), "rates" (each label's pooled test rate),
    "against": {label: the hierarchical bootstrap of that label's rate minus the best's}}."""
    best = select_on_dev(by_label)
    against, rates = {}, {}
    for label, rows in by_label.items():
        tests = seed_evaluations(out, rows)
        if tests is not None:
            rates[label] = _pooled(tests, metric)
        if label != best:
            against[label] = compare_labels(out, rows, by_label[best], metric)
    return {"metric": metric, "best": best, "chosen_on": "dev", "rates": rates, "against": against}


def primary_verdict(out: Path, arm: list[dict], against: list[dict], metric: str = "cer") -> dict:
    """The config's primary comparison in one group: {"compared": the bootstrap,
    "verdict": held | reversed | no difference}."""
    if not arm or not against:
        return {"compared": {"missing": "an arm has no finished run"}, "verdict": "not made"}
    compared = compare_labels(out, arm, against, metric)
    if "verdict" not in compared:
        return {"compared": compared, "verdict": "not made"}
    return {"compared": compared, "verdict": verdict_word(compared)}


def _pooled(tests: list[dict], metric: str) -> float:
    counts = seed_counts(tests, metric)
    return float(counts[..., 0].sum() / max(counts[..., 1].sum(), 1))


def arm_rows(exp: Experiment, rows: list[dict], name: str, base: str) -> list[dict]:
    """The rows of strategy or family ``name`` that stand for ``base`` (a scratch cell stands
    for every base of its architecture), a family by its member best on dev."""
    mine = [r for r in rows if base in r["bases"].split()]
    members = dict(exp.select).get(name)
    if members is None:
        return [r for r in mine if r["strategy"] == name]
    candidates = {m: [r for r in mine if r["strategy"] == m] for m in members}
    candidates = {m: rs for m, rs in candidates.items() if rs}
    return candidates[select_on_dev(candidates)] if candidates else []


SOURCE_TEST_FILE = "test-source.json"  # a cell's hypotheses on source_data's test set


def grid_verdict(exp: Experiment, rows: list[dict], comparison: tuple, base: str) -> dict:
    """One primary comparison of the grid (``(arm, against, on)``) for ``base``: on the
    target's test set, or on the source's (the cells' ``test-source.json``: forgetting)."""
    arm, against, on = comparison
    if on == "source":
        rows = [{**r, "test_file": SOURCE_TEST_FILE} for r in rows if not r["scratch"]]
    found = primary_verdict(exp.out, *(arm_rows(exp, rows, name, base) for name in (arm, against)))
    return {"arm": arm, "against": against, "test": on, **found}


def compare_grid(exp: Experiment, rows: list[dict]) -> dict:
    """{target: {"<N>": comparisons at N minutes}} for every (target, size) with two or more
    strategies finished: "winner" (``compare_with_best``, the best chosen on dev), "chosen"
    ({family: the member chosen on dev}, ``exp.select``) and "primary" ({base: [``grid_verdict``
    of each of ``exp.primary``]}, families standing for their chosen member)."""
    comparisons: dict[str, dict] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        target_rows = [r for r in rows if r["target"] == target]
        groups = group_rows(exp, target_rows)
        for minutes in dict.fromkeys(m for by in groups.values() for m in by):
            by_label = {label: by[minutes] for label, by in groups.items() if minutes in by}
            if len(by_label) < 2:
                continue
            at_size = [r for r in target_rows if r["minutes"] == minutes]
            families = family_rows(exp, at_size)
            chosen = {family: select_on_dev(members) for family, members in families.items()}
            entry = {"winner": compare_with_best(exp.out, by_label), "chosen": chosen}
            if exp.primary:
                entry["primary"] = {
                    base.name: [grid_verdict(exp, at_size, c, base.name) for c in exp.primary]
                    for base in exp.bases
                }
            comparisons.setdefault(target, {})[f"{minutes:g}"] = entry
    return comparisons
