"""Checkpoints that survive a kill: atomic writes, and the best model exported as it improves."""

from __future__ import annotations

import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from xasr.io import write_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary name, then rename: a kill or a full disk mid-write never leaves a
    torn last.ckpt (a full disk is a ``DiskError``, the previous checkpoint intact)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        write_file(
            Path(path),
            lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(
                checkpoint, tmp, storage_options
            ),
        )


class LastAtEveryValidation(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at every validation.

    In Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only in a step where a top-k
    checkpoint was written, i.e. only when dev CER improved; a kill would then lose every step
    since the last improvement. A checkpoint callback, so Lightning runs it after the others
    and their states (best model, early stopping) are saved up to date.
    """

    @property
    def state_key(self) -> str:
        # plain ModelCheckpoint's key, so checkpoints written before this class still resume
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # Skipped when nothing trained yet, in the sanity check, or if already saved this step.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ExportBestModel(L.Callback):
    """After each validation that improves the monitored metric, write the model directory.

    ``save(model, meta)`` writes it: for a recognizer the self-describing xasr directory
    (config, vocabulary, safetensors) that `xasr evaluate`, `transcribe` and `transfer --from`
    read; Lightning's .ckpt files are only for resuming. ``meta`` is ``meta`` with the step and
    the dev scores of that validation.
    """

    def __init__(self, save, meta: dict, monitor: str = "val_cer"):
        self.save = save
        self.monitor = monitor
        self.meta = meta
        self.best = float("inf")
        self.best_step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        value = float(metrics[self.monitor])
        if value < self.best:
            self.best, self.best_step = value, trainer.global_step
            if trainer.is_global_zero:
                meta = {**self.meta, "monitor": self.monitor, "step": trainer.global_step}
                if "val_cer" in metrics:  # a recognizer's (keys older directories have too)
                    meta["dev_cer"] = float(metrics["val_cer"])
                    meta["monitored_cer"] = value
                    meta["dev_wer"] = float(metrics.get("val_wer", float("nan")))
                else:
                    meta["monitored"] = value
                self.save(pl_module.model, meta)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]
        self.best_step = state_dict["best_step"]


class ValidateAtLastStep(L.Callback):
    """Validate (and so checkpoint and maybe export) after the step that reaches ``max_steps``.

    Lightning validates every ``val_every`` steps and when a callback asks it to stop (the
    time budget, early stopping), but not when ``max_steps`` ends the run between two
    validations: the last steps would then never compete for the best model, and last.ckpt
    would miss them. Asking to stop at that step makes Lightning validate it.
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class RandomState(L.Callback):
    """Every random generator's state in each checkpoint, restored when training resumes.

    Dropout and SpecAugment draw from torch's generator; numpy's and Python's are saved too
    for anything else that draws. The state is restored just before the first training step
    of the resumed run, not when the checkpoint is read: building the model and starting the
    data loader in between draw from the generators too, which an uninterrupted run did at
    other times. Saved as plain tensors and lists (Lightning loads checkpoints weights-only).
    Under DDP every rank's state is gathered into rank 0's checkpoint (Lightning asks every
    rank for its callbacks' states at the same moment), and each rank restores its own; a run
    resumed with another number of ranks restores rank 0's everywhere.
    """

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        local = _generator_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, local)
            return {"ranks": ranks}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self._pending is None:
            return
        saved, self._pending = self._pending, None
        ranks = saved.get("ranks", [saved])  # checkpoints before per-rank states held one
        same_world = len(ranks) == trainer.world_size
        _set_generator_states(ranks[trainer.global_rank if same_world else 0])


def _generator_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    python = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [python[0], list(python[1]), python[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's device only
    return state


def _set_generator_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class TrainingClock(L.Callback):
    """Training seconds across resumes: a killed run's earlier processes are counted through
    the checkpoint (``state_dict``), so that a resumed run's ``result.json`` reports the time
    the whole run took, not its last process's (the steps redone after the last checkpoint
    count twice, as they were computed twice)."""

    def __init__(self):
        self.before = 0.0
        self.started = time.monotonic()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.before + time.monotonic() - self.started

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict["seconds"])
