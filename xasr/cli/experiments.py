"""``xasr demo``, ``xasr base-model``, ``xasr experiment``, ``xasr rank-sources``: the
experiments, each a call into ``xasr.experiments``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xasr.cli.options import add_recipe_options, add_run_options, train_config
from xasr.errors import XasrError


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--lang", default="es")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--from", dest="source", default="en-small")
    p.add_argument(
        "--steps",
        type=int,
        help="the step budget of each arm (default: xasr.experiments.demo.DEMO_STEPS)",
    )
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    from xasr.experiments.demo import DEMO_STEPS, run_demo

    if args.steps is not None and args.steps < 1:
        raise XasrError(f"--steps must be at least 1, got {args.steps}")
    run_demo(
        Path(args.out),
        lang=args.lang,
        train_minutes=args.train_minutes,
        source=args.source,
        steps=args.steps or DEMO_STEPS,
        progress=not args.no_progress,
    )


def add_base_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="e.g. recipes/en-small.yaml")
    p.add_argument("--out", required=True, help="work directory (data and run)")
    p.add_argument("--no-publish", action="store_true", help="do not copy into xasr/pretrained")
    p.add_argument("--max-minutes", type=float, help="cap the training's wall clock")
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_base_model)


def cmd_base_model(args: argparse.Namespace) -> None:
    from xasr.experiments.base_model import build_base_model

    figures = build_base_model(
        args.recipe,
        args.out,
        publish=not args.no_publish,
        progress=not args.no_progress,
        max_minutes=args.max_minutes,
    )
    print(json.dumps({k: figures[k] for k in ("name", "parameters", "dev", "test")}, indent=1))


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (bases, targets, sizes, seeds, strategies)")
    p.add_argument("--out", help="output directory (default: the config's out)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the cells and their state")
    mode.add_argument(
        "--only-report", action="store_true", help="rebuild the report from finished cells"
    )
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="train again a cell whose recorded config differs (the old one is kept aside)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="cells trained at once, one thread each (one a core)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> None:
    from xasr.experiments.kinds import run_experiment

    run_experiment(
        args.config,
        out=args.out,
        dry_run=args.dry_run,
        only_report=args.only_report,
        progress=not args.no_progress,
        rerun_changed=args.rerun_changed,
        jobs=args.jobs,
        worker=args.worker,
    )


# Each probe is a plain transfer of one --train manifest for --steps steps, without early
# stopping: no mixing, no meta-transfer, no freezing, no --vocab (the vocabulary is of the
# source's kind), and --steps in place of --max-steps and --patience.
RANK_RECIPE = ("optimisation", "stopping", "data", "vocabulary", "augmentation", "machine")


def add_rank_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument(
        "--from", dest="sources", nargs="+", required=True, help="model directories, shipped names"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per source")
    p.add_argument("--out", default="runs/rank", help="one run per source + ranking.{json,md,png}")
    add_recipe_options(p, RANK_RECIPE, without=("max_steps", "patience", "vocab"))
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_rank_sources)


def cmd_rank_sources(args: argparse.Namespace) -> None:
    from xasr.experiments.rank import rank_sources

    rank_sources(  # prints the ranking table; OUT/ranking.{json,md,png}
        Path(args.out),
        args.train,
        args.valid,
        args.sources,
        train_config(args),
        steps=args.steps,
        progress=not args.no_progress,
    )


COMMANDS = {
    "demo": add_demo,
    "base-model": add_base_model,
    "experiment": add_experiment,
    "rank-sources": add_rank_sources,
}
