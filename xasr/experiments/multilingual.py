"""`xasr experiment` with ``kind: multilingual``: one model trained on several languages at once
(training from several sources) against each language trained alone, same model and recipe.

Config keys: ``name``, ``out``, ``languages`` ({code: train minutes}), ``synth`` (dev_utts,
test_utts, conditions, seed), ``size`` (a named model size), ``recipe`` (TrainConfig keys for
every run), ``joint`` (TrainConfig keys for the joint run only: mixing, temperature,
source_batches, monitor). Runs live in ``OUT/runs/alone-<lang>`` and ``OUT/runs/joint``; each
resumes when killed (train's own resume) and is evaluated once on every language's test set
(``OUT/runs/<run>/test-<lang>.json``). ``OUT/results.json`` and ``OUT/report.md`` hold the
table: per-language test CER alone and joint, and what joint training bought or cost.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from xasr.config import TrainConfig, from_dict
from xasr.decode.evaluate import evaluate
from xasr.errors import XasrError
from xasr.experiments.config import load_named_yaml
from xasr.experiments.results import save_outcome

KEYS = ("kind", "name", "out", "languages", "synth", "arch", "size", "recipe", "joint")
SYNTH_DEFAULTS = {"dev_utts": 100, "test_utts": 200, "conditions": "noisy", "seed": 0}


def run_multilingual(config: str | Path, out: str | Path | None = None, progress=True) -> dict:
    from xasr.data.synth import build_per_language
    from xasr.models.build import model_config
    from xasr.train.loop import train

    data = load_named_yaml(config, KEYS)
    languages = data.get("languages") or {}
    if not isinstance(languages, dict) or len(languages) < 2:
        raise XasrError(f"{config}: languages must map two or more codes to train minutes")
    out = Path(out or data.get("out") or Path("runs") / "experiments" / data["name"])
    synth = {**SYNTH_DEFAULTS, **(data.get("synth") or {})}
    recipe = from_dict(TrainConfig, data.get("recipe") or {}, f"{config}: recipe")
    joint_recipe = from_dict(
        TrainConfig, {**asdict(recipe), **(data.get("joint") or {})}, f"{config}: joint"
    )
    size = model_config(data.get("size", "small"), data.get("arch", "ctc"))
    splits = build_per_language(out / "data", languages, progress, **synth)
    alone = dataclasses.replace(recipe, monitor="all")  # one dev language: nothing else
    runs = {
        f"alone-{lang}": ([splits[lang]["train"]], [splits[lang]["dev"]], alone)
        for lang in languages
    }
    runs["joint"] = (
        [splits[lang]["train"] for lang in languages],
        [splits[lang]["dev"] for lang in languages],
        joint_recipe,
    )
    summary = {}
    for name, (train_manifests, dev_manifests, cfg) in runs.items():
        run_dir = out / "runs" / name
        print(f"== {name} ==", flush=True)
        if not (run_dir / "result.json").is_file():
            train(run_dir, train_manifests, dev_manifests, cfg, size, progress=progress)
        result = json.loads((run_dir / "result.json").read_text())
        tests = {}
        for lang in languages if name == "joint" else [name.removeprefix("alone-")]:
            path = run_dir / f"test-{lang}.json"
            if not path.is_file():
                evaluate(run_dir / "model", splits[lang]["test"], output=path, progress=False)
            tests[lang] = json.loads(path.read_text())
        summary[name] = {
            "steps": result["steps"],
            "best_step": result["best_step"],
            "stopped_by": result["stopped_by"],
            "minutes": result["seconds"] / 60,
            "test": {lang: {"cer": t["cer"], "wer": t["wer"]} for lang, t in tests.items()},
        }
    results = {
        "name": data["name"],
        "languages": languages,
        "size": data.get("size", "small"),
        "recipe": asdict(recipe),
        "joint_recipe": asdict(joint_recipe),
        "runs": summary,
    }
    save_outcome(out, results, multilingual_table(results))
    return results


def multilingual_table(results: dict) -> str:
    """Markdown: per language, train minutes, test CER alone and joint, the change."""
    runs = results["runs"]
    joint = runs["joint"]
    how = results["joint_recipe"]
    setting = (
        f"Model size {results['size']}; joint run: mixing {how['mixing']} "
        f"(T = {how['temperature']:g}), {how['source_batches']} batches, early stopping on "
        f"{how['monitor']} dev CER."
    )
    stop = f"{joint['best_step']} of {joint['steps']} ({joint['stopped_by']})"
    lines = [
        f"# {results['name']}: joint multilingual training vs each language alone",
        "",
        setting,
        "",
        "| language | train min | CER alone | CER joint | joint - alone | alone: steps (stop) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for lang, minutes in results["languages"].items():
        alone = runs[f"alone-{lang}"]
        a, j = alone["test"][lang]["cer"], joint["test"][lang]["cer"]
        lines.append(
            f"| {lang} | {minutes:g} | {a:.1%} | {j:.1%} | {(j - a) * 100:+.1f} pts "
            f"| {alone['best_step']}/{alone['steps']} ({alone['stopped_by']}) |"
        )
    lines += [
        "",
        f"Joint run: best step {stop}, {joint['minutes']:.1f} min.",
        "",
    ]
    return "\n".join(lines)
