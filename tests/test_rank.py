"""`xasr rank-sources` (xasr.experiments.rank): short transfers from several sources, ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xasr.cli import main
from xasr.config import MODEL_SIZES
from xasr.data.vocab import CharVocab
from xasr.errors import XasrError
from xasr.experiments import rank
from xasr.experiments.rank import curve_slope, rank_rows, rank_sources, run_names
from xasr.models.build import build_model, save_model_dir

STEPS = 4
TINY = MODEL_SIZES["tiny"]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """A second source: an untrained tiny model with a German alphabet."""
    vocab = CharVocab.from_texts(["grüße aus köln", "die straße ist nass", "öl ist teuer"])
    torch.manual_seed(1)
    model = build_model(TINY, len(vocab))
    return save_model_dir(tmp_path_factory.mktemp("random") / "model", model, TINY, vocab)


@pytest.fixture(scope="module")
def ranked(corpus, en_model, random_model, make_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("rank")
    sources = [str(en_model), str(random_model)]
    rows = rank_sources(
        out, corpus.de_train, corpus.de_dev, sources, make_cfg(), steps=STEPS, progress=False
    )
    return out, sources, rows


def test_curve_slope_least_squares_over_the_last_half():
    points = [(50, 0.5), (100, 0.4), (150, 0.3), (200, 0.25), (250, 0.2), (300, 0.15)]
    assert curve_slope(points) == pytest.approx(-0.1)  # per 100 steps, from 200..300
    assert curve_slope([(10, 0.5), (20, 0.3), (30, 0.2)]) == pytest.approx(-1.0)  # last 2
    assert curve_slope([(10, 0.5)]) is None


def test_rule_best_cer_then_slope_within_a_near_tie():
    def row(source, best, slope):
        return {"source": source, "dev_cer": best, "best_dev_cer": best, "slope": slope, "steps": 9}

    rows = rank_rows(
        [
            row("flat", 0.200, -0.01),
            row("steep", 0.203, -0.05),  # within 0.5 points of "flat": the steeper goes first
            row("far", 0.210, -0.50),  # 1 point behind "flat": the slope does not lift it
            row("best", 0.150, None),
        ]
    )
    assert [r["source"] for r in rows] == ["best", "steep", "flat", "far"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == ["source", "dev_cer", "best_dev_cer", "slope", "steps", "rank"]


def test_run_names_are_per_source_and_distinct():
    names = run_names(["en-small", "runs/a/model", "runs_a_model", "/"])
    assert names["en-small"] == "en-small"
    assert names["runs_a_model"] == "runs_a_model"
    assert names["runs/a/model"].startswith("runs_a_model-")
    assert len(set(names.values())) == 4
    assert run_names(["runs/a/model"]) == {"runs/a/model": names["runs/a/model"]}


def test_rank_sources_trains_each_and_ranks(ranked):
    out, sources, rows = ranked
    assert sorted(r["source"] for r in rows) == sorted(sources)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["best_dev_cer"] <= rows[1]["best_dev_cer"] + rank.NEAR_TIE
    for r in rows:
        assert r["steps"] == STEPS
        assert 0 <= r["best_dev_cer"] <= r["dev_cer"]
        assert r["slope"] is not None
    assert json.loads((out / "ranking.json").read_text()) == rows
    table = (out / "ranking.md").read_text()
    assert "| rank | source |" in table and sources[0] in table and sources[1] in table
    assert (out / "ranking.png").stat().st_size > 0
    names = run_names(sources)
    for source in sources:
        run = out / names[source]
        assert json.loads((run / "probe.json").read_text())["steps"] == STEPS
        assert json.loads((run / "transfer.json").read_text())["source"] == source
        assert (run / "metrics.csv").is_file()


def test_finished_candidates_are_not_retrained(ranked, corpus, make_cfg, monkeypatch):
    out, sources, rows = ranked

    def no_training(*args, **kwargs):
        raise AssertionError("a finished candidate was trained again")

    monkeypatch.setattr(rank, "transfer", no_training)
    again = rank_sources(
        out, corpus.de_train, corpus.de_dev, sources, make_cfg(), steps=STEPS, progress=False
    )
    assert again == rows


def test_other_settings_are_refused(ranked, corpus, make_cfg):
    out, sources, _ = ranked
    with pytest.raises(XasrError, match="other settings.*train_config"):
        rank_sources(out, corpus.de_train, corpus.de_dev, sources, make_cfg(), steps=STEPS + 2)


def test_cli(corpus, random_model, tmp_path, capsys):
    args = ["rank-sources", "--train", str(corpus.de_train), "--valid", str(corpus.de_dev)]
    args += ["--from", str(random_model), "--steps", "3", "--out", str(tmp_path / "r")]
    args += ["--accelerator", "cpu", "--workers", "0", "--batch-seconds", "30", "--no-progress"]
    assert main(args) == 0
    assert "| 1 | " + str(random_model) in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "ranking.json").read_text())[0]["steps"] == 3


def test_cli_unknown_source_is_a_one_line_error(corpus, tmp_path, capsys):
    args = ["rank-sources", "--train", str(corpus.de_train), "--valid", str(corpus.de_dev)]
    args += ["--from", "en-small", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("xasr rank-sources: error: no model directory")
    assert not (tmp_path / "r").exists()
