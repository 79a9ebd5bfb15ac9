"""Training: resume after kill -9, DDP on CPU, the learning-rate schedule, the merged curve."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from xasr.train.curve import read_curve, validation_points, write_curve
from xasr.train.module import _delayed, lr_factor


def train_command(xasr: str, corpus, run: Path, *extra: str) -> list[str]:
    return [
        xasr,
        "train",
        "--train",
        str(corpus.en_train),
        "--valid",
        str(corpus.en_dev),
        "--out",
        str(run),
        "--size",
        "tiny",
        "--warmup-steps",
        "5",
        "--workers",
        "0",
        "--batch-seconds",
        "20",
        "--patience",
        "1000",
        "--no-progress",
        *extra,
    ]


def run_to_end(command: list[str], env: dict, log: Path, timeout: float) -> str:
    with log.open("w") as out:
        proc = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, f"exit code {proc.returncode}; output:\n{text[-4000:]}"
    return text


def test_resume_after_kill(xasr, corpus, tmp_path, subprocess_env):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    log = tmp_path / "attempt0.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            train_command(xasr, corpus, run, "--max-steps", "400", "--val-every", "10"),
            env=subprocess_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while not last.is_file():
                if proc.poll() is not None:
                    pytest.fail(
                        f"training exited ({proc.returncode}) before a checkpoint:\n"
                        + log.read_text(errors="replace")[-4000:]
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        "no checkpoints/last.ckpt within 120 s:\n"
                        + log.read_text(errors="replace")[-4000:]
                    )
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # it was still training: killed, not finished
    assert not (run / "result.json").exists()

    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert step > 0 and step % 10 == 0  # written at a validation
    target = step + 20
    output = run_to_end(
        train_command(xasr, corpus, run, "--max-steps", str(target), "--val-every", "10"),
        subprocess_env,
        tmp_path / "attempt1.log",
        timeout=180,
    )
    assert "Restored all states from the checkpoint" in output
    assert "resuming from" in output

    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == target
    assert result["stopped_by"] == "max steps"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == target
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["attempt-0", "attempt-1"]

    with (run / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps)
    assert any(s <= step for s in steps) and any(s > step for s in steps)  # both attempts
    # each validation appears once, at the step it ran after: the killed attempt's rows past
    # the resume point are gone
    val_steps = [int(row["step"]) for row in rows if row["val_cer"]]
    assert val_steps == list(range(10, target + 1, 10))
    for row in rows:
        if row["val_cer"]:
            assert 0.0 <= float(row["val_cer"]) <= 1.5


def test_ddp_on_cpu(xasr, corpus, tmp_path, subprocess_env):
    run = tmp_path / "run"
    command = train_command(
        xasr,
        corpus,
        run,
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--max-steps",
        "10",
        "--val-every",
        "5",
    )
    # two training sources in batches of one language, two dev sets: the per-language counts
    # are reduced across ranks, and every rank must train on the same language at a step
    command[command.index("--valid") + 1] = str(corpus.de_dev)
    command += ["--valid", str(corpus.en_dev), "--train", str(corpus.de_train)]
    command += ["--source-batches", "language", "--monitor", "macro"]
    output = run_to_end(command, subprocess_env, tmp_path / "ddp.log", timeout=300)
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    assert json.loads((run / "result.json").read_text())["steps"] == 10
    assert "Traceback" not in output
    with (run / "metrics.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["val_cer"]]
    assert [int(r["step"]) for r in rows] == [5, 10]
    assert all(0 <= float(r["val_cer_en"]) <= 1.5 and 0 <= float(r["val_cer_de"]) for r in rows)
    for r in rows:
        macro = (float(r["val_cer_en"]) + float(r["val_cer_de"])) / 2
        assert float(r["val_cer_macro"]) == pytest.approx(macro)
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["monitor"] == "val_cer_macro"
    assert [s["share"] for s in saved["sources"]] == pytest.approx([0.5, 0.5], abs=0.2)


def test_last_checkpoint_follows_every_validation(corpus, tmp_path, make_cfg):
    """last.ckpt is the resume point even when dev CER does not improve (lr 1e-12: it cannot)."""
    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    run = tmp_path / "run"
    result = train(
        run,
        corpus.en_train,
        corpus.en_dev,
        make_cfg(lr=1e-12, max_steps=20, val_every=5),
        MODEL_SIZES["tiny"],
        progress=False,
    )
    assert result.best_step == 5  # the first validation; later ones only tie
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 20
    assert best["global_step"] == 5
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_the_last_step_is_validated_when_max_steps_ends_between_validations(
    corpus, tmp_path, make_cfg
):
    """max_steps 12, validation every 5: steps 5, 10 and 12 are validated, 12 is checkpointed."""
    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    run = tmp_path / "run"
    result = train(
        run,
        corpus.en_train,
        corpus.en_dev,
        make_cfg(max_steps=12, val_every=5),
        MODEL_SIZES["tiny"],
        progress=False,
    )
    assert result.steps == 12 and result.stopped_by == "max steps"
    steps = [step for step, _ in validation_points(read_curve(run))]
    assert len(steps) == 3 and steps[2] - steps[1] == 2  # after steps 5, 10 and 12
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12


def test_a_one_utterance_training_set_trains(corpus, tmp_path, make_cfg):
    """lhotse's bucketing needs two cuts; one utterance gets plain batches instead of a crash."""
    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    one = tmp_path / "one.jsonl"
    first = json.loads(Path(corpus.en_train).read_text(encoding="utf-8").splitlines()[0])
    first["audio_filepath"] = str(Path(corpus.en_train).parent / first["audio_filepath"])
    one.write_text(json.dumps(first) + "\n", encoding="utf-8")
    result = train(
        tmp_path / "run",
        one,
        one,
        make_cfg(max_steps=3, val_every=2),
        MODEL_SIZES["tiny"],
        progress=False,
    )
    assert result.steps == 3


# --- learning-rate schedule -----------------------------------------------------------------


def test_lr_factor_warmup_then_cosine():
    warmup, total = 10, 110
    factors = [lr_factor(s, warmup, total) for s in range(total + 20)]
    # linear warm-up to 1
    assert factors[0] == pytest.approx(0.1)
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    # cosine decay: monotone, half-way at the midpoint, 10% at the end and after it
    decay = factors[warmup : total + 1]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert factors[warmup + 50] == pytest.approx(0.1 + 0.9 * 0.5)
    assert factors[total] == pytest.approx(0.1)
    assert factors[total + 19] == pytest.approx(0.1)
    assert min(factors) == pytest.approx(0.1)
    assert max(factors) == pytest.approx(1.0)
    assert factors[warmup + 25] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))


def test_lr_factor_without_warmup_and_short_runs():
    assert lr_factor(0, 0, 100) == pytest.approx(1.0)
    assert lr_factor(5, 10, 5) == pytest.approx(0.6)  # inside warm-up
    assert lr_factor(10, 10, 10) == pytest.approx(1.0)  # total == warmup: no division by zero


def test_delayed_schedule_is_zero_until_start():
    def schedule(step):
        return lr_factor(step, 5, 100)

    assert [_delayed(schedule, 3, s) for s in range(3)] == [0.0, 0.0, 0.0]
    assert _delayed(schedule, 3, 3) == schedule(3)
    assert _delayed(schedule, 0, 0) == schedule(0)


# --- learning curve merged across attempts --------------------------------------------------


def write_attempt(run: Path, k: int, rows: list[dict]) -> None:
    directory = run / "logs" / f"attempt-{k}"
    directory.mkdir(parents=True)
    keys = ["epoch", "step", "train_loss", "val_cer", "val_wer"]
    with (directory / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def test_read_curve_merges_attempts(tmp_path):
    run = tmp_path / "run"
    # attempt 0 got to step 39, but its last checkpoint was at step 20: rows 29, 39 were lost
    write_attempt(
        run,
        0,
        [
            {"epoch": 0, "step": 9, "train_loss": 3.0},
            {"epoch": 0, "step": 19, "train_loss": 2.5},
            {"epoch": 0, "step": 19, "val_cer": 0.9, "val_wer": 1.0},
            {"epoch": 1, "step": 29, "train_loss": 2.4},
            {"epoch": 1, "step": 39, "val_cer": 0.85, "val_wer": 0.99},
        ],
    )
    write_attempt(
        run,
        1,
        [
            {"epoch": 1, "step": 29, "train_loss": 2.2},
            {"epoch": 1, "step": 39, "val_cer": 0.7, "val_wer": 0.95},
        ],
    )
    # attempt 10 sorts after attempt 2 numerically (not as text)
    write_attempt(run, 2, [{"epoch": 2, "step": 49, "train_loss": 2.0}])
    for k in range(3, 10):
        (run / "logs" / f"attempt-{k}").mkdir()
    write_attempt(run, 10, [{"epoch": 3, "step": 59, "val_cer": 0.5, "val_wer": 0.8}])
    rows = read_curve(run)
    assert [r["step"] for r in rows] == [9, 19, 19, 29, 39, 49, 59]
    assert {r["step"]: r["train_loss"] for r in rows if "train_loss" in r} == {
        9: 3.0,
        19: 2.5,
        29: 2.2,
        49: 2.0,
    }
    assert validation_points(rows) == [(19, 0.9), (39, 0.7), (59, 0.5)]
    assert all(isinstance(r["step"], int) for r in rows)
    assert all("epoch" in r for r in rows)

    path = write_curve(run)
    with path.open(newline="") as handle:
        merged = list(csv.DictReader(handle))
    assert list(merged[0]) == ["step", "train_loss", "val_cer", "val_wer"]
    assert [int(r["step"]) for r in merged] == [9, 19, 19, 29, 39, 49, 59]
    assert [float(r["val_cer"]) for r in merged if r["val_cer"]] == [0.9, 0.7, 0.5]


def test_read_curve_of_a_fresh_run(tmp_path):
    assert read_curve(tmp_path) == []
    write_attempt(tmp_path, 0, [])
    assert read_curve(tmp_path) == []


def test_several_sources_train_end_to_end(corpus, tmp_path, make_cfg):
    """Two weighted sources and two dev sets; early stopping and the best model follow the
    monitored language; a monitor the dev data lacks is a one-line error before training."""
    from xasr.config import MODEL_SIZES
    from xasr.data.sources import Source
    from xasr.errors import XasrError
    from xasr.train.curve import read_curve
    from xasr.train.loop import train

    sources = [Source(str(corpus.en_train), 3.0), Source(str(corpus.de_train), 1.0)]
    cfg = make_cfg(max_steps=4, val_every=2, mixing="weights", monitor="de")
    with pytest.raises(XasrError, match="'it': the dev data's languages are de, en"):
        train(
            tmp_path / "bad",
            sources,
            [corpus.en_dev, corpus.de_dev],
            make_cfg(monitor="it"),
            MODEL_SIZES["tiny"],
            progress=False,
        )
    run = tmp_path / "run"
    result = train(
        run, sources, [corpus.en_dev, corpus.de_dev], cfg, MODEL_SIZES["tiny"], progress=False
    )
    rows = [r for r in read_curve(run) if "val_cer" in r]
    assert result.best_dev_cer == pytest.approx(min(r["val_cer_de"] for r in rows))
    meta = json.loads((run / "model" / "config.json").read_text())
    assert [s["share"] for s in meta["sources"]] == [0.75, 0.25]
    assert meta["valid_manifests"] == [str(corpus.en_dev), str(corpus.de_dev)]


def test_a_resume_keeps_the_data_it_started_with(corpus, tmp_path, make_cfg):
    from xasr.config import MODEL_SIZES
    from xasr.errors import XasrError
    from xasr.train.loop import train

    run = tmp_path / "run"
    cfg = make_cfg(max_steps=2, val_every=2)
    train(run, corpus.en_train, corpus.en_dev, cfg, MODEL_SIZES["tiny"], progress=False)
    with pytest.raises(XasrError, match="started with other --train"):
        train(
            run,
            [corpus.en_train, corpus.en_dev],
            corpus.en_dev,
            make_cfg(max_steps=4, val_every=2),
            MODEL_SIZES["tiny"],
            progress=False,
        )


def test_validation_logs_each_language(corpus, tmp_path, make_cfg):
    """A dev set of two languages: val_cer_<lang> beside val_cer, each what evaluate() reports
    for that language with the same weights."""
    from xasr.config import MODEL_SIZES
    from xasr.decode.evaluate import evaluate
    from xasr.train.curve import read_curve
    from xasr.train.loop import train

    run = tmp_path / "run"
    cfg = make_cfg(max_steps=4, val_every=4)
    train(run, corpus.en_train, corpus.mixed, cfg, MODEL_SIZES["tiny"], progress=False)
    (row,) = [r for r in read_curve(run) if "val_cer" in r]
    assert {"val_cer_en", "val_cer_de", "val_wer_en", "val_wer_de"} <= row.keys()
    with (run / "metrics.csv").open() as handle:
        assert "val_cer_de" in handle.readline()
    by_language = evaluate(run / "model", corpus.mixed, progress=False)["by_language"]
    for lang in ("en", "de"):
        assert row[f"val_cer_{lang}"] == pytest.approx(by_language[lang]["cer"], abs=0.02)


# --- what a run prints ----------------------------------------------------------------------


def test_a_run_logged_to_a_file_has_one_line_per_validation_and_no_advert(
    corpus, tmp_path, make_cfg, caplog
):
    """Off a terminal (pytest's capture is not one) a run logs one line per validation, with
    the step against its budget, and no progress bar or Lightning advertisement."""
    import logging

    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    with caplog.at_level(logging.INFO):
        train(tmp_path / "run", corpus.en_train, corpus.en_dev,
              make_cfg(max_steps=12, val_every=5), MODEL_SIZES["tiny"], progress=True)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.name == "xasr.train.progress"]
    assert [line.split(":")[0] for line in lines] == ["step 5/12", "step 10/12", "step 12/12"]
    assert all("val_cer" in line and "elapsed" in line for line in lines)
    assert not any("litlogger" in r.getMessage() for r in caplog.records)


def test_the_step_bar_only_on_a_terminal():
    import io

    from xasr.train.progress import StepProgressBar, ValidationLines, progress_callbacks

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_callbacks(True, Terminal())[0], StepProgressBar)
    assert isinstance(progress_callbacks(True, io.StringIO())[0], ValidationLines)
    assert isinstance(progress_callbacks(False, Terminal())[0], ValidationLines)


def test_a_run_stuck_in_the_blank_phase_says_so_once(caplog):
    """Three validations in a row decoding under 5 % of the references' characters: one
    warning naming the steps and the likely causes; a validation above resets the count."""
    import logging
    from types import SimpleNamespace

    from xasr.train.blank import BlankPhaseWatch

    watch = BlankPhaseWatch()
    trainer = SimpleNamespace(callback_metrics={}, sanity_checking=False, is_global_zero=True)
    with caplog.at_level(logging.WARNING, logger="xasr.train.blank"):
        for step, ratio in [(50, 0.0), (100, 0.01), (150, 0.2), (200, 0.0), (250, 0.02),
                            (300, 0.04), (350, 0.0), (400, 0.0)]:  # fmt: skip
            trainer.callback_metrics = {"val_output_ratio": torch.tensor(ratio)}
            trainer.global_step = step
            watch.on_validation_end(trainer, None)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "3 validations in a row (steps 200-300)" in warnings[0]
    assert "learning rate" in warnings[0]


def test_validation_logs_how_much_the_model_writes(corpus, tmp_path, make_cfg):
    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    train(tmp_path / "run", corpus.en_train, corpus.en_dev, make_cfg(max_steps=4, val_every=2),
          MODEL_SIZES["tiny"], progress=False)  # fmt: skip
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        ratios = [row["val_output_ratio"] for row in csv.DictReader(handle)
                  if row.get("val_output_ratio")]  # fmt: skip
    assert len(ratios) == 2 and all(float(r) >= 0 for r in ratios)
