"""The learning curve of a run, merged across resumed attempts.

Each attempt logs to RUN/logs/attempt-K/metrics.csv (Lightning's CSV logger would otherwise delete
the earlier file on resume). Rows of an earlier attempt past the step where the next attempt
resumed are dropped: they were lost with the kill and trained again.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger

from xasr.io import DiskError, describe_os_error, write_file

LOG_DIR = "logs"


class CurveLogger(CSVLogger):
    """Lightning's CSV logger, whose write errors (a full disk) name its file."""

    def save(self) -> None:
        try:
            super().save()
        except OSError as err:
            raise DiskError(describe_os_error(err, self.experiment.metrics_file_path)) from None


def next_attempt(run_dir: Path) -> str:
    existing = sorted((run_dir / LOG_DIR).glob("attempt-*"))
    return f"attempt-{len(existing)}"


def read_curve(run_dir: str | Path) -> list[dict]:
    """Rows {"step": int, "train_loss"?, "train_penalty"?, "val_cer"?, "val_wer"?,
    "val_cer_<lang>"?, "val_wer_<lang>"?, "val_output_ratio"?, "val_loss"?, "val_loss_<lang>"?:
    float} by step
    (``val_loss``: continued self-supervised pre-training's dev score)."""
    attempts = sorted(
        (Path(run_dir) / LOG_DIR).glob("attempt-*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("-")[1]),
    )
    rows: list[dict] = []
    for path in attempts:
        with path.open(newline="") as handle:
            new = [_parse(row) for row in csv.DictReader(handle)]
        # Where this attempt took over: its first row of the curve itself (epoch-level rows
        # such as audio_seconds carry Lightning's own step count, which can lie earlier).
        curve = [row["step"] for row in new if row.keys() & {"train_loss", "val_cer", "val_loss"}]
        if curve:
            rows = [row for row in rows if row["step"] < min(curve)]
        rows.extend(new)
    return sorted(rows, key=lambda row: row["step"])


def write_curve(run_dir: str | Path) -> Path:
    rows = read_curve(run_dir)
    keys = ["step", "train_loss", "val_cer", "val_wer"]
    if any("train_penalty" in row for row in rows):  # transfer --l2sp / --ewc
        keys.insert(2, "train_penalty")
    if any("val_loss" in row for row in rows):  # continued pre-training (SslTask)
        keys.append("val_loss")
    if any("val_output_ratio" in row for row in rows):  # how much greedy decoding writes
        keys.append("val_output_ratio")
    # a dev set of several languages: each one's scores (AsrTask.val_langs)
    prefixes = ("val_cer_", "val_wer_", "val_loss_")
    keys += sorted({k for row in rows for k in row if k.startswith(prefixes)})
    path = Path(run_dir) / "metrics.csv"

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(row for row in rows if any(k in row for k in keys[1:]))

    write_file(path, write)
    return path


def validation_points(rows: list[dict]) -> list[tuple[int, float]]:
    """(step, dev CER) pairs in step order."""
    return [(row["step"], row["val_cer"]) for row in rows if "val_cer" in row]


def _parse(row: dict) -> dict:
    parsed = {"step": int(float(row["step"]))}
    for key, value in row.items():
        if key != "step" and value not in ("", None):
            parsed[key] = float(value)
    return parsed
