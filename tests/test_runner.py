"""`xasr experiment`: config checks, the grid, results and report, and resuming after a crash."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from xasr.cli import main
from xasr.data.manifest import Utterance, take_minutes
from xasr.errors import XasrError
from xasr.experiments import cell as cell_module
from xasr.experiments import config as config_module
from xasr.experiments import grid
from xasr.experiments import report as report_module
from xasr.experiments.kinds import grid as grid_kind
from xasr.experiments.kinds import run_experiment
from xasr.transfer.finetune import TransferOptions

TINY_RECIPE = {
    "val_every": 3,
    "warmup_steps": 2,
    "num_workers": 0,
    "max_batch_seconds": 30.0,
    "accelerator": "cpu",
}
TINY_BUDGET = {"steps": 6}
SIZES = [0.03, 0.07]  # 1.8 s: the first two utterances (~1.1 s each); 4.2 s: four


def write_config(path: Path, **config) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def de_target(corpus, tmp_path_factory) -> dict:
    """The German corpus as a real-manifest target: train (6), dev (3), test (3 others)."""
    folder = tmp_path_factory.mktemp("de_test")
    test = folder / "de_test.jsonl"
    rows = [{**r, "audio_filepath": str(corpus.root / r["audio_filepath"])} for r in corpus.de_rows]
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[3:]))
    return {"train": str(corpus.de_train), "dev": str(corpus.de_dev), "test": str(test)}


def grid_config(tmp_path: Path, en_model: Path, de_target: dict, **changes) -> Path:
    config = {
        "name": "tiny",
        "out": str(tmp_path / "out"),
        "bases": [str(en_model)],
        "targets": {"de": de_target},
        "train_minutes": SIZES,
        "seeds": [0],
        "strategies": {"transfer": {}, "scratch": {"scratch": True}},
        "recipe": TINY_RECIPE,
        "budget": TINY_BUDGET,
        "primary": {"arm": "transfer", "against": "scratch"},
        "threshold_cer": 1.0,
        **changes,
    }
    return write_config(tmp_path / "tiny.yaml", **config)


# --------------------------------------------------------------------------- the prefix rule


def utterances(durations: list[float]) -> list[Utterance]:
    return [
        Utterance(audio_filepath=Path(f"/a/{i}.wav"), text="a", duration=d, id=str(i))
        for i, d in enumerate(durations)
    ]


def test_take_minutes_is_the_shortest_prefix_reaching_the_minutes():
    utts = utterances([30.0, 30.0, 30.0, 30.0])
    assert [u.id for u in take_minutes(utts, 1.0)] == ["0", "1"]  # exactly 60 s reached
    assert [u.id for u in take_minutes(utts, 1.01)] == ["0", "1", "2"]
    assert [u.id for u in take_minutes(utts, 0.1)] == ["0"]
    assert len(take_minutes(utts, 10)) == 4  # all of it when the total is shorter
    # a prefix of a larger prefix is the smaller prefix (what synth targets rely on)
    assert take_minutes(take_minutes(utts, 1.5), 1.0) == take_minutes(utts, 1.0)


def test_take_minutes_reads_missing_durations_from_the_audio(corpus):
    from xasr.data.manifest import read_manifest

    utts = read_manifest(corpus.de_train)
    bare = [Utterance(u.audio_filepath, u.text, None, id=u.id) for u in utts]
    kept = [u.id for u in take_minutes(utts, 0.03)]
    assert 1 < len(kept) < len(utts)
    assert [u.id for u in take_minutes(bare, 0.03)] == kept


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"strategies": {"odd": {"wings": 2}}}, "strategy 'odd'): unknown key(s) wings"),
        ({"targets": {"x": {"lang": "en", "train": "a.jsonl"}}}, "targets.x: unknown key(s) train"),
        ({"targets": {"x": {"train": "a.jsonl"}}}, "missing dev, test"),
        ({"train_minutes": ["2"]}, "train_minutes: expected a list of positive numbers"),
        ({"recipe": {"lr": "1e-3"}}, "recipe.lr: expected a number"),
        ({"recipe": {"seed": 3}}, "seed is set per cell"),
        ({"bases": [{"model": "en-small", "recipe": "r.yaml"}]}, "exactly one of model"),
        ({"targets": {"a b": {"lang": "en"}}}, "not a usable name"),
        ({"budget": None}, "budget must name one unit"),
        ({"budget": {"minutes": 5}}, "budget: unknown unit 'minutes'"),
        ({"budget": {"steps": 1.5}}, "budget.steps must be a positive integer"),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience must be a positive"),
        ({"recipe": {"max_steps": 9}}, "recipe: max_steps cannot be set here"),
        ({"recipe": {"max_minutes": 9}}, "recipe: max_minutes cannot be set here"),
        ({"strategies": {"a": {"val_every": 7}}}, "(strategy 'a'): val_every cannot be set"),
        ({"primary": {"arm": "transfer", "against": "nope"}}, "primary.against must be"),
        ({"select": {"fam": ["transfer"]}}, "select.fam: list two or more"),
        (
            {"primary": {"arm": "transfer", "against": "scratch", "test": "source"}},
            "needs a source_data",
        ),
        (
            {"primary": [{"arm": "transfer", "against": "scratch", "test": "dev"}]},
            "primary[0].test must be",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, en_model, change, message):
    config = {
        "name": "bad",
        "bases": [str(en_model)],
        "targets": {"de": {"lang": "de"}},
        "train_minutes": [1],
        "budget": {"steps": 10},
        **change,
    }
    with pytest.raises(XasrError) as err:
        config_module.load_experiment(write_config(tmp_path / "bad.yaml", **config))
    assert message in str(err.value)


def test_a_recipe_base_carries_its_training_cap(tmp_path, en_model):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "cmn-small.yaml"
    config = {
        "name": "capped",
        "bases": [{"recipe": str(recipe), "max_minutes": 15, "train": {"warmup_steps": 50}}],
        "targets": {"yue": {"lang": "yue"}},
        "train_minutes": [1],
        "budget": {"steps": 10},
    }
    exp = config_module.load_experiment(write_config(tmp_path / "capped.yaml", **config))
    assert exp.bases[0].name == "cmn-small" and exp.bases[0].max_minutes == 15
    assert dict(exp.bases[0].train) == {"warmup_steps": 50}
    config["bases"] = [{"recipe": str(recipe), "train": {"warmup": 50}}]
    with pytest.raises(XasrError, match="warmup"):
        config_module.load_experiment(write_config(tmp_path / "capped.yaml", **config))
    config["bases"] = [{"recipe": str(recipe), "max_minutes": "soon"}]
    with pytest.raises(XasrError, match="max_minutes must be a number"):
        config_module.load_experiment(write_config(tmp_path / "capped.yaml", **config))


def test_replay_without_a_source_is_an_error(tmp_path, en_model):
    if "replay_fraction" not in {f for f in TransferOptions.__dataclass_fields__}:
        pytest.skip("TransferOptions has no replay_fraction yet")
    path = write_config(
        tmp_path / "replay.yaml",
        name="replay",
        bases=[str(en_model)],
        targets={"de": {"lang": "de"}},
        train_minutes=[1],
        budget={"steps": 10},
        strategies={"replay": {"replay_fraction": 0.2}},
    )
    with pytest.raises(XasrError, match=r"strategy .replay.\): replay_manifest is needed"):
        config_module.load_experiment(path)


def test_cli_config_error_is_one_line(tmp_path, capsys):
    path = write_config(tmp_path / "bad.yaml", name="bad", targets={}, train_minutes=[1], x=1)
    assert main(["experiment", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xasr experiment: error:")
    assert "unknown key(s) x" in err[0]


def test_scratch_runs_once_per_architecture(tmp_path, en_model, de_target, capsys):
    other = tmp_path / "other" / "model"
    shutil.copytree(en_model, other)
    path = grid_config(
        tmp_path, en_model, de_target, bases=[str(en_model), {"model": str(other)}], seeds=[0, 1]
    )
    exp = config_module.load_experiment(path)
    assert [b.name for b in exp.bases] == [en_model.parent.name, "other"]
    cells = grid.plan_cells(exp)
    scratch = [c for c in cells if c.strategy.scratch]
    assert len(cells) == 2 * 2 * 2 + len(scratch)  # 2 sizes x 2 seeds x 2 bases of transfer
    assert len(scratch) == 2 * 2  # not once per base
    assert {c.base for c in scratch} == {"arch-tiny"}
    assert all(c.bases == (en_model.parent.name, "other") for c in scratch)
    listing = run_experiment(path, dry_run=True)
    assert listing["todo"] == len(cells) and listing["done"] == 0
    assert "de/arch-tiny/0.03min/seed1/scratch" in capsys.readouterr().out


# --------------------------------------------------------------------------- the grid


class Spy:
    """Counts calls to a function the cells call (``transfer``, ``evaluate``); ``fail_at``
    raises on that call (a crash)."""

    def __init__(self, monkeypatch, name: str, fail_at: int | None = None):
        self.calls: list = []
        self.real = getattr(cell_module, name)
        self.fail_at = fail_at
        monkeypatch.setattr(cell_module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls.append(args[0])
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("killed")
        return self.real(*args, **kwargs)


def test_grid_results_report_and_resume(tmp_path, en_model, de_target, monkeypatch, capsys):
    path = grid_config(tmp_path, en_model, de_target)
    out = tmp_path / "out"
    cells = [c.id for c in grid.plan_cells(config_module.load_experiment(path))]
    assert len(cells) == 4

    # a crash while the third cell starts training: the first two are finished
    crash = Spy(monkeypatch, "transfer", fail_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(path, progress=False)
    assert len(crash.calls) == 3
    done = sorted(out.glob("cells/**/cell.json"))
    assert len(done) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in done}

    # the rerun trains only the two missing cells
    transfer = Spy(monkeypatch, "transfer")
    assert main(["experiment", str(path), "--no-progress"]) == 0
    assert len(transfer.calls) == 2
    assert {Path(p) for p in transfer.calls}.isdisjoint({p.parent for p in done})
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in done)  # re-read, not rewritten
    printed = capsys.readouterr().out
    assert "report: " in printed and "de: test CER (WER) by training minutes" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["missing"] == [] and results["cells"] == 4
    rows = results["rows"]
    assert sorted((r["strategy"], r["minutes"]) for r in rows) == sorted(
        (s, m) for s in ("transfer", "scratch") for m in SIZES
    )
    for row in rows:
        assert row["steps"] == 6 and row["stopped_by"] == "max steps"
        assert 0 <= row["test_cer"] and row["test_wer"] >= 0
        if row["strategy"] == "scratch":
            assert row["base"] == "arch-tiny" and row["bases"] == en_model.parent.name
        assert (out / row["cell"] / "cell.json").is_file()
    transfer_row = next(r for r in rows if r["strategy"] == "transfer")
    assert transfer_row["base"] == en_model.parent.name
    with (out / "results.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == 4 and "steps_to_threshold" in csv_rows[0]
    report = (out / "report.md").read_text()
    assert "## de" in report and "| transfer |" in report and "| scratch |" in report
    assert "## Budgets: what each arm spent" in report
    assert "6 optimizer steps for every arm, scored at its best dev checkpoint" in report
    for row in rows:
        assert row["passes"] == 6 and row["audio_seconds"] >= row["target_audio_seconds"] > 0
    assert "0.03 min" in report and "0.07 min" in report
    assert (out / "plots" / "de-error-vs-minutes.png").stat().st_size > 1000
    assert (out / "plots" / "de-curves-0.07min.png").stat().st_size > 1000
    # which strategy won each size: the bootstrap over every cell's test hypotheses
    assert all((out / row["cell"] / "test.json").is_file() for row in rows)
    assert set(results["comparisons"]["de"]) == {"0.03", "0.07"}
    for compared in results["comparisons"]["de"].values():
        winner = compared["winner"]
        assert winner["best"] in ("transfer", "scratch") and winner["chosen_on"] == "dev"
        (other,) = winner["against"].values()
        assert other["low"] <= other["difference"] <= other["high"] and other["seeds"] == [1, 1]
    assert "### Which strategy won (chosen on dev" in report and "**chosen on dev**" in report
    for compared in results["comparisons"]["de"].values():  # one verdict per base
        ((verdict,),) = compared["primary"].values()
        assert verdict["verdict"] in ("held", "reversed", "no difference")
    assert (
        f"At 0.07 min, from {en_model.parent.name}, `transfer` against `scratch` on the" in report
    )
    assert "At 0.07 min, **" in printed
    prefix = out / "data" / "de" / "train-0.03min.jsonl"
    assert len(prefix.read_text().splitlines()) == 2  # the shortest prefix reaching 1.8 s

    # a cell that trained but was not evaluated is evaluated, not trained again
    evaluated = Spy(monkeypatch, "evaluate")
    transfer = Spy(monkeypatch, "transfer")
    (out / rows[0]["cell"] / "cell.json").unlink()
    assert main(["experiment", str(path), "--no-progress"]) == 0
    assert transfer.calls == [] and len(evaluated.calls) == 1

    # a cell killed mid-training (last.ckpt, no result.json) resumes through transfer()
    killed = out / rows[1]["cell"]
    (killed / "cell.json").unlink()
    (killed / "result.json").unlink()
    capsys.readouterr()
    assert main(["experiment", str(path), "--dry-run"]) == 0
    assert "resumes from checkpoints/last.ckpt" in capsys.readouterr().out
    assert main(["experiment", str(path), "--no-progress"]) == 0
    assert transfer.calls == [killed] and len(evaluated.calls) == 2
    assert (killed / "logs" / "attempt-1").is_dir()  # a second attempt, from the checkpoint
    assert json.loads((killed / "cell.json").read_text())["train"]["steps"] == 6

    # --only-report and --dry-run run nothing
    (out / "report.md").unlink()
    assert main(["experiment", str(path), "--only-report", "--no-progress"]) == 0
    assert len(transfer.calls) == 1 and len(evaluated.calls) == 2
    assert (out / "report.md").is_file()
    capsys.readouterr()
    assert main(["experiment", str(path), "--dry-run"]) == 0
    assert "(done 4, partial 0, todo 0)" in capsys.readouterr().out

    # a cell finished before cells kept test.json: --only-report says so, a run decodes it
    record = out / rows[0]["cell"] / "cell.json"
    mtime = record.stat().st_mtime_ns
    (out / rows[0]["cell"] / "test.json").unlink()
    assert main(["experiment", str(path), "--only-report", "--no-progress"]) == 0
    assert "no test hypotheses" in (out / "report.md").read_text()
    evaluated = Spy(monkeypatch, "evaluate")
    assert main(["experiment", str(path), "--no-progress"]) == 0
    assert len(evaluated.calls) == 1 and record.stat().st_mtime_ns == mtime
    assert "no test hypotheses" not in (out / "report.md").read_text()

    # a changed recipe for existing cells is an error, not a silent mix
    grid_config(tmp_path, en_model, de_target, recipe={**TINY_RECIPE, "lr": 0.5})
    assert main(["experiment", str(path), "--no-progress"]) == 2
    assert "started with other settings (recipe.lr)" in capsys.readouterr().err
    # ... or, asked for, a rerun that keeps the old runs aside
    transfer = Spy(monkeypatch, "transfer")
    assert main(["experiment", str(path), "--no-progress", "--rerun-changed"]) == 0
    assert len(transfer.calls) == 4
    assert len(list(out.glob("cells/**/*.replaced-1"))) == 4


def test_cells_train_in_parallel_workers(tmp_path, en_model, de_target):
    """--jobs 2: two worker processes share the cells through locks; every cell trains once and
    the parent writes the report."""
    path = grid_config(tmp_path, en_model, de_target)
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--no-progress", "--jobs", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["missing"] == [] and len(results["rows"]) == 4
    logs = [(out / f"worker-{i}.log").read_text() for i in range(2)]
    trained = [line for log in logs for line in log.splitlines() if line.startswith("== de/")]
    assert len(trained) == 4 and len(set(trained)) == 4  # each cell by one worker
    # again: every finished cell checked and read by one worker, none trained
    assert main(["experiment", str(path), "--no-progress", "--jobs", "2"]) == 0
    logs = [(out / f"worker-{i}.log").read_text() for i in range(2)]
    again = [line for log in logs for line in log.splitlines() if line.startswith("== de/")]
    assert again == trained
    assert all(len(list((out / row["cell"] / "logs").iterdir())) == 1 for row in results["rows"])
    assert all(len(list((out / row["cell"] / "logs").iterdir())) == 1 for row in results["rows"])


def test_report_aggregates_seeds_forgetting_and_ranking(tmp_path, en_model, de_target):
    """The report from synthetic rows: mean ± std over seeds, forgetting and ranking tables."""
    other = tmp_path / "b2" / "model"
    shutil.copytree(en_model, other)
    path = grid_config(
        tmp_path,
        en_model,
        de_target,
        bases=[{"model": str(en_model), "name": "b1"}, str(other)],
        seeds=[0, 1],
        rank_sources={"steps": 50},
    )
    exp = config_module.load_experiment(path)
    rows = []
    for cell in grid.plan_cells(exp):
        cer = 0.5 if cell.strategy.scratch else (0.2 if cell.base == "b1" else 0.3)
        row = {
            "target": cell.target,
            "base": cell.base,
            "minutes": cell.minutes,
            "seed": cell.seed,
            "strategy": cell.strategy.name,
            "test_cer": cer + 0.02 * cell.seed,
            "test_wer": 2 * cer,
            "test_mer": 2 * cer,
            "test_stretch_cer": {"de": cer, "en": cer + 0.1 * (cell.seed + 1)},
            "stopped_by": "early stopping",
            "steps_to_threshold": 100 + 50 * cell.seed,
            "scratch": cell.strategy.scratch,
            "cell": str(cell.dir.relative_to(exp.out)),
        }
        if not cell.strategy.scratch:
            row.update(
                source_cer_before=0.1,
                source_cer_after=0.4,
                source_cer_change=0.3,
                target_cer_before=0.9,
                target_cer_after=cer,
            )
        rows.append(row)
    rank = {
        "de": [
            {"base": "b2", "source": str(other), "rank": 1, "dev_cer": 0.3, "slope": -0.01},
            {"base": "b1", "source": str(en_model), "rank": 2, "dev_cer": 0.35, "slope": -0.02},
        ]
    }
    report_path, headline = report_module.write_report(exp, rows, rank, missing=[])
    report = report_path.read_text()
    assert "| b1 / transfer | 21.0 % ± 1.4 (WER 40.0 %) |" in report
    assert "| scratch |" in report  # once: both bases share the tiny architecture
    assert "| b1 / transfer | 0.03 | 10.0 % | 40.0 % | +30.0 |" in report
    assert "125 ± 35" in report
    # a code-switched target (rows with stretch CERs): MER and CER within each language
    assert "MER (CER within each language's stretches)" in report
    assert "| b1 / transfer | 40.0 % (de 20.0 %, en 35.0 %) |" in report
    assert "Spearman ρ -1.00, Kendall τ -1.00" in report
    assert "| de | b1 / transfer | 0.03 | 2 |" in report  # the budget table: two seeds
    assert "b2 / transfer" in headline
    skipped, _ = report_module.write_report(exp, rows, None, missing=["x"])
    assert "Skipped: `xasr.experiments.rank.rank_sources` is not available." in skipped.read_text()


def _scored_rows(folder: Path, refs: list[str], label: str, hyps: list[str], seeds, dev: float,
                 ids: str = "u") -> list[dict]:  # fmt: skip
    """Rows of one arm with hand-written test.json files (the same hypotheses every seed)."""
    made = []
    for seed in seeds:
        cell = f"cells/{label}{ids}/seed{seed}"
        (folder / cell).mkdir(parents=True, exist_ok=True)
        pairs = [
            {"id": f"{ids}{i}", "ref": r, "hyp": h} for i, (r, h) in enumerate(zip(refs, hyps))
        ]
        (folder / cell / "test.json").write_text(json.dumps({"hypotheses": pairs}))
        made.append({"seed": seed, "cell": cell, "best_dev_cer": dev})
    return made


REFS = [f"una frase de prueba numero {i}" for i in range(40)]
HYPS = {
    "good": REFS,
    "bad": ["xx" for _ in REFS],
    "close": [REFS[0][:-1], *REFS[1:]],
    "noisy": [r if i % 3 else r[:-4] for i, r in enumerate(REFS)],
}


def test_the_winner_is_chosen_on_dev_and_told_from_chance(tmp_path):
    """compare_with_best on hand-written test.json files: the arm best on dev is the one
    compared, a clear loser is outside chance, one letter apart is within it; no file or other
    utterances: no comparison, and why."""
    from xasr.experiments.compare import compare_with_best

    def rows(label, seeds, dev, ids="u"):
        return _scored_rows(tmp_path, REFS, label, HYPS[label], seeds, dev, ids)

    by_label = {"bad": rows("bad", [0, 1], 0.9), "good": rows("good", [0, 1, 2], 0.1)}
    by_label["close"] = rows("close", [0, 1], 0.2)
    compared = compare_with_best(tmp_path, by_label)
    assert compared["best"] == "good" and compared["chosen_on"] == "dev"
    assert compared["rates"]["good"] == 0 and compared["rates"]["bad"] > 0.9
    bad, close = compared["against"]["bad"], compared["against"]["close"]
    assert bad["verdict"] == "a" or bad["verdict"] == "b"
    assert bad["verdict"] == "b" and bad["low"] > 0.5  # the best (b) is better, clearly
    assert close["verdict"] == "tie" and close["low"] <= 0 <= close["high"]
    assert bad["seeds"] == [2, 3]

    other = compare_with_best(
        tmp_path, {"g": rows("good", [0], 0.1), "b": rows("bad", [0], 0.5, "v")}
    )
    assert "different utterances" in other["against"]["b"]["error"]
    (tmp_path / "cells/closeu/seed1/test.json").unlink()
    assert (
        "no test hypotheses" in compare_with_best(tmp_path, by_label)["against"]["close"]["missing"]
    )


def test_a_setting_better_on_dev_is_chosen_even_when_worse_on_test(tmp_path):
    """Selection is on dev: the family member with the lower dev CER is chosen although its
    test CER is the higher one, and the primary verdict compares that member."""
    from xasr.experiments.compare import compare_with_best, primary_verdict, select_on_dev

    worse_on_test = _scored_rows(tmp_path, REFS, "bad", HYPS["bad"], [0, 1], dev=0.10)
    better_on_test = _scored_rows(tmp_path, REFS, "good", HYPS["good"], [0, 1], dev=0.12)
    family = {"lr-0.1": worse_on_test, "lr-0.01": better_on_test}
    assert select_on_dev(family) == "lr-0.1"
    assert compare_with_best(tmp_path, family)["best"] == "lr-0.1"
    control = _scored_rows(tmp_path, REFS, "noisy", HYPS["noisy"], [0, 1], dev=0.3)
    verdict = primary_verdict(tmp_path, family[select_on_dev(family)], control)
    assert verdict["verdict"] == "reversed"  # the chosen member is worse than the control


def test_seeds_widen_the_interval_where_they_disagree(tmp_path):
    """The hierarchical bootstrap draws seeds too: two arms equal on average whose seeds
    disagree are no difference, although a bootstrap of utterances alone over one seed of each
    would call it."""
    from xasr.decode.significance import hierarchical_bootstrap

    rng = np.random.default_rng(0)
    length = np.full((2, 200), 20.0)
    a = np.stack([np.stack([rng.binomial(20, p, 200), length[0]], -1) for p in (0.05, 0.35)])
    b = np.stack([np.stack([rng.binomial(20, 0.2, 200), length[0]], -1) for _ in range(2)])
    one_seed = hierarchical_bootstrap(a[:1], b[:1])
    assert one_seed["verdict"] == "a"  # seed 0 of a alone looks much better
    both = hierarchical_bootstrap(a, b)
    assert both["verdict"] == "tie" and both["low"] < 0 < both["high"]
    same = hierarchical_bootstrap(np.repeat(a[:1], 3, 0), b[:1])  # copies of one seed
    assert same["verdict"] == "a"


def test_forgetting_is_recorded_when_source_data_is_given(
    tmp_path, en_model, de_target, corpus, monkeypatch
):
    module = pytest.importorskip("xasr.transfer.forgetting")
    if not hasattr(module, "evaluate_before_after"):
        pytest.skip("xasr.transfer.forgetting.evaluate_before_after does not exist yet")
    path = grid_config(
        tmp_path,
        en_model,
        de_target,
        train_minutes=[0.03],
        strategies={"transfer": {}, "replay": {"replay_fraction": 0.5}},
        primary={"arm": "replay", "against": "transfer", "test": "source"},
        source_data={"train": str(corpus.en_train), "test": str(corpus.en_dev)},
    )
    results = run_experiment(path, progress=False)
    # the forgetting verdict: the source test's hypotheses of each cell, bootstrapped
    ((verdict,),) = results["comparisons"]["de"]["0.03"]["primary"].values()
    assert verdict["test"] == "source" and verdict["verdict"] in (
        "held",
        "reversed",
        "no difference",
    )
    assert all(
        (tmp_path / "out" / r["cell"] / "test-source.json").is_file() for r in results["rows"]
    )
    results["rows"] = [r for r in results["rows"] if r["strategy"] == "transfer"]
    (row,) = results["rows"]
    for key in ("source_cer_before", "source_cer_after", "source_cer_change", "target_cer_after"):
        assert row[key] is not None
    assert "Forgetting" in (tmp_path / "out" / "report.md").read_text()


def test_rank_sources_hook_runs_once_per_target_and_is_cached(
    tmp_path, en_model, de_target, monkeypatch
):
    rank = pytest.importorskip("xasr.experiments.rank")
    other = tmp_path / "b2" / "model"
    shutil.copytree(en_model, other)
    path = grid_config(
        tmp_path, en_model, de_target, bases=[str(en_model), str(other)], rank_sources={"steps": 7}
    )
    exp = config_module.load_experiment(path)
    calls = []

    def fake_rank_sources(out, train, valid, sources, cfg, steps, progress):
        calls.append((Path(train).name, steps, cfg.seed))
        return [
            {"source": s, "dev_cer": 0.5, "slope": None, "rank": i + 1}
            for i, s in enumerate(reversed(sources))
        ]

    monkeypatch.setattr(rank, "rank_sources", fake_rank_sources)
    data = {
        "de": cell_module.TargetData({m: Path(f"train-{m:g}min.jsonl") for m in SIZES}, None, None)
    }
    first = grid_kind.run_rank(exp, data, progress=False)
    assert calls == [("train-0.07min.jsonl", 7, 0)]  # the largest size, the first seed
    assert [r["base"] for r in first["de"]] == ["b2", en_model.parent.name]
    assert grid_kind.run_rank(exp, data, progress=False) == first and len(calls) == 1


def test_an_lm_added_to_a_finished_grid_decodes_without_training(tmp_path, en_model, corpus):
    """``lm:`` after the cells finished: one n-gram LM per size from its training transcripts,
    each cell's weights chosen on dev and the test set decoded again; nothing trains again;
    the rows and the report carry greedy and LM scores side by side."""
    from xasr.decode.lm import kenlm_tool
    from xasr.errors import XasrError

    try:
        kenlm_tool("lmplz")
    except XasrError as err:
        pytest.skip(str(err))
    # train on the last four lines, dev and test on the first two: no held-out line in the LM
    rows = [{**r, "audio_filepath": str(corpus.root / r["audio_filepath"])} for r in corpus.de_rows]
    manifests = {}
    for name, part in (("train", rows[2:]), ("dev", rows[:2]), ("test", rows[:2])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        manifests[name] = str(tmp_path / f"{name}.jsonl")
    one = {"train_minutes": [0.07], "strategies": {"transfer": {}}, "primary": None}
    path = grid_config(tmp_path, en_model, manifests, **one)
    run_experiment(path, progress=False)
    lm = {"order": 2, "lm_weights": [0.0, 0.5], "word_bonuses": [0.0, 1.0], "beam_width": 4}
    path = grid_config(tmp_path, en_model, manifests, **one, lm=lm)
    results = run_experiment(path, progress=False)
    (row,) = results["rows"]
    cell = tmp_path / "out" / row["cell"]
    assert len(list((cell / "logs").iterdir())) == 1  # trained once
    assert (tmp_path / "out" / "data" / "de" / "lm-0.07min-2gram.arpa").is_file()
    assert row["lm_weight"] in (0.0, 0.5) and row["word_bonus"] in (0.0, 1.0)
    assert 0 <= row["test_cer_lm"] and (cell / "test-lm.json").is_file()
    record = json.loads((cell / "cell.json").read_text())
    assert len(record["lm"]["table"]) == 4 and set(record["lm"]["greedy"]) == {"cer", "wer"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### With the n-gram LM (weights chosen on dev)" in report


@pytest.mark.parametrize(
    ("lm", "message"),
    [({"ordr": 3}, r"lm: unknown key\(s\) ordr"), ({"order": 1}, "lm.order: expected an integer"),
     ({"lm_weights": ["x"]}, "lm.lm_weights: expected a list")],
)  # fmt: skip
def test_lm_key_defaults_and_mistakes_name_the_key(tmp_path, en_model, de_target, lm, message):
    exp = config_module.load_experiment(grid_config(tmp_path, en_model, de_target, lm={"order": 3}))
    assert exp.lm.order == 3 and len(exp.lm.lm_weights) == 6 and len(exp.lm.word_bonuses) == 4
    path = grid_config(tmp_path, en_model, de_target, lm=lm)
    with pytest.raises(XasrError, match=message):
        config_module.load_experiment(path)


def test_a_strategy_can_run_from_some_bases_only(tmp_path, en_model, de_target):
    other = tmp_path / "other" / "model"
    shutil.copytree(en_model, other)
    bases = [str(en_model), {"model": str(other)}]
    strategies = {"transfer": {}, "reinit": {"reinit_head": True, "bases": ["other"]}}
    exp = config_module.load_experiment(
        grid_config(tmp_path, en_model, de_target, bases=bases, strategies=strategies, primary=None)
    )
    cells = grid.plan_cells(exp)
    assert {c.base for c in cells if c.strategy.name == "reinit"} == {"other"}
    assert {c.base for c in cells if c.strategy.name == "transfer"} == {
        "other",
        en_model.parent.name,
    }
    strategies["reinit"]["bases"] = ["missing"]
    path = grid_config(
        tmp_path, en_model, de_target, bases=bases, strategies=strategies, primary=None
    )
    with pytest.raises(XasrError, match=r"strategies.reinit.bases: \['missing'\]"):
        config_module.load_experiment(path)
