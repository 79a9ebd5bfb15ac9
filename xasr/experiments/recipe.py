"""The one recipe every experiment (and ``make demo``) starts from; a config's ``recipe:``
changes keys of it, and its ``budget:`` sets the steps and early stopping
(``xasr.experiments.budget``)."""

from __future__ import annotations

from xasr.config import TrainConfig

DEFAULT_RECIPE = TrainConfig(
    lr=1.5e-3,
    warmup_steps=50,
    max_steps=600,  # replaced by the experiment's budget
    max_batch_seconds=60.0,
    val_every=50,
    patience=None,  # no early stopping unless the experiment asks for it
    min_delta=0.0,
    num_workers=1,
)
EARLY_STEP = 100  # the reports' "dev CER after the same early number of steps"
