"""`continue_pretraining()`: a wav2vec2 ``...ForPreTraining`` directory and speech in, the same
kind of directory out, trained further on the contrastive task (``xasr.models.ssl``) by the
ordinary training loop: several sources, language masks, checkpoints, exact resume.

    RUN/model/          the best Hugging Face ...ForPreTraining directory so far (dev loss),
                        with training.json (its step, dev loss, data); `--from` accepts it
    RUN/checkpoints/    Lightning's state (resume), as for every run
    RUN/metrics.csv     train_loss, val_loss by step
    RUN/data.json, RUN/result.json   as for every run (result: best_dev_loss, not a CER)

The transcripts are not read: untranscribed speech is the point, and a manifest's ``text``
may be empty (``"text": ""``). An utterance too short to hold a masked span is an error, or
with ``skip_bad`` dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch

from xasr.config import TrainConfig
from xasr.data.audio import SAMPLE_RATE
from xasr.data.batching import source_prefix, to_cuts
from xasr.data.sources import as_sources
from xasr.data.vocab import CharVocab
from xasr.device import training_machine
from xasr.errors import DataError, XasrError
from xasr.io import output_dir, write_text
from xasr.models.ssl import SslOptions, load_for_pretraining, pretraining_class
from xasr.train.checkpoint import ExportBestModel, TrainingClock
from xasr.train.curve import write_curve
from xasr.train.data import CutsData
from xasr.train.loop import (
    check_masked_recipe,
    early_stopping,
    fit,
    load_split,
    make_trainer,
    mix_and_check,
    stop_reason,
    work_counter,
)
from xasr.train.module import SslTask
from xasr.train.resume import check_same_data

log = logging.getLogger(__name__)


def long_enough(model, utterances: list, skip_bad: bool) -> list:
    """``utterances`` with frames enough for a masked span (``mask_length``) and one frame
    beside it; a shorter line raises ``DataError`` naming it, or with ``skip_bad`` is dropped
    and counted (Hugging Face's span sampling fails on it)."""
    need = model.options.mask_length + 1
    samples = torch.tensor([round(u.duration * SAMPLE_RATE) for u in utterances] or [0])
    frames = model.frames(samples).tolist()
    short = [u for u, n in zip(utterances, frames) if n < need]
    if short and not skip_bad:
        raise DataError(
            f"{short[0].source}: {short[0].audio_filepath} is too short for a masked span of "
            f"{need - 1} frames ({len(short)} such lines); drop them with --skip-bad"
        )
    if short:
        log.warning("dropped %d utterances too short for a masked span", len(short))
    return [u for u, n in zip(utterances, frames) if n >= need]


def continue_pretraining(
    run_dir: str | Path,
    train_manifest,
    valid_manifest,
    cfg: TrainConfig,
    source: str | Path,
    options: SslOptions | None = None,
    masks=None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict:
    """Continue ``source``'s self-supervised pre-training on the speech of ``train_manifest``
    (one manifest or several sources, mixed by ``cfg.mixing``) until the dev loss stops
    improving (``cfg.patience``, ``cfg.min_delta``) or a budget runs out; ``masks``
    (``LanguageMasks``): each batch, of one language, trains through that language's
    sub-network (Lu et al. 2022's language-adaptive pre-training). Returns result.json."""
    torch.set_flush_denormal(True)  # AdamW state decaying to denormals slows CPUs 10-20x
    options = options or SslOptions()
    pretraining_class(source)  # a directory without a quantizer: before any data is read
    run_dir = output_dir(run_dir)
    training_machine(cfg)
    if cfg.meta_variant is not None:
        raise XasrError("continued pre-training does not combine with meta-transfer learning")
    sources = as_sources(train_manifest)
    if masks is not None:
        check_masked_recipe(cfg, len(sources))
    valid_manifests = [s.manifest for s in as_sources(valid_manifest)]
    # seeded first: weights the checkpoint lacks (masked_spec_embed) start the same every run
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = load_for_pretraining(source, options)
    train_sets = [
        long_enough(model, load_split(s.manifest, skip_bad, f"train[{i + 1}]", False), skip_bad)
        for i, s in enumerate(sources)
    ]
    valid_utts = [
        u
        for m in valid_manifests
        for u in long_enough(model, load_split(m, skip_bad, "valid", False), skip_bad)
    ]
    shares, langs = mix_and_check(cfg, sources, train_sets, valid_utts, masks)
    task_keys = {
        "from": str(Path(source).resolve()),
        "mask-prob": options.mask_prob,
        "mask-length": options.mask_length,
        "gumbel-temperature": options.gumbel_temperature,
    }
    check_same_data(run_dir, sources, valid_manifests, cfg, masks, task_keys)
    if masks is not None:
        masks.check(model, f"masks for {source}")
    # the loaders tokenise transcripts: a vocabulary of every character, read by nothing else
    vocab = CharVocab.from_texts(u.text for part in [*train_sets, valid_utts] for u in part)
    task = SslTask(model, vocab, cfg, val_langs=tuple(langs) if len(langs) > 1 else (), masks=masks)
    train_cuts = [to_cuts(part, prefix=source_prefix(i)) for i, part in enumerate(train_sets)]
    data = CutsData(train_cuts, to_cuts(valid_utts), vocab, cfg, shares)
    monitor = cfg.monitor_key.replace("val_cer", "val_loss")
    meta = {
        "source": str(source),
        "ssl": asdict(options),
        "train": asdict(cfg),
        "train_manifests": [s.manifest for s in sources],
        "valid_manifests": valid_manifests,
    }

    def save(model, meta: dict) -> None:
        def training_json(directory: Path) -> None:
            write_text(directory / "training.json", json.dumps(meta, indent=1))

        model.save(run_dir / "model", [training_json, *([masks.save] if masks else [])])

    export = ExportBestModel(save, meta, monitor)
    early = early_stopping(cfg, monitor)
    clock, counter = TrainingClock(), work_counter(cfg)
    trainer = make_trainer(
        run_dir, cfg, [export, *early, clock, counter], progress, monitor=monitor
    )
    fit(trainer, task, data, run_dir, cfg)
    result = {
        "run_dir": str(run_dir),
        "model_dir": str(run_dir / "model"),
        "best_dev_loss": export.best,
        "best_step": export.best_step,
        "steps": trainer.global_step,
        "stopped_by": stop_reason(trainer, early, cfg, counter),
        "seconds": clock.seconds,
        "work": counter.work.to_json(),
    }
    if trainer.is_global_zero:
        write_curve(run_dir)
        write_text(run_dir / "result.json", json.dumps(result, indent=1))
    return result
