"""What a resumed run must match: the data, monitor and sub-networks it started with
(``RUN/data.json``), and a last checkpoint that this run's model and optimizer groups fit."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xasr.config import TRAIN_FLAGS, TrainConfig
from xasr.errors import CheckpointError, XasrError
from xasr.io import write_text
from xasr.train.module import AsrTask

DATA_FILE = "data.json"  # what a run trains and validates on, checked when it resumes
# The TrainConfig keys that decide which batches a run trains on (its data position means
# nothing for others) and what it monitors.
DATA_KEYS = ("mixing", "temperature", "source_batches", "monitor")
META_KEYS = ("meta_variant", "k_train", "k_valid", "meta_tasks")


def check_same_data(
    run_dir: Path,
    sources,
    valid_manifests: list[str],
    cfg: TrainConfig,
    masks=None,
    task: dict | None = None,
) -> None:
    """Record (first start) or compare (resume) the run's sources, dev sets, mixing,
    monitor and language masks: a resumed run must go on with the data, metric and
    sub-networks it started with (the checkpoint's data position and best-model state mean
    nothing for others). ``task``: more keys that must not change (continued pre-training's
    source and masking: its dev loss scores that task)."""
    spec = {
        "train": [[str(Path(s.manifest).resolve()), s.weight] for s in sources],
        "valid": [str(Path(m).resolve()) for m in valid_manifests],
        **{k: getattr(cfg, k) for k in DATA_KEYS},
        **(task or {}),
    }
    if cfg.meta_variant is not None:  # runs from before meta-transfer have no such keys
        spec.update({k: getattr(cfg, k) for k in META_KEYS})
    if masks is not None:
        spec["masks"] = masks.digest()
    path = run_dir / DATA_FILE
    resuming = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if resuming and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        optional = (*META_KEYS, "masks")
        keys = [*spec, *(k for k in optional if k in saved and k not in spec)]
        for key in keys:
            value = spec.get(key)
            if saved.get(key) != json.loads(json.dumps(value)):
                flag = TRAIN_FLAGS.get(key, f"--{key}")  # masks: --masks
                raise XasrError(
                    f"{run_dir} was started with other {flag} ({saved.get(key)}, now {value}); "
                    "resume it with the same data and options, or train into a new --out"
                )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(spec, indent=1))


def check_checkpoint(path: Path, task: AsrTask) -> None:
    """``CheckpointError`` before Lightning fails on a last.ckpt: one that cannot be read (a
    file damaged or replaced from outside: xasr's own writes are atomic), or one whose weights
    or optimizer groups do not fit this run (the same RUN resumed with another --size,
    --freeze-layers, --reinit-head, ...)."""
    try:  # mmap: the tensors are not read, only the structure
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        weights, optimizers = saved["state_dict"], saved["optimizer_states"]
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} cannot be read ({reason}); move it away to train this run from its start"
        ) from None
    started_otherwise = (
        f"{path.parent.parent} was started with other options; resume it with the options it "
        "started with, or train into a new --out"
    )
    for name, tensor in task.state_dict().items():
        if name in weights and tuple(weights[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{started_otherwise} ({name} is {tuple(weights[name].shape)} there, "
                f"{tuple(tensor.shape)} now: another model size or vocabulary)"
            )
    groups = [(g["name"], len(g["params"])) for g in task._param_groups()]
    saved_groups = [len(g["params"]) for g in optimizers[0]["param_groups"]] if optimizers else []
    if saved_groups and saved_groups != [n for _, n in groups]:
        raise CheckpointError(
            f"{started_otherwise} (trainable parameter groups {saved_groups} there, "
            f"{[n for _, n in groups]} now: another --freeze-layers, --freeze-steps, "
            "--drop-layers, --reinit-head, --l2sp or --ewc)"
        )
