"""The experiment engine on a tiny kind (multilingual: 2 languages, so 3 arms, x 2 seeds): equal
budgets, a changed config found by key, a typo anywhere in the YAML is one line, --dry-run and
--only-report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xasr.cli import main
from xasr.experiments.kinds import multilingual, run_experiment

RECIPE = {"val_every": 2, "warmup_steps": 1, "num_workers": 0, "max_batch_seconds": 20.0,
          "accelerator": "cpu"}  # fmt: skip


@pytest.fixture
def tiny_kind(corpus, monkeypatch):
    """The multilingual kind on the suite's corpus (no synthesis): en and de."""
    splits = {
        "en": {"train": corpus.en_train, "dev": corpus.en_dev, "test": corpus.en_dev},
        "de": {"train": corpus.de_train, "dev": corpus.de_dev, "test": corpus.de_dev},
    }
    monkeypatch.setattr(multilingual.MultilingualKind, "prepare", lambda self, s, p: splits)


def write(path, **changes):
    config = {
        "kind": "multilingual",
        "name": "tiny",
        "out": str(path.parent / "out"),
        "languages": {"en": 1, "de": 1},
        "size": "tiny",
        "seeds": [0, 1],
        "budget": {"steps": 4},
        "recipe": RECIPE,
        "joint": {"mixing": "balanced", "monitor": "macro"},
        **changes,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_every_arm_spends_the_same_budget_and_the_verdict_is_reported(tiny_kind, tmp_path, capsys):
    path = write(tmp_path / "m.yaml")
    results = run_experiment(path, progress=False)
    rows = results["rows"]
    assert results["missing"] == [] and len({(r["run"], r["seed"]) for r in rows}) == 6
    assert {r["steps"] for r in rows} == {4} and {r["passes"] for r in rows} == {4}
    assert {r["stopped_by"] for r in rows} == {"max steps"}
    assert all(r["code"] and r["code"] != "unknown" for r in rows)  # the commit that made it
    assert set(results["verdicts"]) == {"en", "de"}
    for verdict in results["verdicts"].values():
        assert verdict["verdict"] in ("held", "reversed", "no difference")
        assert verdict["compared"]["seeds"] == [2, 2]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Budget:** 4 optimizer steps for every arm" in report
    assert "## Budgets: what each arm spent" in report and "| joint | 2 | 4 |" in report

    # --dry-run and --only-report train nothing
    capsys.readouterr()
    assert main(["experiment", str(path), "--dry-run"]) == 0
    assert "(done 6, partial 0, todo 0)" in capsys.readouterr().out
    (tmp_path / "out" / "report.md").unlink()
    assert main(["experiment", str(path), "--only-report", "--no-progress"]) == 0
    assert (tmp_path / "out" / "report.md").is_file()


def test_a_changed_config_is_found_by_key(tiny_kind, tmp_path, capsys):
    path = write(tmp_path / "m.yaml", seeds=[0])
    run_experiment(path, progress=False)
    write(path, seeds=[0], joint={"mixing": "balanced", "monitor": "macro", "temperature": 3.0})
    assert main(["experiment", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "joint/seed0 was started with other settings (recipe.temperature)" in err
    assert len(err.strip().splitlines()) == 1
    # nor is a report made from arms of other settings
    assert main(["experiment", str(path), "--only-report", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 finished arm(s) were made with other settings: joint/seed0 (recipe.temperature)" in err
    assert main(["experiment", str(path), "--no-progress", "--rerun-changed"]) == 0
    assert (tmp_path / "out" / "runs" / "joint" / "seed0.replaced-1" / "cell.json").is_file()
    record = json.loads(
        (tmp_path / "out" / "runs" / "joint" / "seed0" / "cell-spec.json").read_text()
    )
    assert record["recipe"]["temperature"] == 3.0
    # the arms alone did not change: reused, not trained again
    assert not (tmp_path / "out" / "runs" / "alone-en" / "seed0.replaced-1").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"langauges": {"en": 1}}, "unknown key(s) langauges"),
        ({"joint": {"temprature": 2}}, "joint: unknown key(s) temprature"),
        ({"joint": {"max_steps": 9}}, "joint: max_steps cannot be set here"),
        ({"synth": {"dev_utt": 3}}, "synth: unknown key(s) dev_utt"),
        ({"recipe": {"lr": "1e-3"}}, "recipe.lr: expected a number"),
        ({"budget": {"step": 4}}, "budget: unknown unit 'step'"),
        ({"kind": "multilingal"}, "kind: unknown 'multilingal'"),
    ],
)
def test_a_typo_anywhere_is_one_line_naming_the_key_and_file(tmp_path, capsys, change, message):
    path = write(tmp_path / "m.yaml", **change)
    assert main(["experiment", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "config",
    sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_committed_experiment_config_loads(config, tmp_path):
    """Each committed YAML reads under its kind's strict rules and plans its arms, with a
    budget and three seeds (the weights of an imported model are fetched by a bench script:
    a config naming them is checked as far as that)."""
    from xasr.errors import XasrError
    from xasr.experiments.kinds import KINDS, kind_name

    kind = KINDS[kind_name(config)]
    try:
        setting = kind.load(config, tmp_path / "out")
    except XasrError as err:
        assert "no model directory 'runs/cache/" in str(err)
        return
    assert kind.arms(setting)
    common = getattr(setting, "common", setting)
    assert common.budget.amount > 0 and len(common.seeds) == 3


def test_every_registered_kind_satisfies_the_protocol():
    from xasr.experiments.engine import Kind
    from xasr.experiments.kinds import KINDS

    assert set(KINDS) == {"grid", "multilingual", "codeswitch", "sparse-sharing", "st-transfer"}
    for name, kind in KINDS.items():
        assert isinstance(kind, Kind) and kind.name == name
