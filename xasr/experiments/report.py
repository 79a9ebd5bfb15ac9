"""Readable reports: Markdown tables and line plots (learning curves, error vs data size)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from xasr.train.curve import read_curve, validation_points

if TYPE_CHECKING:  # experiments.config imports the demo, which imports this module
    from xasr.experiments.config import Experiment, Target


def cer_at_step(run_dir: Path, step: int) -> float | None:
    """Dev CER at the last validation at or before ``step`` (None if none yet)."""
    points = [cer for s, cer in validation_points(read_curve(run_dir)) if s <= step]
    return points[-1] if points else None


def steps_to_cer(run_dir: Path, threshold: float) -> int | None:
    """The first validation step whose dev CER is at or below ``threshold`` (None: never)."""
    for step, cer in validation_points(read_curve(run_dir)):
        if cer <= threshold:
            return step
    return None


def plot_curves(runs: dict[str, Path], path: Path, title: str) -> Path:
    """Dev CER (%) against training step, one line per run directory."""
    series = {
        name: [(step, 100 * cer) for step, cer in validation_points(read_curve(run_dir))]
        for name, run_dir in runs.items()
    }
    return plot_lines(series, path, title, "training step", "dev CER (%)")


def plot_lines(
    series: dict[str, list[tuple]],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
) -> Path:
    """One line per name through its points ``(x, y)`` or ``(x, y, error bar)``; a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in series.items():
        if not points:
            continue
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        errors = [p[2] if len(p) > 2 and p[2] is not None else 0.0 for p in points]
        if any(errors):
            ax.errorbar(xs, ys, yerr=errors, marker="o", markersize=3, capsize=3, label=name)
        else:
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
    if logx:  # ticks at the data's own x values, written plainly (2, 10, 30), not 10^x
        ax.set_xscale("log")
        ticks = sorted({p[0] for points in series.values() for p in points})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the experiment report (xasr experiment)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if len(values) > 1:
        return statistics.mean(values), statistics.stdev(values)
    return values[0], None


def row_label(exp: Experiment, row: dict) -> str:
    """Row label in the tables: the strategy, prefixed by the base when there are several."""
    if len(exp.bases) == 1:
        return row["strategy"]
    if row["scratch"]:
        archs = {b.arch for b in exp.bases}
        return row["strategy"] + (f" ({row['base']})" if len(archs) > 1 else "")
    return f"{row['base']} / {row['strategy']}"


def group_rows(exp: Experiment, rows: list[dict]) -> dict[str, dict[float, list[dict]]]:
    """label -> minutes -> rows (over seeds), in the config's order."""
    groups: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        groups.setdefault(row_label(exp, row), {}).setdefault(row["minutes"], []).append(row)
    return groups


def _error_cell(rows: list[dict]) -> str:
    cer, cer_std = _mean_std([r["test_cer"] for r in rows])
    spread = f" ± {100 * cer_std:.1f}" if cer_std is not None else ""
    return f"{_pct(cer)}{spread} (WER {_pct(statistics.mean(r['test_wer'] for r in rows))})"


def _steps_cell(rows: list[dict]) -> str:
    reached = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
    if not reached:
        return "never"
    mean, std = _mean_std(reached)
    text = f"{mean:.0f}" + (f" ± {std:.0f}" if std is not None else "")
    return text + (f" ({len(reached)}/{len(rows)} seeds)" if len(reached) < len(rows) else "")


def _describe(target: Target) -> str:
    if target.synth is not None:
        s = target.synth
        topics = f", topics {', '.join(s['topics'])}" if s.get("topics") else ""
        return (
            f"XLT-Synth `{s['lang']}`{topics} ({s['conditions']}, seed {s['seed']}); "
            f"dev {s['dev_utts']} and test {s['test_utts']} utterances in held-out voices"
        )
    m = target.manifests
    return f"manifests: train `{m['train']}`, dev `{m['dev']}`, test `{m['test']}`"


def write_report(
    exp: Experiment,
    rows: list[dict],
    rank: dict | None,
    missing: list[str],
    comparisons: dict | None = None,
) -> tuple[Path, str]:
    """OUT/report.md and its plots (OUT/plots/); returns its path and the headline tables.
    ``comparisons``: ``xasr.experiments.compare.compare_grid``'s, the section saying which
    strategy won each size (omitted when None)."""
    plots = exp.out / "plots"
    sizes = list(exp.minutes)
    size_header = [f"{m:g} min" for m in sizes]
    recipe = exp.recipe
    parts = [
        f"# Experiment `{exp.name}`",
        "",
        f"Config `{exp.config}`; {len(rows)} of {len(rows) + len(missing)} cells finished"
        + (f" ({len(missing)} not run yet)" if missing else "")
        + f". Bases: {', '.join(b.name for b in exp.bases)}; seeds: "
        f"{', '.join(map(str, exp.seeds))}. One recipe for every cell: lr {recipe.lr}, "
        f"{recipe.max_batch_seconds:g} s batches, validation every {recipe.val_every} steps, "
        f"early stopping after {recipe.patience} validations without dev-CER improvement, "
        f"cap {recipe.max_steps} steps"
        + (f" / {recipe.max_minutes:g} min" if recipe.max_minutes else "")
        + ". Strategies: "
        + "; ".join(
            f"`{st.name}`"
            + (
                " (" + ", ".join(f"{k}={v}" for k, v in {**st.options, **st.recipe}.items()) + ")"
                if st.options or st.recipe
                else ""
            )
            for st in exp.strategies
        )
        + ". Scratch runs once per target, size and seed for each architecture (it does not "
        "depend on a base's weights). Test CER: mean ± standard deviation over seeds; WER: mean.",
    ]
    headline = []
    for target in exp.targets:
        target_rows = [r for r in rows if r["target"] == target.name]
        parts += ["", f"## {target.name}", "", _describe(target), ""]
        if not target_rows:
            parts.append("No finished cells yet.")
            continue
        groups = group_rows(exp, target_rows)
        table = markdown_table(
            ["strategy", *size_header],
            [
                [label, *(_error_cell(by[m]) if m in by else "" for m in sizes)]
                for label, by in groups.items()
            ],
        )
        headline += [f"{target.name}: test CER (WER) by training minutes", table, ""]
        winners: list[str] = []
        if comparisons is not None:
            winners, summary = _winner_section(groups, comparisons.get(target.name, {}), sizes)
            headline += [*summary, ""] if summary else []
        error_png = plot_lines(
            {
                label: [
                    (m, 100 * mean, None if std is None else 100 * std)
                    for m in sizes
                    if m in by
                    for mean, std in [_mean_std([r["test_cer"] for r in by[m]])]
                ]
                for label, by in groups.items()
            },
            plots / f"{target.name}-error-vs-minutes.png",
            f"{target.name}: test CER vs training data",
            "training minutes (log scale)",
            "test CER (%)",
            logx=True,
        )
        largest = max(r["minutes"] for r in target_rows)
        first_seed = min(r["seed"] for r in target_rows)
        curve_png = plot_curves(
            {
                row_label(exp, r): exp.out / r["cell"]
                for r in target_rows
                if r["minutes"] == largest and r["seed"] == first_seed
            },
            plots / f"{target.name}-curves-{largest:g}min.png",
            f"{target.name}: dev CER while training ({largest:g} min, seed {first_seed})",
        )
        parts += [
            "### Test CER (WER) by training minutes",
            "",
            table,
            "",
            f"![error vs data size](plots/{error_png.name})",
            "",
            *winners,
            f"### Learning curves ({largest:g} min, seed {first_seed})",
            "",
            f"![learning curves](plots/{curve_png.name})",
            "",
            f"### Steps to dev CER ≤ {_pct(exp.threshold_cer)}",
            "",
            "First validation step at or below the threshold (mean over the seeds that reach it).",
            "",
            markdown_table(
                ["strategy", *size_header],
                [
                    [label, *(_steps_cell(by[m]) if m in by else "" for m in sizes)]
                    for label, by in groups.items()
                ],
            ),
        ]
        switched = [r for r in target_rows if "test_stretch_cer" in r]
        if switched:
            parts += ["", *_code_switched_section(exp, switched, sizes, size_header)]
        forgetting_rows = [r for r in target_rows if "source_cer_before" in r]
        if forgetting_rows:
            parts += ["", *_forgetting_section(exp, forgetting_rows)]
        if exp.rank_steps is not None and len(exp.bases) > 1:
            parts += ["", *_rank_section(exp, target.name, target_rows, rank)]
    capped = [r for r in rows if r["stopped_by"] != "early stopping"]
    parts += ["", "## Convergence", ""]
    if capped:
        parts.append(
            f"**Not converged:** {len(capped)} of {len(rows)} cells stopped by the cap (max "
            "steps or minutes) rather than early stopping, so their dev CER might still have "
            "improved: " + ", ".join(f"`{r['cell']}` ({r['stopped_by']})" for r in capped) + "."
        )
    else:
        parts.append("Every finished cell stopped by early stopping.")
    if missing:
        parts += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    path = exp.out / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path, "\n".join(headline)


WINNER_NOTE = (
    "The strategy with the lowest test CER at each size against every other: the other's CER "
    "minus the best's, in points, with the 95% paired-bootstrap interval over the test "
    "utterances (with several seeds, each utterance summed over the seeds every strategy has); "
    "*outside chance* when the interval excludes zero. The best is picked on the same test "
    "set, and each pair has its own interval (no correction for several comparisons)."
)


def _winner_section(
    groups: dict, compared: dict, sizes: list[float]
) -> tuple[list[str], list[str]]:
    """Which strategy won each size, the best against every other by the paired bootstrap
    (``xasr.experiments.compare``): (the section's lines, ending blank; its summary lines)."""
    from xasr.decode.significance import interval_text

    def cell(label: str, m: float) -> str:
        c = compared.get(f"{m:g}")
        if c is None or m not in groups[label]:
            return ""
        if "best" not in c:
            return "no hypotheses" if label in c.get("missing", ()) else ""
        if label == c["best"]:
            return "**best**"
        against = c["against"][label]
        chance = {"tie": "within chance", "b": "outside chance"}.get(
            against["verdict"], "better than the best, outside chance"
        )
        return f"{interval_text(against)}, {chance}"

    summary = [_winner_summary(m, compared[f"{m:g}"]) for m in sizes if f"{m:g}" in compared]
    if not summary:
        return [], []
    lines = [
        "### Which strategy won (paired bootstrap)",
        "",
        WINNER_NOTE,
        "",
        markdown_table(
            ["strategy", *(f"{m:g} min" for m in sizes)],
            [[label, *(cell(label, m) for m in sizes)] for label in groups],
        ),
        "",
        *summary,
        "",
    ]
    return lines, summary


def _winner_summary(minutes: float, c: dict) -> str:
    """One line: the winner at this size, or why there is no comparison."""
    at = f"At {minutes:g} min"
    if "missing" in c:
        return (
            f"{at}: no test hypotheses for {', '.join(c['missing'])} (cells finished before "
            "cells kept test.json: `xasr experiment` again decodes them)."
        )
    if "no_common_seeds" in c:
        seeds = "; ".join(f"{lbl} {s}" for lbl, s in c["no_common_seeds"].items())
        return f"{at}: no seed that every strategy has ({seeds}), so no paired comparison."
    if "error" in c:
        return f"{at}: not compared: {c['error']}."
    clear = [lbl for lbl, a in c["against"].items() if a["verdict"] != "tie"]
    ties = [lbl for lbl in c["against"] if lbl not in clear]
    seeds = c["seeds"]
    pooled = f" (seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    return (
        f"{at}{pooled}: **{c['best']}** had the lowest test CER "
        f"({100 * c['rates'][c['best']]:.1f} %), outside chance against {len(clear)} of "
        f"{len(c['against'])} others"
        + (f"; within chance of {', '.join(ties)}" if ties else "")
        + "."
    )


def _code_switched_section(exp: Experiment, rows: list[dict], sizes, size_header) -> list[str]:
    """A code-switched target's test MER and CER within each language's stretches (means
    over seeds)."""

    def cell(group: list[dict]) -> str:
        langs = sorted({lang for r in group for lang in r["test_stretch_cer"]})
        stretches = ", ".join(
            f"{lang} {_pct(statistics.mean(r['test_stretch_cer'].get(lang, 0.0) for r in group))}"
            for lang in langs
        )
        return f"{_pct(statistics.mean(r['test_mer'] for r in group))} ({stretches})"

    return [
        "### Code-switched test set: MER (CER within each language's stretches)",
        "",
        markdown_table(
            ["strategy", *size_header],
            [
                [label, *(cell(by[m]) if m in by else "" for m in sizes)]
                for label, by in group_rows(exp, rows).items()
            ],
        ),
    ]


def _forgetting_section(exp: Experiment, rows: list[dict]) -> list[str]:
    def mean(rows: list[dict], key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    table = markdown_table(
        [
            "strategy",
            "minutes",
            "source CER before",
            "source CER after",
            "change (points)",
            "target CER before",
            "target CER after",
        ],
        [
            [
                label,
                f"{m:g}",
                _pct(mean(by[m], "source_cer_before")),
                _pct(mean(by[m], "source_cer_after")),
                f"{100 * mean(by[m], 'source_cer_change'):+.1f}",
                _pct(mean(by[m], "target_cer_before")),
                _pct(mean(by[m], "target_cer_after")),
            ]
            for label, by in group_rows(exp, rows).items()
            for m in exp.minutes
            if m in by
        ],
    )
    return [
        "### Forgetting: the source test set before and after adaptation",
        "",
        (
            "CER of the base (before) and of the adapted model (after) on source_data's test "
            "set, and on the target's test set for comparison; mean over seeds."
        ),
        "",
        table,
    ]


def _rank_section(exp: Experiment, target: str, rows: list[dict], rank: dict | None) -> list[str]:
    title = f"### Quick source ranking ({exp.rank_steps} steps) vs the full runs"
    if rank is None:
        return [title, "", "Skipped: `xasr.experiments.rank.rank_sources` is not available."]
    if target not in (rank or {}):
        return [title, "", "Not run yet."]
    strategies = [s.name for s in exp.strategies if not s.scratch]
    strategy = "transfer" if "transfer" in strategies else (strategies or [None])[0]
    largest = max(exp.minutes)
    full = {}
    for base in exp.bases:
        cers = [
            r["test_cer"]
            for r in rows
            if r["base"] == base.name and r["strategy"] == strategy and r["minutes"] == largest
        ]
        if cers:
            full[base.name] = statistics.mean(cers)
    full_rank = {name: i for i, name in enumerate(sorted(full, key=full.get), start=1)}
    quick = rank[target]
    table = markdown_table(
        [
            "base",
            "quick rank",
            "quick dev CER",
            "slope",
            f"full test CER ({strategy})",
            "full rank",
        ],
        [
            [
                r["base"],
                r["rank"],
                _pct(r.get("dev_cer")),
                r.get("slope"),
                _pct(full.get(r["base"])),
                full_rank.get(r["base"]),
            ]
            for r in sorted(quick, key=lambda r: r["rank"])
        ],
    )
    lines = [
        title,
        "",
        (
            f"`rank_sources` at {largest:g} min, seed {exp.seeds[0]}; full runs: test CER of "
            f"`{strategy}` at {largest:g} min (mean over seeds)."
        ),
        "",
        table,
    ]
    both = [r for r in quick if r["base"] in full_rank]
    if len(both) >= 2:
        from scipy.stats import kendalltau, spearmanr

        quick_ranks = [r["rank"] for r in both]
        full_ranks = [full_rank[r["base"]] for r in both]
        rho = spearmanr(quick_ranks, full_ranks).statistic
        tau = kendalltau(quick_ranks, full_ranks).statistic
        lines += [
            "",
            f"Agreement over {len(both)} bases: Spearman ρ {rho:.2f}, Kendall τ {tau:.2f}.",
        ]
    return lines
