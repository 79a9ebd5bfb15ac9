"""What a training run spent, and the budget that ends it: optimizer steps, audio seconds seen,
or forward-backward passes.

A fair comparison gives every arm the same budget in one unit. Steps alone are not enough: a
meta-transfer step makes 2 x tasks forward-backward passes (a support and a query pass per
task) where plain training makes one, and replay or joint training spend part of each batch on
source speech. So every run counts all three, and the target's share of the audio (the first
training source: the target by convention of ``transfer``, ``train`` and the experiment kinds),
and any one of them can end the run:

* steps: ``TrainConfig.max_steps`` (Lightning's own ``max_steps``);
* audio seconds: ``TrainConfig.max_audio_seconds``, every source's audio counted once per step
  that reads it;
* passes: ``TrainConfig.max_passes``.

With the last two, the learning-rate schedule follows the share of the budget spent
(``WorkCounter.fraction``), not the steps, so a run's cosine ends with its budget.

Counts travel in the checkpoint, so a killed run resumes with them. Under DDP each rank counts
its own batches and the figures are this rank's times the world size (ranks draw equal shares).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import lightning as L

BUDGET_UNITS = ("steps", "audio_seconds", "passes")


@dataclass
class Work:
    """What a run has spent so far; ``source_audio_seconds``: per training source, in the
    order given (the first: the target)."""

    steps: int = 0
    passes: int = 0
    source_audio_seconds: list[float] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return sum(self.source_audio_seconds)

    @property
    def target_audio_seconds(self) -> float:
        return self.source_audio_seconds[0] if self.source_audio_seconds else 0.0

    def add(self, passes: int, by_source: dict[int, float], scale: int = 1) -> None:
        self.steps += 1
        self.passes += passes * scale
        for source, seconds in by_source.items():
            missing = source + 1 - len(self.source_audio_seconds)
            self.source_audio_seconds += [0.0] * max(0, missing)
            self.source_audio_seconds[source] += seconds * scale

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "passes": self.passes,
            "audio_seconds": round(self.audio_seconds, 2),
            "target_audio_seconds": round(self.target_audio_seconds, 2),
            "source_audio_seconds": [round(s, 2) for s in self.source_audio_seconds],
        }


def step_work(batch: dict) -> tuple[int, dict[int, float]]:
    """(forward-backward passes, {training source: audio seconds}) of one training step's
    batch: a plain batch is one pass; a meta-transfer step (``{"supports", "query"}``) is a
    support pass and a query pass per task, and reads each batch's audio once."""
    if "supports" in batch:
        batches = [*batch["supports"], batch["query"]]
        passes = 2 * len(batch["supports"])
    else:
        batches, passes = [batch], 1
    by_source: dict[int, float] = {}
    for part in batches:
        lengths = (part["audio_lengths"].double() / 16000).tolist()
        for source, seconds in zip(part.get("sources", [0] * len(lengths)), lengths):
            by_source[source] = by_source.get(source, 0.0) + seconds
    return passes, by_source


class WorkCounter(L.Callback):
    """Counts every training step's ``Work``; asks Lightning to stop (which validates that step,
    so it competes for the best model) once the audio-seconds or passes budget is spent."""

    def __init__(self, max_audio_seconds: float | None = None, max_passes: int | None = None):
        self.work = Work()
        self.max_audio_seconds = max_audio_seconds
        self.max_passes = max_passes

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx):
        self.work.add(*step_work(batch), scale=trainer.world_size)
        # every rank stops together (ranks' batches differ in length, so their counts do too)
        if trainer.strategy.reduce_boolean_decision(self.spent() is not None, all=False):
            trainer.should_stop = True

    def spent(self) -> str | None:
        """Which budget is spent ("audio seconds budget", "passes budget") or None."""
        if self.max_audio_seconds is not None and self.work.audio_seconds >= self.max_audio_seconds:
            return "audio seconds budget"
        if self.max_passes is not None and self.work.passes >= self.max_passes:
            return "passes budget"
        return None

    def fraction(self) -> float:
        """The largest share spent of the audio-seconds and passes budgets (0: none set): the
        learning-rate schedule's clock for such budgets."""
        shares = [0.0]
        if self.max_audio_seconds:
            shares.append(self.work.audio_seconds / self.max_audio_seconds)
        if self.max_passes:
            shares.append(self.work.passes / self.max_passes)
        return max(shares)

    def state_dict(self) -> dict:
        return asdict(self.work)

    def load_state_dict(self, state_dict: dict) -> None:
        self.work = Work(**state_dict)
