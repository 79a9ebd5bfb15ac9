"""The front door (``xasr.api``, exported by ``xasr``): the calls a Python user needs."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import xasr
from xasr.config import TrainConfig, train_recipe
from xasr.errors import XasrError

FRONT_DOOR = ("load_model", "transcribe", "evaluate", "train_model", "transfer_model")


def test_the_names_are_documented_functions():
    assert set(FRONT_DOOR) <= set(xasr.__all__)
    for name in FRONT_DOOR:
        call = getattr(xasr, name)
        assert inspect.isfunction(call) and call.__module__ == "xasr.api", name
        assert call.__doc__ and len(call.__doc__.split()) > 10, name


def test_import_xasr_stays_light(subprocess_env):
    code = "import sys, xasr; print(sorted({'torch', 'lightning', 'lhotse'} & set(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_train_recipe_from_defaults_mapping_yaml_and_config(tmp_path):
    assert train_recipe() == TrainConfig()
    assert train_recipe({"lr": 0.01}, max_steps=7) == TrainConfig(lr=0.01, max_steps=7)
    assert train_recipe(TrainConfig(seed=3), seed=4).seed == 4
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 10\nval_every: 5\n")
    assert train_recipe(recipe, val_every=2) == TrainConfig(max_steps=10, val_every=2)
    with pytest.raises(XasrError, match="unknown key.*learning_rate"):
        train_recipe(learning_rate=0.1)
    with pytest.raises(XasrError, match=f"{recipe}: .*max_steps"):
        train_recipe(recipe, max_steps=0)


def test_load_transcribe_and_evaluate(en_model, corpus, tmp_path):
    from xasr.decode.transcribe import transcribe_files

    paths = [str(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:2]]
    model = xasr.load_model(en_model)
    texts = xasr.transcribe(model, paths, device="cpu")
    assert texts == transcribe_files(en_model, paths, device="cpu")
    assert xasr.transcribe(en_model, paths[0], device="cpu") == texts[0]  # one file: one text
    assert xasr.transcribe(model, paths, device="cpu", decoder="ctc") == texts  # greedy either way
    with pytest.raises(XasrError, match="unknown key.*beam"):
        xasr.transcribe(model, paths, beam=4)
    result = xasr.evaluate(model, corpus.en_dev, device="cpu", output=tmp_path / "e.json")
    again = xasr.evaluate(en_model, corpus.en_dev, device="cpu")
    assert [result[k] for k in ("wer", "cer", "model")] == [
        again[k] for k in ("wer", "cer", "model")
    ]
    assert len(json.loads((tmp_path / "e.json").read_text())["hypotheses"]) == 3


def test_train_model_and_transfer_model(corpus, en_model, make_cfg, tmp_path):
    recipe = make_cfg(max_steps=2, val_every=2)
    run = xasr.train_model(
        tmp_path / "scratch", corpus.en_train, corpus.en_dev, "tiny", recipe=recipe, progress=False
    )
    assert run.steps == 2 and (run.model_dir / "model.safetensors").is_file()
    moved = xasr.transfer_model(
        tmp_path / "de",
        corpus.de_train,
        corpus.de_dev,
        source=en_model,
        source_test=corpus.en_dev,
        recipe=recipe,
        lr=5e-4,
        progress=False,
    )
    assert moved.steps == 2
    forgetting = json.loads((tmp_path / "de" / "forgetting.json").read_text(encoding="utf-8"))
    assert set(forgetting) == {"source"}
    with pytest.raises(XasrError, match="does not exist"):
        xasr.transfer_model(
            tmp_path / "x", corpus.de_train, corpus.de_dev, en_model, target_test=tmp_path / "no"
        )
    assert not (tmp_path / "x").exists()
