"""Saying so when a CTC run is stuck decoding blanks.

A CTC model first learns to emit only blanks (the cheapest way to lower the loss), then leaves
that phase. A run that stays in it decodes nothing at every validation, its CER near 100 %,
and a user cannot tell a slow start from a broken setup. ``val_output_ratio`` (characters the
greedy hypotheses hold over the references', ``AsrTask``) shows it; after ``patience``
validations in a row below ``threshold`` the run logs one warning with the likely causes.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

THRESHOLD = 0.05  # the hypotheses hold under 5 % of the references' characters
PATIENCE = 3  # validations in a row

LIKELY_CAUSES = (
    "a learning rate that does not suit the model (a pretrained encoder wants one well below "
    "its new head's, with warm-up), an encoder frozen too long, audio unlike what the front "
    "end expects (sample rate, level, padding), or a budget too small to leave the phase"
)


class BlankPhaseWatch(Callback):
    def __init__(self, threshold: float = THRESHOLD, patience: int = PATIENCE):
        self.threshold, self.patience = threshold, patience
        self.steps: list[int] = []  # the validations in a row below the threshold
        self.warned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ratio = trainer.callback_metrics.get("val_output_ratio")
        if ratio is None or trainer.sanity_checking:
            return
        if float(ratio) >= self.threshold:
            self.steps = []
            return
        self.steps.append(trainer.global_step)
        if len(self.steps) >= self.patience and not self.warned and trainer.is_global_zero:
            self.warned = True
            log.warning(
                "validation decoded almost nothing (%.1f%% of the references' characters) at "
                "%d validations in a row (steps %d-%d): the model is still in CTC's blank "
                "phase; likely causes: %s",
                100 * float(ratio), len(self.steps), self.steps[0], self.steps[-1], LIKELY_CAUSES,
            )  # fmt: skip
