"""`transfer()`: a source checkpoint and target-language manifests in, a target model out.

Strategies (all with the same training recipe, so their curves compare):

* token-identity head transfer (default): encoder copied, output rows of shared tokens copied,
  new letters started from their closest source letter;
* ``reinit_head``: encoder copied, head random (what NeMo's change_vocabulary and HF do);
* ``scratch``: same architecture, random start (the baseline);
* ``drop_layers``/``freeze_layers``/``freeze_steps``: layer surgery on top of any of these.

Adapting without forgetting (``xasr.transfer.forgetting``), on top of any transfer:

* ``replay_manifest``/``replay_fraction``: source-language utterances as that fraction of every
  epoch's training audio seconds;
* ``l2sp_weight``: L2-SP, a pull toward the source weights;
* ``ewc_weight``: EWC, the same pull weighted by the source's Fisher information.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from xasr import checks
from xasr.config import FamilyConfig, TrainConfig
from xasr.data.batching import check_utterances, to_cuts
from xasr.data.manifest import read_manifest
from xasr.data.sources import Source, as_sources
from xasr.data.vocab import CharVocab, SentencePieceVocab, load_vocab
from xasr.device import training_machine
from xasr.errors import XasrError
from xasr.io import output_dir, write_text
from xasr.models.build import build_model, load_model_dir, resolve_model
from xasr.train.loop import TrainResult, train
from xasr.transfer.forgetting import (
    FISHER_FILE,
    AnchorPenalty,
    estimate_fisher,
    load_or_estimate_fisher,
    normalise_fisher,
    to_target_layout,
)
from xasr.transfer.plan import TransferPlan, plan_transfer
from xasr.transfer.surgery import check_same_architecture, copy_parameters, reinit_top_layers
from xasr.transfer.vocab_rows import remap_vocab_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferOptions:
    """How to transfer; the forgetting fields are explained in README "Adapting without
    forgetting" and ``xasr.transfer.forgetting``."""

    source: str | None = None  # model directory or shipped name; None only with scratch
    scratch: bool = False
    reinit_head: bool = False
    drop_layers: int = 0
    token_map_file: str | None = None
    # A requested architecture: of the source's family, it must match the source's; of another
    # family (--arch aed from a CTC source), it is the target's, taking what matches.
    expect: FamilyConfig | None = None
    # source-language utterances mixed into training: this fraction (0 < f < 1) of the
    # training audio seconds, exactly in expectation
    replay_manifest: str | None = None
    replay_fraction: float = 0.0
    l2sp_weight: float = 0.0  # alpha: alpha/2 * sum (w - w_source)^2 over transferred weights
    ewc_weight: float = 0.0  # lambda: lambda/2 * sum F (w - w_source)^2, F / mean(F)
    fisher_manifest: str | None = None  # source data for the Fisher; None: replay_manifest
    fisher_batches: int = 20

    def __post_init__(self):
        checks.integer("--drop-layers", self.drop_layers, at_least=0)
        checks.number("--replay-fraction", self.replay_fraction)
        checks.number("--l2sp", self.l2sp_weight)
        checks.number("--ewc", self.ewc_weight)
        checks.integer("--fisher-batches", self.fisher_batches, at_least=1)
        check_forgetting_options(self)

    def check_files(self) -> None:
        """The files it names exist (checked when a transfer starts, not when it is named)."""
        for flag, path in (
            ("--token-map", self.token_map_file),
            ("--replay", self.replay_manifest),
            ("--fisher-manifest", self.fisher_manifest),
        ):
            if path is not None and not Path(path).is_file():
                raise XasrError(f"{flag} {path} does not exist")


def check_forgetting_options(opts: TransferOptions) -> None:
    """Raise ``XasrError`` (one line) for replay, L2-SP and EWC settings that cannot work."""
    if opts.replay_manifest is None and opts.replay_fraction:
        raise XasrError("a replay fraction needs source-language data to replay: --replay M")
    if opts.replay_manifest is not None and not 0.0 < opts.replay_fraction < 1.0:
        raise XasrError(
            f"--replay-fraction must be in (0, 1) (a share of the training audio seconds), "
            f"got {opts.replay_fraction}"
        )
    if opts.l2sp_weight < 0 or opts.ewc_weight < 0:
        raise XasrError("--l2sp and --ewc weights must be >= 0")
    if (opts.l2sp_weight or opts.ewc_weight) and (opts.scratch or opts.source is None):
        raise XasrError(
            "--l2sp/--ewc pull the weights toward the source model's, and --scratch has none; "
            "drop --scratch or the penalty"
        )
    if opts.ewc_weight and (opts.fisher_manifest or opts.replay_manifest) is None:
        raise XasrError(
            "--ewc needs source-language data for the Fisher information: "
            "--fisher-manifest M (or --replay M)"
        )


def target_vocab(train_manifest, cfg: TrainConfig, source_vocab, replay_manifest=None):
    """A vocabulary of the target's training text, of the same kind as the source's.

    With ``replay_manifest``, of the target and replay texts together: replay utterances are
    trained on too, so their characters must be in the target vocabulary.
    """
    # Text only: train() checks the audio of every line once, right after this.
    manifests = [s.manifest for s in as_sources(train_manifest)]
    manifests += [replay_manifest] if replay_manifest else []
    texts = [utt.text for m in manifests for utt in read_manifest(m) if utt.text.strip()]
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
    vocab_manifests: list | None = None,
    masks=None,
) -> TrainResult:
    """Transfer ``opts.source`` to the target manifests and train (or resume) in ``run_dir``.

    The target vocabulary is built from the training texts (with replay, the target's and the
    replay's), or from those of ``vocab_manifests`` when given (a speech-translation model's
    vocabulary is its target recognizer's: ``xasr.transfer.st``). ``masks``: language masks
    over the model's weights (``xasr.models.masks.LanguageMasks``): each batch trains through
    its language's sub-network (sparse sharing). L2-SP/EWC
    reference weights are the source's, taken again from the source on a resume (and restored
    from the checkpoint); the Fisher is estimated once and kept in RUN/fisher.safetensors.
    """
    run_dir = output_dir(run_dir)
    training_machine(cfg)
    resuming = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if resuming:
        check_resumed_options(run_dir, opts)
    opts.check_files()
    sources, cfg = with_replay(as_sources(train_manifest), opts, cfg)  # before any work
    if opts.source is None:
        if not opts.scratch or opts.expect is None:
            raise ValueError("a source model is required unless training from scratch with a size")
        source, source_cfg, source_vocab = None, opts.expect, None
    else:
        # a pretrained encoder without a CTC head comes without a vocabulary (None)
        source, source_cfg, source_vocab = load_model_dir(
            resolve_model(opts.source), need_head=False
        )
        if source_vocab is None and opts.ewc_weight:
            raise XasrError(
                f"--ewc estimates the Fisher information through the source's CTC head; "
                f"{opts.source} has none (use --l2sp)"
            )
    model_cfg = target_config(source_cfg, opts)
    vocab = (
        load_vocab(run_dir)
        if resuming
        else target_vocab(
            vocab_manifests or train_manifest, cfg, source_vocab, opts.replay_manifest
        )
    )
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, len(vocab))
    plan = plan_transfer(
        model,
        vocab,
        source_vocab,
        scratch=opts.scratch,
        reinit_head=opts.reinit_head,
        drop_layers=opts.drop_layers,
        freeze_layers=cfg.freeze_layers,
        token_map_file=opts.token_map_file,
        source_shapes=parameter_shapes(source) if source is not None else None,
        same_family=model_cfg.architecture == source_cfg.architecture,
    )
    report = {
        "source": opts.source,
        "strategy": strategy_name(opts),
        "drop_layers": opts.drop_layers,
        "freeze_layers": cfg.freeze_layers,
        "freeze_steps": cfg.freeze_steps,
        "options": asdict(opts),
    }
    if (plan.copied or plan.vocab_rows) and not resuming:
        vocabs = (source_vocab, vocab)
        report.update(initialise_from_source(model, source, plan, vocabs, model_cfg, cfg.seed))
    fixed = frozenset(model.fixed_parameters())  # never train, even after --freeze-steps
    frozen_until = plan.frozen - fixed if cfg.freeze_steps else frozenset()
    still = fixed & plan.frozen if cfg.freeze_steps else plan.frozen  # scratch: none fixed
    for name, param in model.named_parameters():
        param.requires_grad_(name not in still)
    run_dir.mkdir(parents=True, exist_ok=True)
    penalty = None
    if opts.l2sp_weight or opts.ewc_weight:
        penalty = forgetting_penalty(
            run_dir, model, (source, source_vocab), plan, opts, cfg, skip_bad
        )
        report["penalty"] = penalty.describe() if penalty is not None else None
    if not resuming:
        write_text(run_dir / "transfer.json", json.dumps(report, indent=1, ensure_ascii=False))
    return train(
        run_dir,
        sources,
        valid_manifest,
        cfg,
        model_cfg,
        vocab=vocab,
        init_model=model,
        frozen_until=frozen_until,
        meta={"transfer": report},
        skip_bad=skip_bad,
        progress=progress,
        penalty=penalty,
        masks=masks,
    )


def target_config(source_cfg, opts: TransferOptions):
    """The target's architecture: the source's, unless ``opts.expect`` names another family
    (then that one); a requested architecture of the source's family must equal it."""
    if opts.expect is None:
        return source_cfg
    if opts.expect.architecture != source_cfg.architecture:
        return opts.expect
    if opts.source is not None:
        check_same_architecture(source_cfg, opts.expect, opts.source)
    return source_cfg


def parameter_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def with_replay(sources: list[Source], opts: TransferOptions, cfg: TrainConfig):
    """Replay as training from two sources: the target with weight 1 - f and the replayed
    source-language manifest with weight f, by fixed weights, batches mixed (the replay share
    of the training audio seconds is f in expectation). Returns (sources, recipe)."""
    if opts.replay_manifest is None:
        return sources, cfg
    if len(sources) > 1:
        raise XasrError(
            "--replay mixes one target manifest with source-language speech; with several "
            "--train manifests, add the replay manifest as one more --train with --weights"
        )
    f = opts.replay_fraction
    sources = [Source(sources[0].manifest, 1.0 - f), Source(str(opts.replay_manifest), f)]
    return sources, dataclasses.replace(cfg, mixing="weights", source_batches="mixed")


# Options that shape what a resumed run keeps doing, with their command-line flags: the
# checkpoint restores the penalty's coefficients and reference weights (a changed weight would
# be ignored, or not load), and a changed replay stream would make the run a mixture of two.
RESUME_MUST_MATCH = {
    "source": "--from",
    "l2sp_weight": "--l2sp",
    "ewc_weight": "--ewc",
    "replay_manifest": "--replay",
    "replay_fraction": "--replay-fraction",
    "expect": "--arch/--size",  # the target's architecture: the checkpoint's weights are its
}


def _same_path_or_value(a, b) -> bool:
    """Equal values, or two spellings of one existing file or directory."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False


def check_resumed_options(run_dir: Path, opts: TransferOptions) -> None:
    """Raise ``XasrError`` when a resumed run is asked for other values of RESUME_MUST_MATCH
    than it was started with (recorded in RUN/transfer.json)."""
    path = run_dir / "transfer.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("options", {})
    defaults = asdict(TransferOptions())
    for key, flag in RESUME_MUST_MATCH.items():
        before, now = saved.get(key, defaults[key]), getattr(opts, key)
        if dataclasses.is_dataclass(now):
            now = asdict(now)  # as transfer.json records it
        if not _same_path_or_value(before, now):
            raise XasrError(
                f"{run_dir} was started with {flag} {_shown(before)}, not {_shown(now)}; resume "
                "with the same value or train into a new --out"
            )


def _shown(value) -> str:
    """A recorded option as a message names it (an architecture by family and shape)."""
    if isinstance(value, dict):
        return f"{value.get('architecture')} {value.get('d_model')}x{value.get('n_layers')}"
    return str(value)


def forgetting_penalty(
    run_dir: Path,
    model,
    source,
    plan: TransferPlan,
    opts: TransferOptions,
    cfg: TrainConfig,
    skip_bad: bool,
) -> AnchorPenalty | None:
    """L2-SP and/or EWC as one ``AnchorPenalty`` toward ``source`` = (model, vocab).

    Anchored, as ``plan`` says: the trainable weights the transfer copied (not dropped layers)
    and the vocabulary rows of tokens both vocabularies share (mapped and new rows are free: a
    mapped ä only starts from a). Coefficient: ``l2sp_weight + ewc_weight * F / mean(F)``.
    """
    source_model, _ = source
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = dict(source_model.named_parameters())

    def layout(tensors: dict) -> dict:
        laid = to_target_layout(tensors, model, plan)
        return {n: t for n, t in laid.items() if n in trainable}

    reference = layout(params)
    if not reference:
        log.warning("L2-SP/EWC: every transferred weight is frozen; no penalty")
        return None
    mask = layout({n: torch.ones_like(p) for n, p in params.items()})
    coefficient = {n: opts.l2sp_weight * m for n, m in mask.items()}
    if opts.ewc_weight:
        fisher = normalise_fisher(layout(source_fisher(run_dir, source, opts, cfg, skip_bad)), mask)
        coefficient = {n: c + opts.ewc_weight * fisher[n] for n, c in coefficient.items()}
    return AnchorPenalty(reference, coefficient)


def source_fisher(run_dir: Path, source, opts: TransferOptions, cfg: TrainConfig, skip_bad):
    """The source's Fisher information (source parameter names and shapes), estimated once on
    ``fisher_manifest`` (default: the replay manifest) and kept in RUN/fisher.safetensors."""
    manifest = opts.fisher_manifest or opts.replay_manifest
    key = {
        "source": str(resolve_model(opts.source)),
        "manifest": str(manifest),
        "batches": str(opts.fisher_batches),
        "max_batch_seconds": str(cfg.max_batch_seconds),
        "seed": str(cfg.seed),
    }

    def estimate():
        utterances, report = check_utterances(read_manifest(manifest), skip_bad=skip_bad)
        log.info("fisher %s: %s", manifest, report.summary())
        device = "cuda" if training_machine(cfg)[0] == "gpu" else "cpu"
        return estimate_fisher(
            *source,
            to_cuts(utterances),
            cfg.max_batch_seconds,
            opts.fisher_batches,
            seed=cfg.seed,
            device=device,
        )

    return load_or_estimate_fisher(run_dir / FISHER_FILE, key, estimate)


def initialise_from_source(
    model, source, plan: TransferPlan, vocabs, model_cfg: FamilyConfig, seed: int
) -> dict:
    """Carry out ``plan``: copy the parameters it names, rebuild the vocabulary rows token by
    token (or leave them fresh), re-initialise dropped layers (from a fresh ``model_cfg``
    model). ``vocabs``: (source vocabulary, target vocabulary). Returns a report
    (icefall-style: which modules were copied)."""
    source_vocab, vocab = vocabs
    report = {
        "tensors_copied": copy_parameters(source, model, plan.copied),
        "init_modules": plan.init_modules(model),
    }
    log.info(
        "from the source: %s",
        "; ".join(f"{kind} {', '.join(mods)}" for kind, mods in report["init_modules"].items()),
    )
    if plan.token_map is None:
        log.info("vocabulary rows re-initialised (%d target tokens)", len(vocab))
    else:
        report["vocab_params"] = remap_vocab_rows(source, model, plan.token_map, plan.vocab_rows)
        log.info(plan.token_map.summary(vocab.tokens, source_vocab.tokens))
        report["tokens"] = plan.token_map.describe(vocab.tokens, source_vocab.tokens)
    if plan.dropped_layers:
        torch.manual_seed(seed + 1)
        fresh = build_model(model_cfg, len(vocab))
        report["dropped_layers"] = reinit_top_layers(model, fresh, len(plan.dropped_layers))
    return report


def strategy_name(opts: TransferOptions) -> str:
    """e.g. ``transfer``, ``reinit-head+drop2``, ``transfer+replay0.25+l2sp+ewc``, ``scratch``."""
    if opts.scratch:
        name = "scratch"
    else:
        name = "reinit-head" if opts.reinit_head else "transfer"
        name += f"+drop{opts.drop_layers}" if opts.drop_layers else ""
    if opts.replay_manifest:
        name += f"+replay{opts.replay_fraction:g}"
    name += "+l2sp" if opts.l2sp_weight else ""
    return name + ("+ewc" if opts.ewc_weight else "")
