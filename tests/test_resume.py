"""Exact resumption: a run killed (SIGKILL) or stopped (Ctrl-C) and run again ends with the same
weights, bit for bit, as an uninterrupted run with the same seed (CPU, fp32)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch

from xasr.data.batching import check_utterances, make_loader, to_cuts
from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab
from xasr.train.curve import read_curve

# Runs train() in a fresh process; with KILL_AT, the process signals itself right after that
# optimizer step (past a checkpoint, in the middle of an epoch): a real kill, at a known step.
TRAIN_SCRIPT = """
import json, os, signal, sys
import lightning as L
from xasr.config import MODEL_SIZES, TrainConfig
from xasr.train import loop

run, train_manifest, valid_manifest, cfg, kill_at, sig = sys.argv[1:]
if train_manifest.startswith("["):  # several sources
    train_manifest = json.loads(train_manifest)

class Kill(L.Callback):
    # again at every later batch end until it takes: once, under heavy load, a SIGINT was
    # lost and the run went on to the end (Python ignores a KeyboardInterrupt raised inside a
    # __del__, which a garbage collection can run at any point)
    def on_train_batch_end(self, trainer, *args):
        if 0 <= int(kill_at) <= trainer.global_step:
            os.kill(os.getpid(), getattr(signal, sig))

make_trainer = loop.make_trainer
loop.make_trainer = lambda run_dir, cfg, callbacks, progress: make_trainer(
    run_dir, cfg, [*callbacks, Kill()], progress
)
loop.train(run, train_manifest, valid_manifest, TrainConfig(**json.loads(cfg)),
           MODEL_SIZES["tiny"], progress=False)
"""


def run_training(run, corpus, cfg, kill_at: int = -1, sig: str = "SIGKILL", train=None, dev=None):
    """``train``: None (English), or a list of manifests; ``dev``: None (English) or one."""
    # a file, not -c: under DDP Lightning starts the other ranks by running it again
    script = run.parent / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    train = str(corpus.en_train) if train is None else json.dumps([str(m) for m in train])
    args = [str(run), train, str(dev or corpus.en_dev), json.dumps(asdict(cfg))]
    return subprocess.run(
        [sys.executable, str(script), *args, str(kill_at), sig],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def final_weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize(
    ("sig", "workers", "val_every", "kill_at", "devices"),
    [
        ("SIGKILL", 2, 3, 11, 1),  # checkpoint at step 9: inside an epoch (4 batches each)
        ("SIGINT", 0, 3, 11, 1),
        ("SIGKILL", 0, 4, 6, 1),  # checkpoint at step 4: the last batch of the first epoch
        ("SIGKILL", 0, 3, 11, 2),  # DDP on CPU (gloo): each rank restores its own state
    ],
)
def test_killed_run_resumes_to_identical_weights(
    corpus, tmp_path, make_cfg, sig, workers, val_every, kill_at, devices
):
    # 3 s batches: several batches per epoch; with data loader workers (the command line's
    # default) and without.
    cfg = make_cfg(
        max_steps=14,
        val_every=val_every,
        max_batch_seconds=3.0,
        num_workers=workers,
        devices=devices,
    )
    whole = run_training(tmp_path / "whole", corpus, cfg)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = run_training(tmp_path / "killed", corpus, cfg, kill_at=kill_at, sig=sig)
    assert killed.returncode != 0
    assert not (tmp_path / "killed" / "result.json").exists()
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == kill_at // val_every * val_every
    if devices == 1:  # under DDP each rank has half the batches
        assert state["CutsData"]["batches"] == {3: 1, 4: 4}[val_every]  # batches into the epoch
    assert len(state["callbacks"]["RandomState"]["ranks"]) == devices
    before = state["callbacks"]["TrainingClock"]["seconds"]
    resumed = run_training(tmp_path / "killed", corpus, cfg)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the run's time counts the killed process's until its checkpoint
    assert json.loads((tmp_path / "killed" / "result.json").read_text())["seconds"] > before > 0

    expected, got = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"
    # The learning curves agree too, and validation is logged at the step it ran after.
    curve = [r for r in read_curve(tmp_path / "killed") if "val_cer" in r]
    assert [r["step"] for r in curve] == [*range(val_every, 14, val_every), 14]
    whole_curve = [r for r in read_curve(tmp_path / "whole") if "val_cer" in r]
    assert [r["val_cer"] for r in curve] == [r["val_cer"] for r in whole_curve]


@pytest.mark.parametrize(("variant", "devices"), [("reference", 1), ("paper", 2)])
def test_killed_meta_transfer_run_resumes_and_finishes(
    corpus, tmp_path, make_cfg, variant, devices
):
    """German as the code-switched target (query), English and German as tasks: killed with
    SIGKILL mid-epoch, resumed, it ends with the weights of a run never killed."""
    cfg = make_cfg(max_steps=8, val_every=3, meta_variant=variant, k_train=2, k_valid=2)
    cfg = replace(cfg, devices=devices)
    data = {"train": [corpus.de_train, corpus.en_train], "dev": corpus.de_dev}
    whole = run_training(tmp_path / "whole", corpus, cfg, **data)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run_training(tmp_path / "killed", corpus, cfg, kill_at=5, **data)
    assert killed.returncode != 0
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    resumed = run_training(tmp_path / "killed", corpus, cfg, **data)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "killed" / "result.json").read_text())["steps"] == 8
    expected, got = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"
    curve = read_curve(tmp_path / "killed")
    assert [r["step"] for r in curve if "val_cer" in r] == [3, 6, 8]


def test_resumable_sampler_continues_the_epoch(corpus):
    utts, _ = check_utterances(read_manifest(corpus.en_train))
    vocab = CharVocab.from_texts(u.text for u in utts)

    def batch_ids(skip: int | None = None, epoch: int = 1) -> list[list[str]]:
        loader = make_loader(to_cuts(utts), vocab, 3.0, shuffle=True, seed=3)
        if skip is None:
            loader.sampler.set_epoch(epoch)
        else:
            loader.sampler.resume(epoch, skip)
        return [[c.id for c in cuts] for cuts in loader.sampler]

    full = batch_ids()
    assert len(full) >= 3
    assert batch_ids(skip=2) == full[2:]
    assert batch_ids(skip=len(full) + 5) == []
    assert batch_ids(epoch=2) != full  # another epoch, another order


def test_curve_steps_count_updates(en_run):
    """Training loss at step s is the loss of the batch that made update s; validation at s ran
    after s updates."""
    rows = read_curve(en_run)
    assert [r["step"] for r in rows if "val_cer" in r] == [10, 20]
    assert min(r["step"] for r in rows if "train_loss" in r) >= 1


def test_ctrl_c_is_one_line_and_resumable(xasr, corpus, tmp_path, subprocess_env):
    import os
    import signal
    import time

    run = tmp_path / "run"
    args = [xasr, "train", "--train", str(corpus.en_train), "--valid", str(corpus.en_dev)]
    args += ["--out", str(run), "--size", "tiny", "--no-progress", "--workers", "0"]
    args += ["--max-steps", "100000", "--val-every", "5", "--batch-seconds", "3"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.ckpt").is_file():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("no checkpoint within 120 s: cannot test an interrupt during training")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("xasr train: interrupted at step ")
    assert "run the same command to resume" in last_line
    assert not (run / "result.json").exists()
