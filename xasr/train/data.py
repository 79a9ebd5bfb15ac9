"""The training data as Lightning sees it: loaders built once the rank and world size are
known, and where the data stands saved in every checkpoint."""

from __future__ import annotations

import lightning as L

from xasr.config import TrainConfig
from xasr.data.batching import make_loader
from xasr.data.sources import MetaBatches
from xasr.data.vocab import Vocab


class CutsData(L.LightningDataModule):
    """Builds the loaders once Lightning knows this process's rank and the world size.

    ``train_cuts``: one CutSet per training source, mixed by their ``shares`` of the audio
    seconds as ``cfg.mixing``/``cfg.source_batches`` say (``xasr.data.sources``), or grouped
    into meta-transfer steps with ``cfg.meta_variant`` (``MetaSampler``); validation
    reads ``valid_cuts`` (every dev set together).

    Its state, saved in every checkpoint, is where the training data stands (the epoch and how
    many of its batches were trained on), so that a resumed run continues the epoch with the
    batch the killed one would have trained on next (``ResumableSampler``).
    """

    def __init__(
        self,
        train_cuts: list,
        valid_cuts,
        vocab: Vocab,
        cfg: TrainConfig,
        shares: list[float] | None = None,
    ):
        super().__init__()
        self.train_cuts, self.valid_cuts, self.vocab, self.cfg = train_cuts, valid_cuts, vocab, cfg
        self.shares = shares
        self._resume_at: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        loop = self.trainer.fit_loop
        return {
            # the epoch number Lightning gives the sampler's set_epoch
            "epoch": loop.epoch_progress.current.processed,
            # batches of this epoch trained on (optimizer steps taken), across earlier resumes
            "batches": loop.epoch_loop.batch_progress.current.completed,
        }

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def _loader(self, cuts, shuffle: bool, on_unknown: str, shares=None, meta=None):
        return make_loader(
            cuts,
            self.vocab,
            self.cfg.max_batch_seconds,
            shuffle=shuffle,
            seed=self.cfg.seed,
            num_workers=self.cfg.num_workers,
            world_size=self.trainer.world_size,
            rank=self.trainer.global_rank,
            on_unknown=on_unknown,
            shares=shares,
            mixing=self.cfg.mixing,
            batches=self.cfg.source_batches,
            meta=meta,
        )

    def train_dataloader(self):
        cfg = self.cfg
        meta = (
            MetaBatches(cfg.k_train, cfg.k_valid, cfg.meta_tasks)
            if cfg.meta_variant is not None
            else None
        )
        loader = self._loader(
            self.train_cuts, shuffle=True, on_unknown=cfg.on_unknown, shares=self.shares, meta=meta
        )
        if self._resume_at is not None:  # restored from a checkpoint before this is called
            loader.sampler.resume(*self._resume_at)
            self._resume_at = None
        return loader

    def val_dataloader(self):
        return self._loader(self.valid_cuts, shuffle=False, on_unknown="unk")
