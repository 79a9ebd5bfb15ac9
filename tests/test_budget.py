"""Training budgets: steps, audio seconds and forward-backward passes counted and enforced, and
no early stopping when patience is None."""

from __future__ import annotations

import json

import torch

from tests.conftest import TINY
from xasr.train.budget import Work, step_work
from xasr.train.loop import train


def _batch(seconds: list[float], sources: list[int]) -> dict:
    return {
        "audio_lengths": torch.tensor([int(s * 16000) for s in seconds]),
        "sources": sources,
    }


def test_a_plain_step_is_one_pass_and_counts_the_first_sources_audio_as_target():
    assert step_work(_batch([1.0, 2.0, 3.0], [0, 1, 0])) == (1, {0: 4.0, 1: 2.0})


def test_a_meta_step_is_two_passes_per_task():
    batch = {
        "supports": [_batch([1.0], [0]), _batch([2.0], [1]), _batch([3.0], [2])],
        "query": _batch([0.5, 0.5], [0, 0]),
    }
    passes, by_source = step_work(batch)
    assert passes == 6  # a support and a query pass for each of 3 tasks
    assert by_source == {0: 2.0, 1: 2.0, 2: 3.0}


def test_work_scales_with_the_world_size():
    work = Work()
    work.add(2, {0: 4.0, 1: 6.0}, scale=2)
    work.add(1, {2: 1.0})
    assert (work.steps, work.passes, work.audio_seconds, work.target_audio_seconds) == (
        2, 5, 21.0, 8.0,
    )  # fmt: skip
    assert work.to_json()["source_audio_seconds"] == [8.0, 12.0, 1.0]


def test_no_early_stopping_spends_the_whole_step_budget(corpus, tmp_path, make_cfg):
    # a patience of 0 would stop at the second validation; None never stops early
    cfg = make_cfg(max_steps=8, val_every=2, patience=None)
    result = train(tmp_path / "run", corpus.en_train, corpus.en_dev, cfg, TINY, progress=False)
    assert result.steps == 8 and result.stopped_by == "max steps"
    assert result.work["steps"] == 8 and result.work["passes"] == 8
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["work"] == result.work
    assert saved["work"]["audio_seconds"] == saved["work"]["target_audio_seconds"] > 0


def test_an_audio_seconds_budget_ends_the_run_once_spent(corpus, tmp_path, make_cfg):
    cfg = make_cfg(max_steps=50, val_every=5, patience=None, max_audio_seconds=20.0)
    result = train(tmp_path / "run", corpus.en_train, corpus.en_dev, cfg, TINY, progress=False)
    assert result.stopped_by == "audio seconds budget"
    assert 20.0 <= result.work["audio_seconds"] < 20.0 + cfg.max_batch_seconds
    assert result.steps < 50


def test_a_passes_budget_ends_the_run(corpus, tmp_path, make_cfg):
    cfg = make_cfg(max_steps=50, val_every=5, patience=None, max_passes=3)
    result = train(tmp_path / "run", corpus.en_train, corpus.en_dev, cfg, TINY, progress=False)
    assert result.stopped_by == "passes budget" and result.work["passes"] == 3
