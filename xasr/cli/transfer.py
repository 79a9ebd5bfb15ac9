"""``xasr transfer``: a model into a new language or domain, directly or through a
speech-translation model, with the forgetting counter-measures and before/after tests."""

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
from xasr.config import ARCH_FLAGS, TRAIN_GROUPS
from xasr.data.translate import BACKENDS
from xasr.errors import XasrError

RECIPE = tuple(TRAIN_GROUPS)  # every group, less --vocab: the vocabulary is of the source's kind
ST_ONLY = ("source_speech", "source_valid", "st_run", "st_config")  # need --strategy st-enhanced


def add_transfer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", help="model directory or shipped name (en-small)")
    add_data_options(p)
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--scratch", action="store_true", help="same architecture, random start")
    p.add_argument("--reinit-head", action="store_true", help="random output layer")
    p.add_argument("--drop-layers", type=int, default=0, help="re-initialise the top N layers")
    p.add_argument("--token-map", help="file of 'TARGET SOURCE' token pairs, e.g. 'ß s'")
    p.add_argument("--size", help="require this architecture (error if the source differs)")
    p.add_argument(
        "--arch",
        choices=tuple(ARCH_FLAGS),
        help="the target's family: another than the source's takes what matches (--size, "
        "default the source's size name)",
    )
    add_forgetting_options(p)
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="language masks (xasr masks): each batch trains its language's sub-network",
    )
    add_st_options(p)
    add_recipe_options(p, RECIPE, without=("vocab",))
    add_run_options(p)
    p.set_defaults(func=cmd_transfer)


def add_forgetting_options(p: argparse.ArgumentParser) -> None:
    forget = p.add_argument_group("adapting without forgetting (README)")
    forget.add_argument("--replay", metavar="M", help="source-language manifest to replay")
    forget.add_argument(
        "--replay-fraction", type=float, metavar="F", help="replay share of training audio, 0<F<1"
    )
    forget.add_argument("--l2sp", type=float, metavar="W", help="L2-SP weight (alpha)")
    forget.add_argument("--ewc", type=float, metavar="W", help="EWC weight (lambda)")
    forget.add_argument("--fisher-manifest", metavar="M", help="EWC's data (default: --replay)")
    forget.add_argument("--fisher-batches", type=int, default=20, metavar="N")
    forget.add_argument("--source-test", metavar="M", help="after training: CER before/after")
    forget.add_argument("--target-test", metavar="M", help="... and on the target's test set")


def add_st_options(p: argparse.ArgumentParser) -> None:
    st = p.add_argument_group("speech-translation-enhanced transfer (README)")
    st.add_argument(
        "--strategy",
        choices=["direct", "st-enhanced"],
        default="direct",
        help="st-enhanced: through a speech-translation model (source speech -> target text)",
    )
    st.add_argument("--source-speech", metavar="M", help="source-language speech to translate")
    st.add_argument("--source-valid", metavar="M", help="held-out source speech (ST dev, BLEU)")
    st.add_argument(
        "--st-heldout", type=int, default=50, metavar="N", help="without --source-valid: N lines"
    )
    st.add_argument("--translate-with", choices=BACKENDS, default="apertium")
    st.add_argument(
        "--translator-command", metavar="CMD", help="command: the program; apertium: its modes"
    )
    st.add_argument("--translator-model", metavar="DIR", help="hf: a local translation model")
    st.add_argument("--target-lang", help="the target language (default: the manifest's lang)")
    st.add_argument("--st-run", metavar="DIR", help="the ST stage's directory (default OUT/st)")
    st.add_argument("--st-config", metavar="YAML", help="the ST stage's recipe (default: --config)")


def cmd_transfer(args: argparse.Namespace) -> None:
    from xasr.transfer.architecture import requested_architecture
    from xasr.transfer.finetune import TransferOptions, transfer
    from xasr.transfer.forgetting import (
        before_after_table,
        check_before_after,
        compare_with_source,
    )

    if args.source is None and not args.scratch:
        raise XasrError("--from is required (a model directory or a shipped name such as en-small)")
    if args.source is None and args.size is None and args.arch is None:
        raise XasrError("--scratch without --from needs --size (or --arch)")
    opts = TransferOptions(
        source=args.source,
        scratch=args.scratch,
        reinit_head=args.reinit_head,
        drop_layers=args.drop_layers,
        token_map_file=args.token_map,
        expect=requested_architecture(args.source, args.arch, args.size),
        replay_manifest=args.replay,
        replay_fraction=args.replay_fraction or 0.0,
        l2sp_weight=args.l2sp or 0.0,
        ewc_weight=args.ewc or 0.0,
        fisher_manifest=args.fisher_manifest,
        fisher_batches=args.fisher_batches,
    )
    tests = {
        name: path
        for name, path in (("source", args.source_test), ("target", args.target_test))
        if path
    }
    check_before_after(args.source, tests)
    if args.strategy == "st-enhanced":
        if args.masks:
            raise XasrError("--masks trains a multilingual model; not with --strategy st-enhanced")
        result = st_enhanced(args, opts)
    else:
        for flag in ST_ONLY:
            if getattr(args, flag):
                raise XasrError(f"--{flag.replace('_', '-')} needs --strategy st-enhanced")
        result = transfer(
            args.out,
            training_sources(args),
            args.valid,
            opts,
            train_config(args),
            skip_bad=args.skip_bad,
            progress=not args.no_progress,
            masks=read_masks(args.masks),
        )
    print(json.dumps(result.to_json(), indent=1))
    results = compare_with_source(args.out, args.source, result.model_dir, tests)
    if results is not None:
        print(before_after_table(results))


def st_enhanced(args: argparse.Namespace, opts):
    """``transfer --strategy st-enhanced``: the chain of ``xasr.transfer.st``."""
    from xasr.transfer.st import StOptions, st_enhanced_transfer

    if not args.source_speech:
        raise XasrError("--strategy st-enhanced needs --source-speech M (source-language speech)")
    st = StOptions(
        source_speech=args.source_speech,
        translate_with=args.translate_with,
        source_valid=args.source_valid,
        heldout_utts=args.st_heldout,
        lang=args.target_lang,
        translator_command=args.translator_command,
        translator_model=args.translator_model,
        st_run=args.st_run,
    )
    cfg = train_config(args)
    st_cfg = train_config(args, args.st_config) if args.st_config else None
    return st_enhanced_transfer(
        args.out,
        training_sources(args),
        args.valid,
        opts,
        st,
        cfg,
        st_cfg,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )


COMMANDS = {"transfer": add_transfer}
