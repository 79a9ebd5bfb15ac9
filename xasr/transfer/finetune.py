"""`transfer()`: a source checkpoint and target-language manifests in, a target model out.

Strategies (all with the same training recipe, so their curves compare):

* token-identity head transfer (default): encoder copied, output rows of shared tokens copied,
  new letters started from their closest source letter;
* ``reinit_head``: encoder copied, head random (what NeMo's change_vocabulary and HF do);
* ``scratch``: same architecture, random start (the baseline);
* ``drop_layers``/``freeze_layers``/``freeze_steps``: layer surgery on top of any of these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from xasr.config import ModelConfig, TrainConfig
from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab, SentencePieceVocab, load_vocab
from xasr.models.build import build_model, load_model_dir, resolve_model
from xasr.train.loop import TrainResult, train
from xasr.transfer.surgery import (
    check_same_architecture,
    copy_encoder,
    frozen_parameter_names,
    reinit_top_layers,
    transfer_head,
)
from xasr.transfer.vocab_map import map_tokens, read_user_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferOptions:
    source: str | None = None  # model directory or shipped name; None only with scratch
    scratch: bool = False
    reinit_head: bool = False
    drop_layers: int = 0
    token_map_file: str | None = None
    expect: ModelConfig | None = None  # a requested architecture that must match the source


def target_vocab(train_manifest, cfg: TrainConfig, source_vocab):
    """A vocabulary of the target's training text, of the same kind as the source's."""
    # Text only: train() checks the audio of every line once, right after this.
    texts = [utt.text for utt in read_manifest(train_manifest) if utt.text.strip()]
    if source_vocab is not None and source_vocab.kind == "sentencepiece":
        return SentencePieceVocab.train(texts, cfg.vocab_size)
    return CharVocab.from_texts(texts)


def transfer(
    run_dir: str | Path,
    train_manifest,
    valid_manifest,
    opts: TransferOptions,
    cfg: TrainConfig,
    skip_bad: bool = False,
    progress: bool = True,
) -> TrainResult:
    run_dir = Path(run_dir)
    resuming = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if opts.source is None:
        if not opts.scratch or opts.expect is None:
            raise ValueError("a source model is required unless training from scratch with a size")
        source, source_cfg, source_vocab = None, opts.expect, None
    else:
        source, source_cfg, source_vocab = load_model_dir(resolve_model(opts.source))
        if opts.expect is not None:
            check_same_architecture(source_cfg, opts.expect, opts.source)
    vocab = load_vocab(run_dir) if resuming else target_vocab(train_manifest, cfg, source_vocab)
    torch.manual_seed(cfg.seed)
    model = build_model(source_cfg, len(vocab))
    report = {
        "source": opts.source,
        "strategy": strategy_name(opts),
        "drop_layers": opts.drop_layers,
        "freeze_layers": cfg.freeze_layers,
        "freeze_steps": cfg.freeze_steps,
    }
    if source is not None and not opts.scratch and not resuming:
        report.update(
            initialise_from_source(model, source, source_cfg, source_vocab, vocab, opts, cfg.seed)
        )
    frozen = frozen_parameter_names(model, cfg.freeze_layers)
    frozen_until = frozenset(frozen) if cfg.freeze_steps else frozenset()
    if not cfg.freeze_steps:
        for name, param in model.named_parameters():
            param.requires_grad_(name not in frozen)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        (run_dir / "transfer.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return train(
        run_dir,
        train_manifest,
        valid_manifest,
        cfg,
        source_cfg,
        vocab=vocab,
        init_model=model,
        frozen_until=frozen_until,
        meta={"transfer": report},
        skip_bad=skip_bad,
        progress=progress,
    )


def initialise_from_source(
    model, source, source_cfg: ModelConfig, source_vocab, vocab, opts: TransferOptions, seed: int
) -> dict:
    """Copy the encoder, transfer or re-initialise the head, drop top layers. Returns a report."""
    tensors = copy_encoder(source, model)
    report = {"encoder_tensors_copied": tensors}
    if opts.reinit_head:
        log.info("head re-initialised (%d target tokens)", len(vocab))
    else:
        token_map = map_tokens(
            vocab.tokens, source_vocab.tokens, read_user_map(opts.token_map_file)
        )
        transfer_head(source, model, token_map)
        message = token_map.summary(vocab.tokens, source_vocab.tokens)
        log.info(message)
        report["tokens"] = token_map.describe(vocab.tokens, source_vocab.tokens)
    if opts.drop_layers:
        torch.manual_seed(seed + 1)
        fresh = build_model(source_cfg, len(vocab))
        report["dropped_layers"] = reinit_top_layers(model, fresh, opts.drop_layers)
    return report


def strategy_name(opts: TransferOptions) -> str:
    if opts.scratch:
        return "scratch"
    name = "reinit-head" if opts.reinit_head else "transfer"
    return name + (f"+drop{opts.drop_layers}" if opts.drop_layers else "")
