"""Readable reports: a Markdown table and a learning-curve PNG from run directories."""

from __future__ import annotations

from pathlib import Path

from xasr.train.curve import read_curve, validation_points


def cer_at_step(run_dir: Path, step: int) -> float | None:
    """Dev CER at the last validation at or before ``step`` (None if none yet)."""
    points = [cer for s, cer in validation_points(read_curve(run_dir)) if s <= step]
    return points[-1] if points else None


def plot_curves(runs: dict[str, Path], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run_dir in runs.items():
        points = validation_points(read_curve(run_dir))
        if points:
            steps, cers = zip(*points)
            ax.plot(steps, [100 * c for c in cers], marker="o", markersize=3, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("dev CER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
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
