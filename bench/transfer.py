"""Transfer vs re-initialised head vs scratch for one language and data budget.

    .venv/bin/python bench/transfer.py --lang de --train-minutes 10 --max-minutes 5

Builds XLT-Synth for the language, trains every strategy with the demo's recipe (same data,
same cap, early stopping on dev CER), evaluates each on the test set (held-out voices) and
prints the table; the report and curves land in --out (default runs/bench-transfer-LANG).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from xasr.config import replace
from xasr.experiments.demo import DEMO_RECIPE, STRATEGIES, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lang", default="es")
    parser.add_argument("--train-minutes", type=float, default=10.0)
    parser.add_argument("--max-minutes", type=float, default=5.0, help="cap per training run")
    parser.add_argument("--max-steps", type=int, help="step cap per run (default: the demo's)")
    parser.add_argument("--from", dest="source", default="en-small")
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated subset of {', '.join(STRATEGIES)}",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out or f"runs/bench-transfer-{args.lang}")
    recipe = replace(DEMO_RECIPE, max_steps=args.max_steps)
    summary = run_demo(
        out,
        lang=args.lang,
        train_minutes=args.train_minutes,
        source=args.source,
        max_minutes=args.max_minutes,
        recipe=recipe,
        progress=False,
        strategies=tuple(s.strip() for s in args.strategies.split(",")),
    )
    print(f"\n{'strategy':<12} {'test CER':>9} {'test WER':>9} {'steps':>6} {'best step':>9}")
    for name, r in summary["strategies"].items():
        print(
            f"{name:<12} {r['test_cer']:>9.3f} {r['test_wer']:>9.3f} {r['steps']:>6} "
            f"{r['best_step']:>9}"
        )


if __name__ == "__main__":
    main()
