"""Readable reports: Markdown tables and line plots (learning curves, error vs data size)."""

from __future__ import annotations

import statistics
from pathlib import Path

from xasr.decode.significance import interval_text
from xasr.experiments.config import Experiment, Target
from xasr.experiments.grid import group_rows, row_label
from xasr.experiments.lm_decoding import lm_section
from xasr.experiments.tables import markdown_table, work_section
from xasr.train.curve import read_curve, validation_points


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


# --- the experiment report (xasr experiment)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if len(values) > 1:
        return statistics.mean(values), statistics.stdev(values)
    return values[0], None


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
        f"{', '.join(map(str, exp.seeds))}.",
        "",
        f"**Budget:** {exp.budget.describe()}. One recipe for every cell: lr {recipe.lr}, "
        f"{recipe.max_batch_seconds:g} s batches, warm-up {recipe.warmup_steps} steps, "
        f"validation every {recipe.val_every} steps. Strategies: "
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
        *_primary_line(exp),
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
        parts += ["", *lm_section(groups, sizes)] if exp.lm is not None else []
        switched = [r for r in target_rows if "test_stretch_cer" in r]
        if switched:
            parts += ["", *_code_switched_section(exp, switched, sizes, size_header)]
        forgetting_rows = [r for r in target_rows if "source_cer_before" in r]
        if forgetting_rows:
            parts += ["", *_forgetting_section(exp, forgetting_rows)]
        if exp.rank_steps is not None and len(exp.bases) > 1:
            parts += ["", *_rank_section(exp, target.name, target_rows, rank)]
    parts += ["", *_work_section(exp, rows)]
    if missing:
        parts += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    path = exp.out / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path, "\n".join(headline)


WINNER_NOTE = (
    "The strategy with the lowest mean best-dev CER at each size (chosen on dev, never on test) "
    "against every other on test: the other's CER minus the chosen one's, in points, with the "
    "95% interval of a hierarchical bootstrap that draws both the training seeds and the test "
    "utterances; *outside chance* when the interval excludes zero. Each pair has its own "
    "interval (no correction for several comparisons)."
)


def _primary_line(exp: Experiment) -> list[str]:
    if not exp.primary:
        return []
    said = "; ".join(
        f"`{arm}` against `{against}` on the {on}'s test CER" for arm, against, on in exp.primary
    )
    return [
        "",
        (
            f"**Primary comparisons** (named in the config before any result), per target, size "
            f"and base: {said}. *held* when the first's CER is lower outside chance (the "
            "hierarchical bootstrap's 95% interval below zero), *reversed* when higher outside "
            "chance, *no difference* otherwise."
        ),
    ]


def _winner_section(
    groups: dict, compared: dict, sizes: list[float]
) -> tuple[list[str], list[str]]:
    """Which strategy won each size, the one chosen on dev against every other
    (``xasr.experiments.compare.compare_grid``): (the section's lines, ending blank; its
    summary lines: the primary verdict and the winner)."""

    def cell(label: str, m: float) -> str:
        c = compared.get(f"{m:g}", {}).get("winner")
        if c is None or m not in groups[label]:
            return ""
        if label == c["best"]:
            return "**chosen on dev**"
        against = c["against"][label]
        if "verdict" not in against:
            return against.get("error", against.get("missing", ""))
        chance = {"tie": "within chance", "b": "worse, outside chance"}.get(
            against["verdict"], "better, outside chance"
        )
        return f"{interval_text(against)}, {chance}"

    summary = []
    for m in sizes:
        c = compared.get(f"{m:g}")
        if c is not None:
            summary += _primary_summary(m, c) + [_winner_summary(m, c)]
            summary += [
                f"At {m:g} min, `{family}` is `{member}` (chosen on dev)."
                for family, member in c.get("chosen", {}).items()
            ]
    if not summary:
        return [], []
    lines = [
        "### Which strategy won (chosen on dev, tested by the hierarchical bootstrap)",
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


def _primary_summary(minutes: float, c: dict) -> list[str]:
    """The primary verdicts at this size, one line each per base (said even when one could not
    be made)."""
    lines = []
    for base, verdicts in c.get("primary", {}).items():
        for v in verdicts:
            compared = v["compared"]
            at = f"At {minutes:g} min, from {base}, `{v['arm']}` against `{v['against']}`"
            if "verdict" not in compared:
                reason = compared.get("missing") or compared.get("error") or "no runs"
                lines.append(f"{at}: not made ({reason}).")
                continue
            lines.append(
                f"{at} on the {v['test']}'s test CER: **{v['verdict']}**, difference "
                f"{interval_text(compared)} (seeds {compared['seeds'][0]} and "
                f"{compared['seeds'][1]})."
            )
    return lines


def _winner_summary(minutes: float, c: dict) -> str:
    """One line: the strategy chosen on dev at this size, and how it fared on test."""
    w = c["winner"]
    compared = {lbl: a for lbl, a in w["against"].items() if "verdict" in a}
    better = [lbl for lbl, a in compared.items() if a["verdict"] == "b"]
    worse = [lbl for lbl, a in compared.items() if a["verdict"] == "a"]
    ties = [lbl for lbl, a in compared.items() if a["verdict"] == "tie"]
    rate = w["rates"].get(w["best"])
    text = f"At {minutes:g} min, **{w['best']}** had the lowest dev CER" + (
        f" (test CER {100 * rate:.1f} %)" if rate is not None else ""
    )
    text += f"; on test it beat {len(better)} of {len(compared)} others outside chance"
    if len(compared) < len(w["against"]):
        text += f" ({len(w['against']) - len(compared)} not compared: no test hypotheses)"
    if ties:
        text += f", within chance of {', '.join(ties)}"
    if worse:
        text += f"; worse than {', '.join(worse)} outside chance (dev and test disagree)"
    return text + "."


def _work_section(exp: Experiment, rows: list[dict]) -> list[str]:
    """What each arm spent (``xasr.experiments.tables.work_section``)."""
    arms = [
        ([target.name, label, f"{m:g}"], group)
        for target in exp.targets
        for label, by in group_rows(exp, [r for r in rows if r["target"] == target.name]).items()
        for m, group in by.items()
    ]
    return work_section(arms, ["target", "strategy", "min"], exp.budget)


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
