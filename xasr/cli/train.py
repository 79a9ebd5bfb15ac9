"""``xasr train``: a model from scratch."""

from __future__ import annotations

import argparse
import json

from xasr.cli.options import (
    add_data_options,
    add_recipe_options,
    add_run_options,
    train_config,
    training_sources,
)
from xasr.config import ARCH_FLAGS, SIZES

# every recipe group but freezing (nothing to freeze in a model trained from scratch)
RECIPE = (
    "optimisation",
    "stopping",
    "data",
    "mixing",
    "vocabulary",
    "augmentation",
    "meta-transfer",
    "machine",
)
SIZE_NAMES = ", ".join(dict.fromkeys(n for a in ARCH_FLAGS.values() for n in SIZES[a]))


def add_train(p: argparse.ArgumentParser) -> None:
    add_data_options(p)
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--arch", choices=tuple(ARCH_FLAGS), default="ctc", help="aed: encoder-decoder")
    p.add_argument("--size", default="small", help=SIZE_NAMES)
    add_recipe_options(p, RECIPE)
    add_run_options(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from xasr.models.build import model_config
    from xasr.train.loop import train

    result = train(
        args.out,
        training_sources(args),
        args.valid,
        train_config(args),
        model_config(args.size, args.arch),
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(json.dumps(result.to_json(), indent=1))


COMMANDS = {"train": add_train}
