"""An experiment's one budget: every arm trains to the same number of optimizer steps, audio
seconds seen or forward-backward passes (``xasr.train.budget`` counts them), and is scored at
its best dev checkpoint. Early stopping is an option of the whole experiment (``min_delta`` 0,
its patience stated), never the thing that decides a verdict; a wall-clock cap never defines a
budget (machines differ and are noisy).

YAML::

    budget: {steps: 600}              # or {audio_seconds: 36000}, or {passes: 1200}
    early_stopping: {patience: 8}     # optional: validations without any dev improvement

The recipe's and each arm's own keys may not set what the budget owns (``BUDGET_KEYS``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from xasr.checks import is_number
from xasr.config import TrainConfig
from xasr.errors import XasrError
from xasr.train.budget import BUDGET_UNITS

# TrainConfig keys that the experiment's budget sets for every arm alike: an arm that changed
# one would be measured against a different budget (val_every: how finely the best dev
# checkpoint is picked).
BUDGET_KEYS = (
    "max_steps",
    "max_audio_seconds",
    "max_passes",
    "max_minutes",
    "patience",
    "min_delta",
)
ARM_FIXED_KEYS = (*BUDGET_KEYS, "val_every")

# An audio-seconds budget ends by the count (the schedule follows the share spent); max_steps
# is only a ceiling, for batches filled to at least this share of max_batch_seconds. A run that
# reaches it spent less than its budget: the report's budget table says so.
LEAST_BATCH_FILL = 0.1


@dataclass(frozen=True)
class Budget:
    unit: str  # one of BUDGET_UNITS
    amount: float
    patience: int | None = None  # early stopping for every arm (None: off)

    def spent_by(self, work: dict) -> bool:
        """Whether a run's (or an arm's summed) work reached this budget."""
        key = {"steps": "steps", "passes": "passes", "audio_seconds": "audio_seconds"}[self.unit]
        value = work.get(key)
        return value is not None and value >= self.amount - 1e-6

    def describe(self) -> str:
        """'600 steps', '36000 audio seconds', '1200 forward-backward passes', with the rule."""
        names = {"steps": "optimizer steps", "audio_seconds": "audio seconds seen (all sources)",
                 "passes": "forward-backward passes"}  # fmt: skip
        stop = (
            f"early stopping after {self.patience} validations without any dev improvement"
            if self.patience is not None
            else "no early stopping"
        )
        return f"{self.amount:g} {names[self.unit]} for every arm, scored at its best dev checkpoint; {stop}"

    def recipe(self, cfg: TrainConfig, passes_per_step: int = 1) -> TrainConfig:
        """``cfg`` with this budget: ``passes_per_step`` is what one step of the arm costs
        (a meta-transfer step: 2 x tasks), so that a passes budget sets its step count."""
        changes: dict = {
            "patience": self.patience,
            "min_delta": 0.0,
            "max_minutes": None,
            "max_audio_seconds": None,
            "max_passes": None,
        }
        if self.unit == "steps":
            changes["max_steps"] = int(self.amount)
        elif self.unit == "passes":
            changes["max_steps"] = max(1, int(self.amount) // passes_per_step)
            changes["max_passes"] = int(self.amount)
        else:
            changes["max_audio_seconds"] = float(self.amount)
            fill = cfg.max_batch_seconds * LEAST_BATCH_FILL
            changes["max_steps"] = max(1, math.ceil(self.amount / fill))
        return dataclasses.replace(cfg, **changes)


def parse_budget(budget, early_stopping, where: str) -> Budget:
    """``budget:`` and ``early_stopping:`` of an experiment YAML; one-line errors naming them."""
    if not isinstance(budget, dict) or len(budget) != 1:
        raise XasrError(
            f"{where}: budget must name one unit and its amount, e.g. budget: {{steps: 600}} "
            f"(units: {', '.join(BUDGET_UNITS)})"
        )
    ((unit, amount),) = budget.items()
    if unit not in BUDGET_UNITS:
        raise XasrError(
            f"{where}: budget: unknown unit {unit!r}; use one of {', '.join(BUDGET_UNITS)}"
        )
    if not is_number(amount) or amount <= 0 or (unit != "audio_seconds" and amount != int(amount)):
        raise XasrError(
            f"{where}: budget.{unit} must be a positive {'number' if unit == 'audio_seconds' else 'integer'}, got {amount!r}"
        )
    patience = None
    if early_stopping is not None:
        if not isinstance(early_stopping, dict) or set(early_stopping) != {"patience"}:
            raise XasrError(f"{where}: early_stopping takes one key, patience (validations)")
        patience = early_stopping["patience"]
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise XasrError(f"{where}: early_stopping.patience must be a positive integer")
    return Budget(unit, float(amount), patience)


def check_no_budget_keys(keys, where: str, fixed=BUDGET_KEYS) -> None:
    """A recipe (or an arm's overrides) may not set what the budget owns."""
    owned = sorted(set(keys) & set(fixed))
    if owned:
        raise XasrError(
            f"{where}: {', '.join(owned)} cannot be set here: the experiment's budget: and "
            "early_stopping: set them for every arm alike"
        )
