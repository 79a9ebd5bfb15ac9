"""The LightningModule: one training step on the model's own loss, validation with summed
error counts.

An optional ``penalty`` (a module called with the model, e.g. L2-SP or EWC from
``xasr.transfer.forgetting.AnchorPenalty``) is added to the training loss.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from torch import nn

from xasr.config import TrainConfig
from xasr.data.features import spec_augment
from xasr.decode.metrics import ErrorCounts, error_counts, error_counts_by_language
from xasr.decode.options import default_strategy
from xasr.decode.strategy import decode
from xasr.errors import XasrError
from xasr.train.budget import WorkCounter
from xasr.train.meta import MetaOptions, inner_step_diagnosis, meta_gradient


def make_adamw(
    params, lr: float, weight_decay: float, device: torch.device | str, precision: str = "32-true"
):
    """xasr's AdamW: the fused single-kernel step on CPU (3x faster than the per-tensor loop for
    the small model, 9 vs 29 ms), the default multi-tensor step elsewhere: Lightning refuses
    gradient clipping with a fused optimizer under any mixed precision (CPU bf16-mixed too)."""
    fused = torch.device(device).type == "cpu" and str(precision) in ("32-true", "32")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class AsrTask(L.LightningModule):
    """Training and validation of any model of the protocol (``xasr.models.ctc``): the loss is
    the model's own, validation decodes with the model's default strategy.

    ``frozen_until``: names of parameters held still for the first ``cfg.freeze_steps`` steps.

    ``penalty``: None, or a module whose ``forward(model)`` returns a scalar added to the
    model's loss (logged as ``train_penalty``; ``train_loss`` stays the model's loss, so curves compare
    across strategies). Being a submodule, its buffers follow the model to the device and are
    saved in (and restored from) Lightning's checkpoints, never in the exported model directory.
    The parameters it names in ``penalty.anchored`` get no AdamW weight decay: decay pulls
    toward 0, the penalty toward its reference weights, and the two would fight.

    ``val_langs``: the languages of the dev set when it has several; validation then also logs
    ``val_cer_<lang>``, ``val_wer_<lang>`` and their macro average ``val_cer_macro`` (the list
    is fixed up front, so every DDP rank reduces the same tensor, whatever languages its own
    batches held).
    """

    def __init__(
        self,
        model: nn.Module,
        vocab,
        cfg: TrainConfig,
        frozen_until: frozenset[str] = frozenset(),
        penalty: nn.Module | None = None,
        val_langs: tuple[str, ...] = (),
        masks=None,
    ):
        super().__init__()
        self.val_langs = val_langs
        self.masks = masks  # LanguageMasks: each batch trains and decodes its language's
        self._kept: dict[str, torch.Tensor] = {}
        self._mask_lang: str | None = None
        self._device_masks = None  # (device, LanguageMasks there)
        self.frozen_until = frozen_until
        self.model = model
        if cfg.ctc_loss_weight is not None:
            set_ctc_loss_weight(model, cfg.ctc_loss_weight)
        self.penalty = penalty
        self.vocab = vocab
        self.cfg = cfg
        self._val_counts = ErrorCounts()
        self._val_by_lang: dict[str, ErrorCounts] = {}
        # Validation decodes with the model's default (greedy) strategy: fast, and comparable.
        self._decoder = default_strategy(model, vocab)
        self._augment = (
            partial(
                spec_augment,
                freq_masks=cfg.freq_masks,
                freq_width=cfg.freq_mask_width,
                time_masks=cfg.time_masks,
                time_fraction=cfg.time_mask_fraction,
            )
            if cfg.spec_augment
            else None
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.masks is None:
            loss, _ = self.model.loss(batch, self._augment)
        else:
            loss = self._masked_loss(batch)
        seconds = batch["audio_lengths"].sum() / 16000
        # "step" sets the step the logger records: the update this batch makes (1-based), where
        # Lightning would write the count of updates before it.
        self.log("step", float(self.global_step + 1), batch_size=1)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["texts"]))
        if self.penalty is not None:
            penalty = self.penalty(self.model)
            self.log("train_penalty", penalty, batch_size=len(batch["texts"]))
            loss = loss + penalty
        self.log(
            "audio_seconds",
            seconds,
            reduce_fx="sum",
            batch_size=1,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        return loss

    def _masks_of(self, lang: str) -> dict[str, torch.Tensor]:
        """``lang``'s masks on the model's device (moved there once)."""
        if self._device_masks is None or self._device_masks[0] != self.device:
            self._device_masks = (self.device, self.masks.on(self.device))
        return self._device_masks[1].of(lang)

    def _masked_loss(self, batch: dict) -> torch.Tensor:
        """The loss through the batch's language's sub-network (``xasr.models.masks``)."""
        from xasr.models.masks import masked_call

        langs = set(batch["langs"])
        if len(langs) != 1:
            raise XasrError(
                f"sparse sharing trains one language per batch, got {sorted(map(str, langs))}: "
                "train with --source-batches language"
            )
        self._mask_lang = langs.pop()
        masks = self._masks_of(self._mask_lang)
        loss, _ = masked_call(self.model, masks, lambda m, b, a: m.loss(b, a), batch, self._augment)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # AdamW's momentum and weight decay would still move weights outside the language's
        # mask (their gradient is 0): keep them here, after the backward pass, and put them
        # back as soon as the step is done (optimizer_step), before any callback sees them.
        if self.masks is not None:
            params = dict(self.model.named_parameters())
            self._kept = {n: params[n].detach().clone() for n in self._masks_of(self._mask_lang)}

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.masks is None or not self._kept:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, mask in self._masks_of(self._mask_lang).items():
                params[name].copy_(torch.where(mask, params[name], self._kept[name]))
        self._kept = {}

    def _decode(self, batch: dict) -> list[str]:
        """Hypotheses of a validation batch: with masks, each utterance through its
        language's sub-network."""
        audio, lengths = batch["audio"], batch["audio_lengths"]
        if self.masks is None:
            return decode(self._decoder, self.model, audio, lengths)
        from xasr.models.masks import masked_call

        hyps = [""] * len(lengths)
        for lang in dict.fromkeys(batch["langs"]):
            idx = [i for i, g in enumerate(batch["langs"]) if g == lang]
            group = masked_call(
                self.model,
                self._masks_of(lang),
                lambda m, a, n: decode(self._decoder, m, a, n),
                *sub_batch(audio, lengths, idx),
            )
            for i, hyp in zip(idx, group):
                hyps[i] = hyp
        return hyps

    def on_validation_epoch_start(self) -> None:
        self._val_counts = ErrorCounts()
        self._val_by_lang = {lang: ErrorCounts() for lang in self.val_langs}
        self._val_chars = torch.zeros(2, dtype=torch.float64)  # hypotheses', references'

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        hyps = self._decode(batch)
        self._val_counts += error_counts(batch["texts"], hyps)
        self._val_chars += torch.tensor(
            [sum(len(h.strip()) for h in hyps), sum(len(r.strip()) for r in batch["texts"])],
            dtype=torch.float64,
        )
        if self.val_langs:
            by_lang = error_counts_by_language(batch["texts"], hyps, batch["langs"])
            for lang, counts in by_lang.items():
                if lang in self._val_by_lang:
                    self._val_by_lang[lang] += counts

    def on_validation_epoch_end(self) -> None:
        # Sum edit counts over ranks before dividing: a mean of per-rank rates would be biased.
        # One tensor: the whole set's counts, then each language's.
        parts = [self._val_counts, *(self._val_by_lang[lang] for lang in self.val_langs)]
        counts = torch.tensor(
            [p.as_tuple() for p in parts], dtype=torch.float64, device=self.device
        )
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        total, *by_lang = (ErrorCounts(*(int(c) for c in row)) for row in counts.tolist())
        log = partial(self.log, sync_dist=False, rank_zero_only=False)
        log("step", float(self.global_step))  # updates so far
        log("val_cer", total.cer, prog_bar=True)
        log("val_wer", total.wer, prog_bar=True)
        log("val_mer", total.mer)  # = val_wer without CJK text; code-switched Mandarin's score
        # how much the model writes: near 0 while CTC still decodes only blanks (BlankPhaseWatch)
        chars = self.trainer.strategy.reduce(self._val_chars.to(self.device), reduce_op="sum")
        log("val_output_ratio", float(chars[0] / chars[1].clamp(min=1)))
        for lang, counts in zip(self.val_langs, by_lang):
            log(f"val_cer_{lang}", counts.cer)
            log(f"val_wer_{lang}", counts.wer)
        if by_lang:  # each language weighs alike, however much dev speech it has
            log("val_cer_macro", sum(c.cer for c in by_lang) / len(by_lang))

    def configure_optimizers(self):
        optimizer = make_adamw(
            self._param_groups(),
            self.cfg.lr,
            self.cfg.weight_decay,
            self.device,
            self.trainer.precision,
        )
        groups = optimizer.param_groups
        schedule = partial(
            lr_factor,
            warmup=self.cfg.warmup_steps,
            total=self.cfg.max_steps,
            spent=self._budget_spent,
        )
        # A group frozen for the first S steps has learning rate 0 until then: AdamW's decoupled
        # weight decay is scaled by the learning rate too, so those weights do not move at all,
        # and DDP sees the same parameter set throughout.
        factors = [
            partial(_delayed, schedule, self.cfg.freeze_steps or 0)
            if g["name"].startswith("frozen_until")
            else schedule
            for g in groups
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _budget_spent(self) -> float:
        """The share of the run's audio-seconds or passes budget spent so far (0 without one)."""
        counters = [c for c in self.trainer.callbacks if isinstance(c, WorkCounter)]
        return max((c.fraction() for c in counters), default=0.0)

    def _param_groups(self) -> list[dict]:
        """trainable / frozen_until groups, each split off into an ``_anchored`` twin without
        weight decay for the parameters the penalty anchors (the order keeps runs without a
        penalty resumable from older checkpoints)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        anchored = getattr(self.penalty, "anchored", frozenset())
        groups = []
        for suffix, anchor in (("", False), ("_anchored", True)):
            for name, delayed in (("trainable", False), ("frozen_until", True)):
                params = [
                    p
                    for n, p in named
                    if (n in anchored) == anchor and (n in self.frozen_until) == delayed
                ]
                group = {"params": params, "name": name + suffix}
                if anchor:
                    group["weight_decay"] = 0.0
                groups.append(group)
        return [g for g in groups if g["params"]]


class MetaAsrTask(AsrTask):
    """``AsrTask`` whose every training step is a first-order meta-transfer step
    (``xasr.train.meta``), by Lightning's manual optimisation: each batch is
    ``{"supports": [...], "query": ...}`` (``xasr.data.sources.MetaSampler``); the outer
    gradient G is averaged over DDP ranks, clipped to ``cfg.grad_clip`` and stepped by the
    same AdamW and schedule as ``AsrTask``'s. Validation is ``AsrTask``'s.

    The inner steps adapt every trainable weight (those frozen for the first steps too: the
    adaptation is undone before the outer step, whose learning rate holds them still). A
    ``penalty`` adds its gradient at the start weights to G.
    """

    def __init__(self, *args, meta: MetaOptions, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta = meta
        self.automatic_optimization = False

    def _loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model.loss(batch, self._augment)[0]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if (self.global_step + 1) % self.cfg.val_every == 0:
            self._diagnose(batch)
        grads, stats = meta_gradient(
            self.model, self._loss, batch["supports"], batch["query"], self.meta
        )
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.penalty is not None:
            penalty = self.penalty(self.model)
            extra = torch.autograd.grad(penalty, list(params.values()), allow_unused=True)
            for name, g in zip(params, extra):
                if g is not None:
                    grads[name] = grads[name] + g
            self.log("train_penalty", penalty.detach(), batch_size=1)
        self._step(params, grads)
        query = len(batch["query"]["texts"])
        self.log("step", float(self.global_step), batch_size=1)  # updates so far, this one in
        # train_loss is the query loss at the adapted weights: what the outer step lowers.
        self.log("train_loss", stats["query_loss"], prog_bar=True, batch_size=query)
        self.log("support_loss", stats["support_loss"], batch_size=query)
        seconds = sum(b["audio_lengths"].sum() for b in [*batch["supports"], batch["query"]])
        self.log(
            "audio_seconds",
            seconds / 16000,
            reduce_fx="sum",
            batch_size=1,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )

    def _diagnose(self, batch: dict) -> None:
        """At each validation step, whether the inner step did anything
        (``xasr.train.meta.inner_step_diagnosis``), written straight to the curve's log (as
        ``inner_step``, ``query_cosine``: step metrics would be thinned by log_every_n_steps)."""
        found = inner_step_diagnosis(
            self.model, lambda m, b: m.loss(b, None)[0], batch["supports"], batch["query"],
            self.meta,
        )  # fmt: skip
        if self.logger is not None and self.trainer.is_global_zero:
            self.logger.log_metrics(found, step=self.global_step + 1)

    def _step(self, params: dict[str, nn.Parameter], grads: dict[str, torch.Tensor]) -> None:
        """The outer AdamW step along ``grads``, averaged over ranks and clipped."""
        names = list(params)
        flat = torch.cat([grads[n].reshape(-1) for n in names])
        if self.trainer.world_size > 1:  # one all-reduce of every gradient: the ranks' mean
            flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        if self.cfg.grad_clip:
            norm = float(torch.linalg.vector_norm(flat))
            flat = flat * min(1.0, self.cfg.grad_clip / (norm + 1e-6))
        optimizer = self.optimizers()
        offset = 0
        for name in names:
            p = params[name]
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()


def set_ctc_loss_weight(model: nn.Module, weight: float) -> None:
    """Train an attention encoder-decoder with ``weight`` x CTC in its loss (the model keeps
    its config: the exported directory has its CTC branch as before); refused for models
    without a CTC weight (a CTC model's loss is all CTC)."""
    if not (model.has_decoder and model.has_ctc):
        raise XasrError(
            "ctc_loss_weight: only an attention encoder-decoder with a CTC branch has a CTC "
            "weight to change"
        )
    model.ctc_weight = weight


def sub_batch(
    audio: torch.Tensor, lengths: torch.Tensor, idx: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterances ``idx`` of a padded batch (batch, samples), cut to their own longest: as a
    batch of only them would be padded, so a front end that counts frames by the batch's
    shape (Whisper's log-mel) sees no more padding than it would there."""
    lengths = lengths[idx]
    return audio[idx, : int(lengths.max())], lengths


def lr_factor(step: int, warmup: int, total: int, spent=None) -> float:
    """Linear warm-up, then cosine decay to 10% at ``total`` steps, or sooner when ``spent()``
    (the share of an audio-seconds or passes budget already spent) says so: a run ends with
    its budget, however many steps that takes."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if spent is not None:
        progress = max(progress, min(1.0, spent()))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _delayed(schedule, start: int, step: int) -> float:
    return 0.0 if step < start else schedule(step)


class SslTask(AsrTask):
    """Continued self-supervised pre-training (``xasr.models.ssl``): AsrTask's training step
    (the model's loss, through the batch's language mask when there are masks); validation is
    the same loss on the dev set, logged as ``val_loss`` (and ``val_loss_<lang>``,
    ``val_loss_macro`` for several languages). Its masked spans and distractors are drawn from
    numpy's generator seeded by the batch's index, then the training's generator is put back:
    every validation scores the same task, so early stopping compares like with like."""

    def on_validation_epoch_start(self) -> None:
        # [loss x masked frames, masked frames] for the whole set, then for each language
        self._val_sums = torch.zeros(1 + len(self.val_langs), 2, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        import numpy as np

        saved = np.random.get_state()
        np.random.seed(batch_idx)
        try:
            for lang, idx in self._language_groups(batch):
                loss, frames = self._validation_loss(batch, idx, lang)
                rows = [0] + ([1 + self.val_langs.index(lang)] if lang in self.val_langs else [])
                for row in rows:
                    self._val_sums[row] += torch.tensor([float(loss * frames), float(frames)])
        finally:
            np.random.set_state(saved)

    def _language_groups(self, batch: dict) -> list[tuple[str | None, list[int]]]:
        """Whole batch at once without masks; else one group per language (its mask)."""
        langs = batch["langs"]
        if self.masks is None and not self.val_langs:
            return [(None, list(range(len(langs))))]
        return [
            (lang, [i for i, g in enumerate(langs) if g == lang]) for lang in dict.fromkeys(langs)
        ]

    def _validation_loss(self, batch: dict, idx: list[int], lang):
        """(loss per masked frame, masked frames) of the utterances ``idx`` of ``batch``."""
        audio, lengths = sub_batch(batch["audio"], batch["audio_lengths"], idx)
        sub = {"audio": audio, "audio_lengths": lengths, "texts": [batch["texts"][i] for i in idx]}
        if self.masks is None:
            loss, parts = self.model.loss(sub)
        else:
            from xasr.models.masks import masked_call

            loss, parts = masked_call(self.model, self._masks_of(lang), lambda m, b: m.loss(b), sub)
        return loss, parts["frames"]

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums.to(self.device), reduce_op="sum")
        means = (sums[:, 0] / sums[:, 1].clamp(min=1)).tolist()
        log = partial(self.log, sync_dist=False, rank_zero_only=False)
        log("step", float(self.global_step))
        log("val_loss", means[0], prog_bar=True)
        for lang, value in zip(self.val_langs, means[1:]):
            log(f"val_loss_{lang}", value)
        if self.val_langs:
            log("val_loss_macro", sum(means[1:]) / len(self.val_langs))
