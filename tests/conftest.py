"""Shared fixtures: a tiny espeak-ng corpus (English + German) and a tiny trained English model.

Everything here is session-scoped and small (a few seconds of audio, a 2-layer d_model=64
Conformer), so the suite stays fast on two CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from xasr.config import MODEL_SIZES, TrainConfig

EN_SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "she sells sea shells",
    "open the door please",
    "we like green tea",
    "it is a sunny day",
    "the bus is late again",
    "my hat is red",
]
DE_SENTENCES = [
    "grüße aus köln",
    "die straße ist nass",
    "ein schönes mädchen",
    "über den fluss",
    "der bär isst äpfel",
    "öl ist teuer",
]

TINY = MODEL_SIZES["tiny"]
VENV_BIN = Path(sys.executable).parent
XASR = str(VENV_BIN / "xasr") if (VENV_BIN / "xasr").exists() else shutil.which("xasr")


def tiny_recipe(**changes) -> dict:
    """An experiment config's ``recipe`` for tiny runs: a few steps, CPU, no workers."""
    base = {
        "max_steps": 4,
        "val_every": 2,
        "warmup_steps": 1,
        "num_workers": 0,
        "accelerator": "cpu",
        "patience": 100,
        "max_batch_seconds": 30.0,
    }
    return {**base, **changes}


def tiny_train_config(**changes) -> TrainConfig:
    """The recipe every in-process training in the suite starts from: tiny, CPU, no workers."""
    base = {
        "max_steps": 20,
        "val_every": 10,
        "warmup_steps": 5,
        "num_workers": 0,
        "max_batch_seconds": 30.0,
        "accelerator": "cpu",
        "patience": 100,
    }
    return TrainConfig(**{**base, **changes})


def speak(text: str, voice: str, path: Path, rate: int = 16_000) -> float:
    """espeak-ng ``text`` into a mono 16-bit WAV at ``rate``; returns the duration in seconds."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "190", "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    audio, file_rate = sf.read(str(raw), dtype="float32")
    raw.unlink()
    if file_rate != rate:
        audio = soxr.resample(audio, file_rate, rate).astype(np.float32)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return len(audio) / rate


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@dataclass(frozen=True)
class Corpus:
    root: Path
    en_train: Path
    en_dev: Path
    de_train: Path
    de_dev: Path
    mixed: Path  # en + de rows, with "lang"
    en_rows: list  # manifest rows (relative audio paths, relative to root)
    de_rows: list


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rows = {"en": [], "de": []}
    for lang, voice, sentences in (("en", "en-us", EN_SENTENCES), ("de", "de", DE_SENTENCES)):
        for i, text in enumerate(sentences):
            rel = f"audio/{lang}-{i}.wav"
            duration = speak(text, voice, root / rel)
            rows[lang].append(
                {
                    "audio_filepath": rel,
                    "duration": round(duration, 3),
                    "text": text,
                    "lang": lang,
                    "id": f"{lang}-{i}",
                }
            )
    return Corpus(
        root=root,
        en_train=write_jsonl(root / "en_train.jsonl", rows["en"]),
        en_dev=write_jsonl(root / "en_dev.jsonl", rows["en"][:3]),
        de_train=write_jsonl(root / "de_train.jsonl", rows["de"]),
        de_dev=write_jsonl(root / "de_dev.jsonl", rows["de"][:3]),
        mixed=write_jsonl(root / "mixed.jsonl", rows["en"][:3] + rows["de"][:3]),
        en_rows=rows["en"],
        de_rows=rows["de"],
    )


@pytest.fixture(scope="session")
def en_run(corpus, tmp_path_factory) -> Path:
    """A run directory of a tiny English model trained for 20 steps (the transfer source)."""
    from xasr.train.loop import train

    run = tmp_path_factory.mktemp("en_run")
    result = train(run, corpus.en_train, corpus.en_dev, tiny_train_config(), TINY, progress=False)
    assert result.steps == 20
    assert (run / "model" / "model.safetensors").is_file()
    return run


@pytest.fixture(scope="session")
def en_model(en_run) -> Path:
    """The exported model directory of ``en_run``."""
    return en_run / "model"


@pytest.fixture(scope="session")
def make_recipe():
    """``make_recipe(**changes)``: an experiment config's tiny recipe (see ``tiny_recipe``)."""
    return tiny_recipe


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(**changes)``: the suite's tiny TrainConfig (see ``tiny_train_config``)."""
    return tiny_train_config


@pytest.fixture(scope="session")
def xasr() -> str:
    """The installed ``xasr`` console command."""
    if XASR is None:
        pytest.skip("the xasr console command is not installed")
    return XASR


@pytest.fixture
def subprocess_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return env


SLOW_TESTS = Path(__file__).with_name("slow_tests.txt")


def pytest_collection_modifyitems(config, items):
    """Mark the tests measured slow (``tests/slow_tests.txt``): ``make test-fast`` runs the rest."""
    slow = {line.strip() for line in SLOW_TESTS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")}  # fmt: skip
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
