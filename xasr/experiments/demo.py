"""`make demo`: Spanish XLT-Synth, transfer from en-small vs scratch, same recipe and cap.

Both runs train until dev CER stops improving (early stopping) or the shared cap ends them;
the report shows test CER/WER of each best model, and the dev CER each had reached after the
same early number of steps (how fast transfer converges).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from xasr.config import TrainConfig
from xasr.data.synth import build_xlt_synth
from xasr.decode.evaluate import evaluate
from xasr.experiments.report import cer_at_step, markdown_table, plot_curves
from xasr.io import output_dir
from xasr.models.build import read_model_config, resolve_model
from xasr.transfer.finetune import TransferOptions, transfer

DEMO_RECIPE = TrainConfig(
    lr=1.5e-3,
    warmup_steps=50,
    max_steps=1500,
    max_batch_seconds=60.0,
    val_every=25,
    patience=6,
    min_delta=0.002,
    num_workers=1,
)
EARLY_STEP = 100
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
    max_minutes: float = 5.0,
    recipe: TrainConfig = DEMO_RECIPE,
    strategies: tuple[str, ...] = ("transfer", "scratch"),
    progress: bool = True,
) -> dict:
    """Train each strategy on the same data with the same recipe; evaluate; write the report.

    Finished runs (``result.json`` present) are evaluated, not trained again; a killed run
    resumes from its last checkpoint.
    """
    cfg = TrainConfig(**{**asdict(recipe), "max_minutes": max_minutes})
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
            print(f"== {name}: training (cap {max_minutes} min) ==", flush=True)
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
    capped = [
        name for name, r in summary["strategies"].items() if r["stopped_by"] != "early stopping"
    ]
    caveat = (
        f"\n**Not converged:** {', '.join(capped)}: stopped by the cap "
        f"({summary['recipe']['max_minutes']} min / {summary['recipe']['max_steps']} steps) "
        "before early stopping, so dev CER might still have improved; these figures are upper "
        "bounds. Raise `--max-minutes` (or, on a GPU, run "
        "`xasr experiment experiments/transfer-gpu.yaml`) to compare converged models.\n"
        if capped
        else ""
    )
    text = f"""# xasr demo: {summary["lang"]} from {summary["source"]}

Target data: XLT-Synth `{summary["lang"]}`, {summary["train_minutes"]} minutes of training speech;
dev 100 and test 200 utterances spoken by voice variants training never heard.
All strategies use the same recipe (lr {summary["recipe"]["lr"]}, {summary["recipe"]["max_batch_seconds"]} s
batches, early stopping after {summary["recipe"]["patience"]} validations without dev-CER
improvement, cap {summary["recipe"]["max_minutes"]} min) and the same architecture
({source_cfg.d_model}-dim, {source_cfg.n_layers} layers).

{table}
{caveat}
![learning curves](learning_curve.png)

Source model: {summary["source"]} (dev CER {meta.get("dev_cer", float("nan")):.3f} on its own language).
"""
    (out / "report.md").write_text(text)
    print(text)
