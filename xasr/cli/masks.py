"""``xasr masks``: each language's sparse sub-network of a shared multilingual model."""

from __future__ import annotations

import argparse

from xasr.cli.options import add_recipe_options, add_run_options, train_config

# Each language's adaptation is a plain transfer of its one manifest: no mixing, nothing
# frozen, no meta-transfer, and no --vocab (the vocabulary is of the shared model's kind).
RECIPE = ("optimisation", "stopping", "data", "vocabulary", "augmentation", "machine")


def add_masks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, help="the shared multilingual model")
    p.add_argument("--train", required=True, action="append", help="one manifest per language")
    p.add_argument("--valid", required=True, action="append", help="its dev set, per language")
    p.add_argument("--sparsity", type=float, required=True, help="share of weights pruned, 0-1")
    p.add_argument("--rounds", type=int, default=1, help="iterative pruning with rewinding")
    p.add_argument("--out", required=True, help="masks.safetensors, masks.json, overlap.json")
    # the adaptations' recipe (--max-steps: each one's budget)
    add_recipe_options(p, RECIPE, without=("vocab",))
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_masks)


def cmd_masks(args: argparse.Namespace) -> None:
    from xasr.transfer.sparse import by_language, find_masks

    masks = find_masks(
        args.out,
        args.source,
        by_language(args.train, "--train"),
        by_language(args.valid, "--valid"),
        args.sparsity,
        train_config(args),
        rounds=args.rounds,
        progress=not args.no_progress,
    )
    overlap = masks.overlap()
    print("share of a row language's kept weights that the column language keeps too:")
    print("\t" + "\t".join(masks.langs))
    for a in masks.langs:
        print(a + "\t" + "\t".join(f"{overlap[a][b]:.2f}" for b in masks.langs))


COMMANDS = {"masks": add_masks}
