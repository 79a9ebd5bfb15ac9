"""A full disk or a read-only folder: one clear line, the previous checkpoint and model intact,
and the same command resumes once space is freed. Needs root to mount a small tmpfs (CI runs
as root); skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from xasr.models.build import load_model_dir


def mount_tmpfs(path, *options: str):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=24m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "ro"
    mount_tmpfs(folder, "size=1m", "ro")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk) -> object:
    """Write a file until the disk is full; returns its path."""
    filler = disk / "filler"
    block = b"\0" * (1 << 16)
    with filler.open("wb") as out:
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass
    return filler


def train_cli(xasr, corpus, run, steps: int, env):
    args = [xasr, "train", "--train", str(corpus.en_train), "--valid", str(corpus.en_dev)]
    args += ["--out", str(run), "--size", "tiny", "--no-progress", "--workers", "0"]
    args += ["--accelerator", "cpu", "--max-steps", str(steps), "--val-every", "2"]
    args += ["--warmup-steps", "2", "--batch-seconds", "30"]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_full_disk_keeps_the_last_checkpoint_and_resumes(xasr, corpus, small_disk, subprocess_env):
    run = small_disk / "run"
    first = train_cli(xasr, corpus, run, 4, subprocess_env)
    assert first.returncode == 0, first.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)
    assert before["global_step"] == 4

    filler = fill(small_disk)
    full = train_cli(xasr, corpus, run, 8, subprocess_env)
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("xasr train: error: ")
    assert f"no space left on the device while writing {run}/" in errors[0]
    assert "run the same command" in errors[0]
    # nothing torn, nothing left behind: the step-4 checkpoint and the model still load
    assert torch.load(last, weights_only=True)["global_step"] == 4
    load_model_dir(run / "model")
    assert not list(run.rglob("*.tmp"))

    filler.unlink()
    resumed = train_cli(xasr, corpus, run, 8, subprocess_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    assert json.loads((run / "result.json").read_text())["steps"] == 8


def test_read_only_output_folder_is_one_line_before_any_work(
    xasr, corpus, read_only, subprocess_env
):
    result = train_cli(xasr, corpus, read_only / "run", 4, subprocess_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"xasr train: error: --out {read_only / 'run'}: cannot write {read_only}: "
        "the file system is read-only; choose another folder"
    )


def test_checkpoint_and_model_writes_on_a_full_disk(small_disk, en_model):
    """The writers themselves: on a full disk each raises one DiskError naming its file, and
    the previous checkpoint and model directory are left whole, with no temporary file."""
    from xasr.io import DiskError
    from xasr.models.build import save_model_dir
    from xasr.train.checkpoint import AtomicCheckpointIO

    model, cfg, vocab = load_model_dir(en_model)
    target = small_disk / "model"
    save_model_dir(target, model, cfg, vocab, {"step": 1})
    ckpt = small_disk / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.zeros(1000)}, ckpt)

    fill(small_disk)
    with pytest.raises(DiskError, match=f"no space left on the device while writing {ckpt}"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.ones(10**6)}, ckpt)
    with pytest.raises(DiskError, match=f"while writing {target}/model.safetensors"):
        save_model_dir(target, model, cfg, vocab, {"step": 2})
    assert torch.load(ckpt, weights_only=True)["global_step"] == 1
    assert json.loads((target / "config.json").read_text())["step"] == 1
    load_model_dir(target)
    assert not [p for p in small_disk.rglob("*") if ".tmp" in p.name]
