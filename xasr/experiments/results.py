"""A grid experiment's results as a table (results.csv)."""

from __future__ import annotations

import csv
from pathlib import Path

from xasr.experiments.recipe import EARLY_STEP

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
    "passes",
    "audio_seconds",
    "target_audio_seconds",
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


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
