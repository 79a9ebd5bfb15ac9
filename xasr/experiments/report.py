"""Readable reports: Markdown tables and line plots (learning curves, error vs data size)."""

from __future__ import annotations

from pathlib import Path

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


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
