"""``xasr pretrain``: continued self-supervised pre-training of a wav2vec2 model."""

from __future__ import annotations

import argparse
import json

from xasr.cli.options import (
    add_data_options,
    add_recipe_options,
    add_run_options,
    read_masks,
    train_config,
    training_sources,
)

# no vocabulary (the transcripts are not read), no augmentation (masking frames is the task
# itself), nothing frozen, no meta-transfer (xasr.train.pretrain refuses it)
RECIPE = ("optimisation", "stopping", "data", "mixing", "machine")


def add_pretrain(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from", dest="source", required=True, help="a Hugging Face ...ForPreTraining directory"
    )
    add_data_options(p)  # the transcripts are not used
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--masks", help="language masks (xasr masks): each language's sub-network")
    ssl = p.add_argument_group("the contrastive task (defaults: xasr.models.ssl.SslOptions)")
    ssl.add_argument("--mask-prob", type=float, help="share of frames starting a span")
    ssl.add_argument("--mask-length", type=int, help="masked span, in frames")
    ssl.add_argument("--gumbel-temperature", type=float, help="the quantizer's")
    add_recipe_options(p, RECIPE)
    add_run_options(p)
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from xasr.models.ssl import SslOptions
    from xasr.train.pretrain import continue_pretraining

    given = {
        "mask_prob": args.mask_prob,
        "mask_length": args.mask_length,
        "gumbel_temperature": args.gumbel_temperature,
    }
    result = continue_pretraining(
        args.out,
        training_sources(args),
        args.valid,
        train_config(args),
        args.source,
        SslOptions(**{k: v for k, v in given.items() if v is not None}),
        masks=read_masks(args.masks),
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(json.dumps(result, indent=1))


COMMANDS = {"pretrain": add_pretrain}
