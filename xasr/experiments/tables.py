"""Report tables every kind shares: what each arm spent, scores as mean ± standard deviation
over seeds, and a verdict's sentence."""

from __future__ import annotations

import statistics

from xasr.decode.significance import interval_text

WORK_HEADER = ["steps", "target audio s", "all audio s", "passes", "wall s", "stopped by",
               "spent the budget", "best at the end"]  # fmt: skip


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: list[float]) -> str:
    """'21.0 % ± 1.4' of rates over seeds (no ± for one seed)."""
    if not values:
        return "-"
    text = f"{100 * statistics.mean(values):.1f} %"
    return text + (f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def work_cells(rows: list[dict], budget) -> list[str]:
    """One arm's spending over its seeds (means), how its runs stopped, how many spent the
    whole ``budget`` (an ``xasr.experiments.budget.Budget``), and how many had their best dev
    checkpoint at the last validation (still improving at the budget's end)."""

    def mean(key: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{statistics.mean(values):,.0f}" if values else "-"

    stops = ", ".join(sorted({r["stopped_by"] for r in rows if "stopped_by" in r}))
    spent = sum(budget.spent_by(r) for r in rows)
    late = sum(r.get("best_step", -1) >= r.get("steps", 0) for r in rows)
    return [
        mean("steps"),
        mean("target_audio_seconds"),
        mean("audio_seconds"),
        mean("passes"),
        mean("train_seconds"),
        stops,
        f"{spent}/{len(rows)}",
        f"{late}/{len(rows)}",
    ]


def work_section(arms: list[tuple[list[str], list[dict]]], head: list[str], budget) -> list[str]:
    """The budget table: ``arms`` is [(the arm's leading cells, its rows over seeds)], ``head``
    names the leading cells; ``budget``: the experiment's."""
    codes = sorted({r["code"] for _, rows in arms for r in rows if r.get("code")})
    return [
        "## Budgets: what each arm spent",
        "",
        *([f"Arms trained by xasr at commit {', '.join(codes)}.", ""] if codes else []),
        (
            f"Rule: {budget.describe()}. Means over seeds; *spent the budget*: seeds whose run "
            "reached it (one that did not stopped early or hit its step ceiling: its figures "
            "are not at the budget); *best at the end*: seeds whose best dev checkpoint was the "
            "last validation (still improving when the budget ran out)."
        ),
        "",
        markdown_table(
            [*head, "seeds", *WORK_HEADER],
            [[*lead, len(rows), *work_cells(rows, budget)] for lead, rows in arms],
        ),
    ]


def verdict_sentence(where: str, arm: str, against: str, primary: dict) -> str:
    """'es: joint against alone: **held**, test CER difference -3.1 pts [-5.0, -1.2] (3 and 3
    seeds).'"""
    compared = primary["compared"]
    if "verdict" not in compared:
        reason = compared.get("error") or compared.get("missing") or "no runs"
        return f"{where}: {arm} against {against}: not made ({reason})."
    return (
        f"{where}: {arm} against {against}: **{primary['verdict']}**, test "
        f"{compared['metric'].upper()} difference {interval_text(compared)} "
        f"({compared['seeds'][0]} and {compared['seeds'][1]} seeds)."
    )
