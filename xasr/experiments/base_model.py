"""`make base-model`: build XLT-Synth for one language, train until dev CER stops improving,
evaluate, and publish the model directory into ``xasr/pretrained/<name>`` with its evidence
(learning curve CSV and PNG, dev/test figures, the recipe)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from xasr.config import TrainConfig, from_dict, load_yaml, replace
from xasr.data.synth import build_xlt_synth
from xasr.decode.evaluate import evaluate
from xasr.errors import XasrError
from xasr.experiments.config import recipe_model
from xasr.experiments.report import plot_curves
from xasr.models.build import (
    PRETRAINED_DIR,
    WEIGHTS_FILE,
    count_parameters,
    load_model_dir,
)
from xasr.train.loop import train
from xasr.transfer.finetune import TransferOptions, transfer

RECIPE_KEYS = {"name", "lang", "arch", "size", "model", "init", "synth", "train"}


def build_base_model(
    recipe_path: str | Path,
    out: str | Path,
    publish: bool = True,
    progress: bool = True,
    max_minutes: float | None = None,
    train_overrides: dict | None = None,
) -> dict:
    """``max_minutes`` caps the training's wall clock (overrides the recipe's);
    ``train_overrides`` replaces keys of the recipe's ``train`` section (e.g. a smaller batch and
    a shorter warm-up for a capped CPU build)."""
    recipe = load_yaml(recipe_path)
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise XasrError(f"{recipe_path}: unknown key(s) {', '.join(sorted(unknown))}")
    out = Path(out)
    lang = recipe["lang"]
    data = build_xlt_synth([lang], out / "data", progress=progress, **recipe.get("synth", {}))[lang]
    train_keys = {**recipe.get("train", {}), **(train_overrides or {})}
    cfg = from_dict(TrainConfig, train_keys, f"{recipe_path}: train")
    cfg = replace(cfg, max_minutes=max_minutes)
    model_cfg = recipe_model(recipe, recipe_path)
    if recipe.get("init"):  # start from another model (e.g. a CTC model's encoder for an AED)
        opts = TransferOptions(source=recipe["init"], expect=model_cfg)
        result = transfer(out / "run", data["train"], data["dev"], opts, cfg, progress=progress)
    else:
        result = train(out / "run", data["train"], data["dev"], cfg, model_cfg, progress=progress)
    dev = evaluate(result.model_dir, data["dev"], progress=False)
    test = evaluate(result.model_dir, data["test"], progress=False)
    model, _, _ = load_model_dir(result.model_dir)
    figures = {
        "name": recipe["name"],
        "parameters": count_parameters(model),
        "train": result.to_json(),
        "dev": dev,
        "test": test,
        "recipe": recipe,
    }
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    if publish:
        publish_model(out / "run", PRETRAINED_DIR / recipe["name"], figures)
    return figures


def publish_model(run_dir: Path, target: Path, figures: dict) -> None:
    """Copy the model directory and its evidence into the package (replacing an older one)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "model", tmp)
    # Shipped weights in float16 (half the size, under the 20 MB a repository file may take);
    # load_model_dir casts them back to the model's float32.
    weights = tmp / WEIGHTS_FILE
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()},
        str(weights),
    )
    shutil.copy(run_dir / "metrics.csv", tmp / "metrics.csv")
    plot_curves(
        {figures["name"]: run_dir},
        tmp / "learning_curve.png",
        f"{figures['name']}: dev CER while training",
    )
    (tmp / "figures.json").write_text(json.dumps(figures, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
