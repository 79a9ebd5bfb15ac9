"""`make demo`: Spanish XLT-Synth, transfer from en-small vs scratch, the same recipe and the
same step budget for both.

Each arm trains for the whole budget (no early stopping) and is scored at its best dev
checkpoint; the report shows test CER/WER of each, the dev CER each had reached after the same
early number of steps (how fast transfer converges), how each run stopped and where its best
checkpoint was. One seed: the demo shows the pipeline, `xasr experiment
experiments/languages.yaml` makes the comparison with three.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from xasr.data.synth import build_xlt_synth
from xasr.decode.evaluate import evaluate
from xasr.experiments.budget import Budget
from xasr.experiments.recipe import DEFAULT_RECIPE, EARLY_STEP
from xasr.experiments.report import cer_at_step, plot_curves
from xasr.experiments.tables import markdown_table
from xasr.io import output_dir
from xasr.models.build import read_model_config, resolve_model
from xasr.transfer.finetune import TransferOptions, transfer

# About 10 minutes on 2 CPU cores for both arms together, synthesis and evaluation included
# (measured: README, "make demo"); the same count on any machine.
DEMO_STEPS = 750
STRATEGIES = {
    "transfer": lambda source: TransferOptions(source=source),
    "reinit-head": lambda source: TransferOptions(source=source, reinit_head=True),
    "scratch": lambda source: TransferOptions(source=source, scratch=True),
}


def run_demo(
    out: Path,
    lang: str = "es",
    train_minutes: float = 10.0,
    source: str = "en-small",
    steps: int = DEMO_STEPS,
    strategies: tuple[str, ...] = ("transfer", "scratch"),
    progress: bool = True,
) -> dict:
    """Train each strategy on the same data with the same recipe and step budget; evaluate;
    write the report.

    Finished runs (``result.json`` present) are evaluated, not trained again; a killed run
    resumes from its last checkpoint.
    """
    budget = Budget("steps", steps)
    cfg = budget.recipe(DEFAULT_RECIPE)
    out = output_dir(out)
    resolve_model(source)  # a wrong --from before minutes of synthesis
    data = build_xlt_synth(
        [lang],
        out / "data",
        train_minutes=train_minutes,
        dev_utts=100,
        test_utts=200,
        progress=progress,
    )[lang]
    strategies = {name: STRATEGIES[name](source) for name in strategies}
    results = {}
    for name, opts in strategies.items():
        run_dir = out / name
        if not (run_dir / "result.json").is_file():  # finished runs are not trained again
            print(f"== {name}: training ({steps} steps) ==", flush=True)
            transfer(run_dir, data["train"], data["dev"], opts, cfg, progress=progress)
        trained = json.loads((run_dir / "result.json").read_text())
        test = evaluate(run_dir / "model", data["test"], progress=False)
        results[name] = {
            "test_cer": test["cer"],
            "test_wer": test["wer"],
            "steps": trained["steps"],
            "best_step": trained["best_step"],
            "best_dev_cer": trained["best_dev_cer"],
            "stopped_by": trained["stopped_by"],
            "train_seconds": trained["seconds"],
            f"dev_cer_at_step_{EARLY_STEP}": cer_at_step(run_dir, EARLY_STEP),
        }
    summary = {
        "lang": lang,
        "train_minutes": train_minutes,
        "source": source,
        "budget": budget.describe(),
        "recipe": asdict(cfg),
        "strategies": results,
    }
    write_report(out, summary, {name: out / name for name in strategies})
    return summary


def write_report(out: Path, summary: dict, runs: dict[str, Path]) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    plot_curves(
        runs, out / "learning_curve.png", f"{summary['lang']}: from {summary['source']} vs scratch"
    )
    early = f"dev_cer_at_step_{EARLY_STEP}"
    rows = [
        [
            name,
            r["test_cer"],
            r["test_wer"],
            r[early],
            r["best_dev_cer"],
            r["best_step"],
            r["steps"],
            r["stopped_by"],
        ]
        for name, r in summary["strategies"].items()
    ]
    table = markdown_table(
        [
            "strategy",
            "test CER",
            "test WER",
            f"dev CER @ step {EARLY_STEP}",
            "best dev CER",
            "best step",
            "steps",
            "stopped by",
        ],
        rows,
    )
    source_cfg, meta = read_model_config(resolve_model(summary["source"]))
    recipe = summary["recipe"]
    stops = "; ".join(
        f"{name}: {r['stopped_by']} at step {r['steps']}, best dev checkpoint at step "
        f"{r['best_step']}"
        + (
            " (its last validation: it may still have been improving)"
            if r["best_step"] >= r["steps"]
            else ""
        )
        for name, r in summary["strategies"].items()
    )
    text = f"""# xasr demo: {summary["lang"]} from {summary["source"]}

Target data: XLT-Synth `{summary["lang"]}`, {summary["train_minutes"]} minutes of training speech;
dev 100 and test 200 utterances spoken by voice variants training never heard.
Every strategy uses the same recipe (lr {recipe["lr"]}, {recipe["max_batch_seconds"]:g} s batches,
validation every {recipe["val_every"]} steps) and the same architecture ({source_cfg.d_model}-dim,
{source_cfg.n_layers} layers). **Budget:** {summary["budget"]}. One seed: `xasr experiment
experiments/languages.yaml` compares with three.

{table}

How they stopped: {stops}.

![learning curves](learning_curve.png)

Source model: {summary["source"]} (dev CER {meta.get("dev_cer", float("nan")):.3f} on its own language).
"""
    (out / "report.md").write_text(text)
    print(text)
