"""What a training run shows while it runs: a step bar on a terminal, a line per validation
elsewhere.

Lightning's bar counts the batches of an epoch against the epoch's length; lhotse's samplers
have no length, so it showed ``Epoch 18/-2 6/1194``. A run is budgeted in steps
(``max_steps``), so this bar counts steps against that budget, across epochs and resumes:
``epoch 3, step 120/3000``, its elapsed time and rate over the whole attempt (a fresh epoch
does not restart them).

A bar written to a file (an experiment worker's log, CI) is a line per refresh and per
validation batch; there a run logs one line per validation instead:
``step 300/1500: val_cer 0.412, val_wer 0.803, train_loss 1.27 (elapsed 4m05s)``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger(__name__)


def progress_callbacks(progress: bool, stream=None) -> list[Callback]:
    """The step bar when ``progress`` is asked for and ``stream`` (default stderr) is a
    terminal; otherwise one log line per validation."""
    stream = sys.stderr if stream is None else stream
    if progress and stream.isatty():
        return [StepProgressBar()]
    return [ValidationLines()]


class StepProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # this attempt's start: the rate counts its steps only (a resume starts mid-budget)
        self._attempt = (trainer.global_step, time.time())
        self._start_bar(trainer)  # a resumed epoch gets no on_train_epoch_start

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._start_bar(trainer)

    def _start_bar(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial, bar.start_t = self._attempt  # elapsed and rate over the attempt
        bar.n = trainer.global_step
        bar.set_description(f"epoch {trainer.current_epoch}, step")
        bar.refresh()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics.pop("step", None)  # the bar shows it
        return metrics


class ValidationLines(Callback):
    """One ``INFO`` line per validation: the step against the budget, the dev scores, the last
    training loss and the time since this attempt started."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [k for k in sorted(metrics) if k.startswith("val_")]
        shown += [k for k in ("train_loss",) if k in metrics]
        scores = ", ".join(f"{k} {float(metrics[k]):.3g}" for k in shown)
        elapsed = time.monotonic() - getattr(self, "_start", time.monotonic())
        budget = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        log.info("step %d%s: %s (elapsed %s)", trainer.global_step, budget, scores,
                 _clock(elapsed))  # fmt: skip


def _clock(seconds: float) -> str:
    """``4m05s``, ``1h02m``, ``12s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
