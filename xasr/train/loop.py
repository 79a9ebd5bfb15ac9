"""`train()`: manifests in, a trained model directory and a learning curve out, on Lightning.

A run directory holds everything about one training run::

    RUN/vocab.json            the vocabulary (written first, so a resumed run reuses it)
    RUN/model/                the best model so far (config.json, vocab.json, model.safetensors)
    RUN/checkpoints/last.ckpt Lightning's full state at the last validation: resume point
    RUN/logs/attempt-K/       Lightning's CSV log of each attempt (a resume starts a new one)
    RUN/metrics.csv           the merged learning curve (train loss, dev CER/WER by step)
    RUN/data.json             its training sources, dev sets, mixing and monitor (a resume
                              must keep them)
    RUN/result.json           summary once training ends

Running the same command again on a RUN with ``checkpoints/last.ckpt`` resumes from it.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from xasr.config import ModelConfig, TrainConfig
from xasr.data.batching import (
    check_utterances,
    count_unknown_chars,
    source_prefix,
    to_cuts,
)
from xasr.data.manifest import Utterance, read_manifest
from xasr.data.sources import MetaBatches, as_sources, source_shares
from xasr.data.vocab import CharVocab, SentencePieceVocab, Vocab, load_vocab, save_vocab
from xasr.device import training_machine
from xasr.errors import DataError, Interrupted, XasrError
from xasr.io import output_dir, write_text
from xasr.models.build import build_model, save_model_dir
from xasr.models.ctc import CtcModel
from xasr.train.blank import BlankPhaseWatch
from xasr.train.budget import WorkCounter
from xasr.train.checkpoint import (
    AtomicCheckpointIO,
    ExportBestModel,
    LastAtEveryValidation,
    RandomState,
    TrainingClock,
    ValidateAtLastStep,
)
from xasr.train.curve import LOG_DIR, CurveLogger, next_attempt, write_curve
from xasr.train.data import CutsData
from xasr.train.meta import MetaOptions
from xasr.train.module import AsrTask, MetaAsrTask
from xasr.train.progress import StepProgressBar, progress_callbacks
from xasr.train.quiet import quiet_third_party
from xasr.train.resume import check_checkpoint, check_same_data

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    best_dev_cer: float
    best_step: int
    steps: int
    stopped_by: str
    seconds: float
    work: dict  # xasr.train.budget.Work: steps, passes, audio seconds (all, the target's)

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def prepare_vocab(
    run_dir: Path, train: list[Utterance], cfg: TrainConfig, vocab: Vocab | None
) -> Vocab:
    """The run's vocabulary: the one saved in RUN (resume), the one given, or built from text."""
    if (run_dir / "vocab.json").is_file():
        return load_vocab(run_dir)
    if vocab is None:
        texts = [utt.text for utt in train]
        if cfg.vocab == "sentencepiece":
            vocab = SentencePieceVocab.train(texts, cfg.vocab_size)
        elif cfg.vocab == "char":
            vocab = CharVocab.from_texts(texts)
        else:
            raise XasrError(f"unknown vocabulary kind {cfg.vocab!r}; use char or sentencepiece")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_vocab(vocab, run_dir)
    return vocab


def check_alphabet(utterances: list[Utterance], vocab: Vocab, on_unknown: str, name: str) -> None:
    unknown = count_unknown_chars(utterances, vocab)
    if not unknown:
        return
    chars = "".join(sorted(unknown))
    first = next(
        u
        for u in utterances  # NFC, as count_unknown_chars reads the text
        if set(unicodedata.normalize("NFC", u.text).replace(" ", "|")) & set(unknown)
    )
    message = (
        f"{name}: {sum(unknown.values())} characters outside the vocabulary ({chars!r}), "
        f"first at {first.source}"
    )
    if on_unknown == "error":
        raise DataError(
            message + "; normalise the text, or pass --on-unknown unk to map them "
            "to <unk> (counted)"
        )
    log.warning("%s; mapped to <unk>", message)


def load_split(
    path: str | Path, skip_bad: bool, name: str, require_text: bool = True
) -> list[Utterance]:
    utterances, report = check_utterances(
        read_manifest(path), skip_bad=skip_bad, require_text=require_text
    )
    log.info("%s %s: %s", name, path, report.summary())
    return utterances


def train(
    run_dir: str | Path,
    train_manifest,
    valid_manifest,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    vocab: Vocab | None = None,
    init_model: CtcModel | None = None,
    frozen_until: frozenset[str] = frozenset(),
    meta: dict | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    penalty: torch.nn.Module | None = None,
    masks=None,
) -> TrainResult:
    """Train (or resume) a model until the dev CER stops improving or a budget runs out.

    ``train_manifest``: a manifest, or a list of manifests or ``Source``s (with weights):
    several sources are mixed by ``cfg.mixing`` (``xasr.data.sources``); all pass the same
    checks (audio, transcript, vocabulary with ``cfg.on_unknown``). ``valid_manifest``: one dev
    manifest or several, validated together and per language; ``cfg.monitor`` picks what early
    stopping watches. ``init_model`` is the starting point (a transferred model); None trains
    from scratch with ``model_cfg``. ``vocab`` None builds one from the training transcripts.
    ``penalty``: added to the loss (``AsrTask``). ``masks``: ``LanguageMasks`` (sparse
    sharing, ``xasr.models.masks``): each batch, of one language, trains and validates through
    that language's sub-network; they are saved with the model.
    """
    torch.set_flush_denormal(True)  # AdamW state decaying to denormals slows CPUs 10-20x
    run_dir = output_dir(run_dir)
    training_machine(cfg)  # a GPU asked for where there is none: before reading any data
    sources = as_sources(train_manifest)
    if cfg.meta_variant is not None:  # before any file is written (a vocabulary, a data record)
        MetaBatches(cfg.k_train, cfg.k_valid, cfg.meta_tasks).task_indices(len(sources))
    if masks is not None:
        check_masked_recipe(cfg, len(sources))
    valid_manifests = [s.manifest for s in as_sources(valid_manifest)]
    train_sets = [
        load_split(s.manifest, skip_bad, "train" if len(sources) == 1 else f"train[{i + 1}]")
        for i, s in enumerate(sources)
    ]
    valid_utts = [u for m in valid_manifests for u in load_split(m, skip_bad, "valid")]
    vocab = prepare_vocab(run_dir, [u for part in train_sets for u in part], cfg, vocab)
    for source, utterances in zip(sources, train_sets):
        check_alphabet(utterances, vocab, cfg.on_unknown, f"train {source.manifest}")
    check_alphabet(valid_utts, vocab, "unk", "valid")
    shares, langs = mix_and_check(cfg, sources, train_sets, valid_utts, masks)
    check_same_data(run_dir, sources, valid_manifests, cfg, masks)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = init_model if init_model is not None else build_model(model_cfg, len(vocab))
    if masks is not None:
        masks.check(model)
        masks.save(run_dir / "model")
    task = make_task(
        model,
        vocab,
        cfg,
        frozen_until,
        penalty,
        tuple(langs) if len(langs) > 1 else (),
        masks=masks,
    )
    train_cuts = [to_cuts(part, prefix=source_prefix(i)) for i, part in enumerate(train_sets)]
    data = CutsData(train_cuts, to_cuts(valid_utts), vocab, cfg, shares)
    meta = model_meta(meta, cfg, sources, shares, valid_manifests)
    export = ExportBestModel(
        lambda model, meta: save_model_dir(run_dir / "model", model, model_cfg, vocab, meta),
        meta,
        cfg.monitor_key,
    )
    early = early_stopping(cfg, cfg.monitor_key)
    clock, counter = TrainingClock(), work_counter(cfg)
    trainer = make_trainer(run_dir, cfg, [export, *early, clock, counter], progress)
    fit(trainer, task, data, run_dir, cfg)
    result = TrainResult(
        run_dir=run_dir,
        model_dir=run_dir / "model",
        best_dev_cer=export.best,
        best_step=export.best_step,
        steps=trainer.global_step,
        stopped_by=stop_reason(trainer, early, cfg, counter),
        seconds=clock.seconds,
        work=counter.work.to_json(),
    )
    if trainer.is_global_zero:
        write_curve(run_dir)
        write_text(run_dir / "result.json", json.dumps(result.to_json(), indent=1))
    return result


def model_meta(meta: dict | None, cfg: TrainConfig, sources, shares, valid_manifests) -> dict:
    """What the exported model records of its training: ``meta`` (the caller's: a transfer's
    plan), the recipe, its sources with their shares, its dev sets."""
    meta = {
        **(meta or {}),
        "train": asdict(cfg),
        "train_manifest": sources[0].manifest if len(sources) == 1 else None,
        "valid_manifests": valid_manifests,
    }
    if len(sources) > 1:
        meta["sources"] = [
            {"manifest": s.manifest, "weight": s.weight, "share": share}
            for s, share in zip(sources, shares)
        ]
        log.info(
            "training sources (%s): %s",
            cfg.mixing,
            ", ".join(f"{s.manifest} {share:.1%}" for s, share in zip(sources, shares)),
        )
    return meta


def fit(trainer: L.Trainer, task: AsrTask, data: CutsData, run_dir: Path, cfg: TrainConfig):
    """``trainer.fit``, resuming from ``RUN/checkpoints/last.ckpt`` when there is one; Ctrl-C
    and a GPU out of memory end in one-line errors that say how to resume."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        check_checkpoint(last, task)
        log.info("resuming from %s", last)
    try:
        trainer.fit(task, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    except SystemExit:  # Lightning's answer to Ctrl-C, after a graceful shutdown
        if not trainer.interrupted:
            raise
        if not last.is_file():
            raise Interrupted(
                f"interrupted at step {trainer.global_step}, before the first checkpoint "
                f"(step {cfg.val_every}); the same command starts the run again"
            ) from None
        raise Interrupted(
            f"interrupted at step {trainer.global_step}; run the same command to resume "
            f"from the last validation's checkpoint ({last})"
        ) from None
    except torch.cuda.OutOfMemoryError:
        raise XasrError(
            f"the GPU ran out of memory with batches of {cfg.max_batch_seconds:g} s of audio; "
            "lower --batch-seconds (max_batch_seconds), then run the same command to resume"
        ) from None


def mix_and_check(cfg: TrainConfig, sources, train_sets, valid_utts, masks=None):
    """(each source's share of the batches, the dev set's languages), once the monitor names
    one of those languages and, with masks, every training and dev line has its language's."""
    shares = source_shares(
        [sum(u.duration for u in part) for part in train_sets],
        cfg.mixing,
        [s.weight for s in sources],
        cfg.temperature,
    )
    langs = sorted({utt.lang or "unknown" for utt in valid_utts})
    check_monitor(cfg, langs)
    if masks is not None:
        check_masked_data(masks, sources, train_sets, valid_utts)
    return shares, langs


def make_task(model, vocab, cfg: TrainConfig, *args, masks=None) -> AsrTask:
    """``AsrTask``, or ``MetaAsrTask`` for meta-transfer learning (``cfg.meta_variant``)."""
    if cfg.meta_variant is None:
        return AsrTask(model, vocab, cfg, *args, masks=masks)
    return MetaAsrTask(model, vocab, cfg, *args, meta=MetaOptions.from_train_config(cfg))


def check_masked_data(masks, sources, train_sets, valid_utts) -> None:
    """Each training source is of one language with a mask, and so is every dev line."""
    for source, utterances in zip(sources, train_sets):
        langs = sorted({u.lang or "" for u in utterances})
        if len(langs) != 1 or langs[0] not in masks.langs:
            raise XasrError(
                f"--masks: each --train manifest must be of one language with a mask "
                f"({', '.join(masks.langs)}); {source.manifest} has {langs}"
            )
    missing = sorted({u.lang or "" for u in valid_utts} - set(masks.langs))
    if missing:
        raise XasrError(f"--masks: dev lines of language(s) {missing} have no mask")


def check_masked_recipe(cfg: TrainConfig, n_sources: int) -> None:
    """Sparse sharing needs batches of one language each."""
    if cfg.meta_variant is not None:
        raise XasrError("language masks and --meta-transfer do not combine")
    if n_sources > 1 and cfg.source_batches != "language":
        raise XasrError(
            "training with language masks needs batches of one language each: "
            "--source-batches language"
        )


def check_monitor(cfg: TrainConfig, langs: list[str]) -> None:
    """``cfg.monitor`` names a dev-set language (or all / macro)."""
    if cfg.monitor == "all":
        return
    if len(langs) < 2:
        raise XasrError(
            f"monitor (--monitor) {cfg.monitor!r}: the dev data has one language "
            f"({langs[0]}); use all"
        )
    if cfg.monitor != "macro" and cfg.monitor not in langs:
        raise XasrError(
            f"monitor (--monitor) {cfg.monitor!r}: the dev data's languages are "
            f"{', '.join(langs)}; use all, macro or one of those"
        )


def make_trainer(
    run_dir: Path, cfg: TrainConfig, callbacks: list, progress: bool, monitor: str | None = None
) -> L.Trainer:
    """``monitor``: the metric the best checkpoint follows (default ``cfg.monitor_key``)."""
    accelerator, precision = training_machine(cfg)
    checkpoint = LastAtEveryValidation(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor or cfg.monitor_key,
        mode="min",
        save_top_k=1,
        save_last=True,
    )
    quiet_third_party()
    shown = progress_callbacks(progress)
    return L.Trainer(
        default_root_dir=run_dir,
        accelerator=accelerator,
        devices=cfg.devices,
        strategy="ddp" if cfg.devices > 1 else "auto",
        precision=precision,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        # Meta-transfer steps by hand (manual optimisation) and clips its outer gradient itself.
        gradient_clip_val=cfg.grad_clip if cfg.meta_variant is None else None,
        callbacks=[
            checkpoint,
            ValidateAtLastStep(),
            RandomState(),
            BlankPhaseWatch(),
            *shown,
            *callbacks,
        ],
        logger=CurveLogger(run_dir / LOG_DIR, name="", version=next_attempt(run_dir)),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # lhotse's sampler splits the data across ranks itself
        enable_progress_bar=any(isinstance(c, StepProgressBar) for c in shown),
        enable_model_summary=False,
        log_every_n_steps=10,
    )


def early_stopping(cfg: TrainConfig, monitor: str) -> list[EarlyStopping]:
    """Lightning's early stopping on ``monitor`` (none when ``cfg.patience`` is None: the run
    spends its whole budget, as every arm of a comparison does)."""
    if cfg.patience is None:
        return []
    return [
        EarlyStopping(
            monitor,
            min_delta=cfg.min_delta,
            patience=cfg.patience,
            mode="min",
            check_on_train_epoch_end=False,
        )
    ]


def work_counter(cfg: TrainConfig) -> WorkCounter:
    return WorkCounter(cfg.max_audio_seconds, cfg.max_passes)


def stop_reason(
    trainer: L.Trainer, early: list[EarlyStopping], cfg: TrainConfig, counter: WorkCounter
) -> str:
    """What ended the run: "max steps", "audio seconds budget", "passes budget", "early
    stopping", "time budget" (``max_minutes``) or "finished"."""
    if trainer.global_step >= cfg.max_steps:  # first: the last step's validation may count
        return "max steps"
    if counter.spent() is not None:
        return counter.spent()
    if any(e.stopped_epoch > 0 or e.wait_count >= cfg.patience for e in early):
        return "early stopping"
    return "time budget" if cfg.max_minutes else "finished"
