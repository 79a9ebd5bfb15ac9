"""A training progress bar over optimizer steps, with a real total.

Lightning's bar counts the batches of an epoch against the epoch's length; lhotse's samplers
have no length, so it showed ``Epoch 18/-2 6/1194``. A run is budgeted in steps
(``max_steps``), so this bar counts steps against that budget, across epochs and resumes:
``epoch 3, step 120/3000``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start_bar(trainer)  # a resumed epoch gets no on_train_epoch_start

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._start_bar(trainer)

    def _start_bar(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = bar.n = trainer.global_step  # the rate counts this attempt's steps only
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
