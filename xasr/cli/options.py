"""Flags several commands share. The training recipe: each training command declares the
groups of TrainConfig keys it uses (``xasr.config.TRAIN_GROUPS``) and shows those groups'
flags only, their names, types and choices taken from ``xasr.config``. The training data
(--train, --weights, --valid), --skip-bad and --no-progress, --masks."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from dataclasses import fields

from xasr.config import (
    ACCELERATORS,
    META_TASKS,
    META_VARIANTS,
    MIXINGS,
    ON_UNKNOWN,
    PRECISIONS,
    SOURCE_BATCHES,
    TRAIN_FLAGS,
    TRAIN_GROUPS,
    VOCAB_KINDS,
    TrainConfig,
    from_dict,
    load_yaml,
    replace,
)
from xasr.errors import XasrError

# Each group's heading in --help.
GROUP_TITLES = {
    "optimisation": "optimisation and schedule",
    "stopping": "budgets and early stopping",
    "data": "batches",
    "mixing": "mixing several --train manifests (README)",
    "vocabulary": "vocabulary",
    "augmentation": "augmentation",
    "freezing": "freezing layers",
    "meta-transfer": "meta-transfer learning (README)",
    "machine": "machine and seed",
}
# Help for the TrainConfig keys that have a flag.
TRAIN_HELP = {
    "max_minutes": "wall-clock cap (never a comparison's budget)",
    "max_audio_seconds": "budget: audio seconds seen (all sources)",
    "max_passes": "budget: forward-backward passes (meta-transfer: 2 x tasks a step)",
    "max_batch_seconds": "audio seconds per batch and device",
    "val_every": "validate every N steps",
    "patience": "validations without improvement",
    "devices": "processes/GPUs; >1 runs DDP (gloo on CPU)",
    "precision": ", ".join(PRECISIONS),
    "num_workers": "data loader workers",
    "vocab_size": "sentencepiece vocabulary size",
    "on_unknown": "training characters outside the vocabulary",
    "spec_augment": "train without SpecAugment",
    "freeze_layers": "freeze front end + bottom K layers",
    "freeze_steps": "... for the first S steps only",
    "mixing": "how several --train manifests share the audio (README)",
    "temperature": "T of --mixing temperature: shares as seconds^(1/T)",
    "source_batches": "mixed, or batches of one source each",
    "monitor": "dev CER early stopping watches: all, macro or a language",
    "meta_variant": "meta-transfer learning (README): the first --train is the target",
    "inner_lr": "meta-transfer: the inner SGD step's learning rate",
    "meta_clip": "meta-transfer: the inner gradients' largest norm (0: none)",
    "k_train": "meta-transfer: utterances per support batch",
    "k_valid": "meta-transfer: utterances per query batch (from the target)",
    "meta_tasks": "meta-transfer: all manifests are tasks, or the sources only",
}
TRAIN_CHOICES = {
    "accelerator": ACCELERATORS,
    "vocab": VOCAB_KINDS,
    "on_unknown": ON_UNKNOWN,
    "mixing": MIXINGS,
    "source_batches": SOURCE_BATCHES,
    "meta_variant": META_VARIANTS,
    "meta_tasks": META_TASKS,
}


def add_recipe_options(
    parser: argparse.ArgumentParser, groups: Sequence[str], without: Collection[str] = ()
) -> None:
    """--config and the flags (``TRAIN_FLAGS``) of the keys of ``groups``, less the keys
    ``without``, each group under its heading. Unset flags stay None, so that --config and
    the defaults fill them (``train_config``)."""
    recipe = parser.add_argument_group("training recipe (defaults: TrainConfig; --config YAML)")
    recipe.add_argument("--config", help="YAML file of TrainConfig keys (unknown keys rejected)")
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    for name in groups:
        group = parser.add_argument_group(GROUP_TITLES[name])
        for key in TRAIN_GROUPS[name]:
            if key not in TRAIN_FLAGS or key in without:
                continue
            flag = TRAIN_FLAGS[key]
            common = {"dest": key, "default": None, "help": TRAIN_HELP.get(key)}
            if types[key] == "bool":  # on by default: the flag turns it off
                group.add_argument(flag, action="store_false", **common)
            elif key in TRAIN_CHOICES:
                group.add_argument(flag, choices=TRAIN_CHOICES[key], **common)
            else:
                kind = (
                    int if types[key].startswith("int") else float if "float" in types[key] else str
                )
                group.add_argument(flag, type=kind, **common)


def train_config(args: argparse.Namespace, config: str | None = None) -> TrainConfig:
    """The recipe: ``config`` (default ``--config``) with the command line's flags over it."""
    config = config or args.config
    base = from_dict(TrainConfig, load_yaml(config), config) if config else TrainConfig()
    given = {k: getattr(args, k, None) for k in TRAIN_FLAGS}
    if getattr(args, "weights", None) is not None and given["mixing"] is None:
        given["mixing"] = "weights"  # weights given: they are what mixes the sources
    return replace(base, **given)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--train (repeatable: several sources, --weights), --valid (repeatable)."""
    parser.add_argument(
        "--train",
        required=True,
        action="append",
        help="training manifest (.jsonl or .csv); repeat for several sources (--mixing)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per --train manifest (with --mixing weights)",
    )
    parser.add_argument(
        "--valid",
        required=True,
        action="append",
        help="validation manifest; repeat for several (validated per language)",
    )


def training_sources(args: argparse.Namespace) -> list:
    """--train and --weights as ``xasr.data.sources.Source``s."""
    from xasr.data.sources import as_sources

    mixing = getattr(args, "mixing", None)
    if args.weights is not None and (mixing or "weights") != "weights":
        raise XasrError(f"--weights needs --mixing weights, not {mixing}")
    return as_sources(args.train, args.weights)


def add_run_options(parser: argparse.ArgumentParser, skip_bad: bool = True) -> None:
    """--skip-bad (where the command reads manifests it can skip lines of), --no-progress."""
    if skip_bad:
        parser.add_argument(
            "--skip-bad",
            action="store_true",
            help="drop (and count) unreadable audio and empty transcripts",
        )
    parser.add_argument("--no-progress", action="store_true")


def read_masks(directory: str | None):
    """--masks DIR: the language masks saved there (``xasr masks``), or None without it."""
    from xasr.models.masks import LanguageMasks

    if directory is None:
        return None
    masks = LanguageMasks.load(directory)
    if masks is None:
        raise XasrError(f"--masks {directory}: no masks.safetensors there (made by xasr masks)")
    return masks
