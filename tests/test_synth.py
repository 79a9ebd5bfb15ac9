"""XLT-Synth (xasr.data.synth): a tiny Spanish build, built twice, plus the error paths."""

import hashlib
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from xasr.data import synth
from xasr.data.manifest import read_manifest
from xasr.data.synth import (
    HELDOUT_VARIANTS,
    SYNTH_LANGUAGES,
    TRAIN_VARIANTS,
    available_sentences,
    build_xlt_synth,
)
from xasr.errors import DataError

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not synth.FORTUNE_ROOT.is_dir(),
    reason="needs espeak-ng and the fortune packages",
)

TINY = {
    "train_minutes": 0.15,
    "dev_utts": 3,
    "test_utts": 3,
    "seed": 0,
    "workers": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_xlt_synth(["es"], tmp_path_factory.mktemp("noisy"), **TINY)["es"]


def _rows(manifests: dict[str, Path]) -> dict:
    return {split: read_manifest(path) for split, path in manifests.items()}


def _digest(manifests: dict[str, Path]) -> str:
    """Hash of every split's texts, metadata and audio bytes."""
    digest = hashlib.sha256()
    for split in ("train", "dev", "test"):
        for utt in read_manifest(manifests[split]):
            digest.update(repr((utt.text, utt.duration, sorted(utt.extra.items()))).encode())
            digest.update(utt.audio_filepath.read_bytes())
    return digest.hexdigest()


def test_manifests_and_audio(tiny):
    rows = _rows(tiny)
    assert [len(rows["dev"]), len(rows["test"])] == [3, 3]
    train_seconds = [u.duration for u in rows["train"]]
    assert sum(train_seconds) >= 9 > sum(train_seconds[:-1])  # shortest prefix reaching 0.15 min
    for split, utts in rows.items():
        assert tiny[split] == tiny[split].parent / f"{split}.jsonl"
        for utt in utts:
            info = sf.info(str(utt.audio_filepath))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert utt.duration == pytest.approx(info.frames / info.samplerate, abs=1e-6)
            assert utt.audio_filepath.parent == tiny[split].parent / "audio" / split
            assert utt.lang == "es" and utt.text
            assert {"voice", "variant", "speed", "pitch", "topic", "conditions"} <= set(utt.extra)
    assert (tiny["train"].parent / "synth.json").is_file()


def test_splits_share_no_sentence(tiny):
    texts = {split: {u.text for u in utts} for split, utts in _rows(tiny).items()}
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


def test_held_out_variants_never_in_train(tiny):
    rows = _rows(tiny)
    assert {u.extra["variant"] for u in rows["train"]} <= set(TRAIN_VARIANTS)
    for split in ("dev", "test"):
        assert {u.extra["variant"] for u in rows[split]} <= set(HELDOUT_VARIANTS)
        assert {u.extra["split_voices"] for u in rows[split]} == {"heldout"}
    assert {u.extra["split_voices"] for u in rows["train"]} == {"train"}
    assert not set(TRAIN_VARIANTS) & set(HELDOUT_VARIANTS)


def test_same_seed_same_corpus_whatever_the_workers(tiny, tmp_path):
    again = build_xlt_synth(["es"], tmp_path, **{**TINY, "workers": 1})["es"]
    assert _digest(again) == _digest(tiny)


def test_rerun_is_up_to_date(tiny, caplog):
    mtimes = {path: path.stat().st_mtime_ns for path in tiny.values()}
    with caplog.at_level("INFO", logger="xasr.data.synth"):
        assert build_xlt_synth(["es"], tiny["train"].parent.parent, **TINY)["es"] == tiny
    assert "up to date" in caplog.text
    assert {path: path.stat().st_mtime_ns for path in tiny.values()} == mtimes


def test_clean_conditions_pair_with_noisy(tiny, tmp_path):
    clean = _rows(build_xlt_synth(["es"], tmp_path, **{**TINY, "conditions": "clean"})["es"])
    noisy = _rows(tiny)
    for split in ("dev", "test"):
        assert {u.extra["conditions"] for u in clean[split]} == {"clean"}
        assert [u.text for u in clean[split]] == [u.text for u in noisy[split]]
        assert [u.extra["variant"] for u in clean[split]] == [
            u.extra["variant"] for u in noisy[split]
        ]


def test_sentences_have_topics_and_lengths():
    sentences = available_sentences("es")
    assert len(sentences) > 5000
    assert len({s.text for s in sentences}) == len(sentences)
    assert all(3 <= len(s.text.split()) <= 20 for s in sentences)
    assert {"refranes", "amistad"} <= {s.topic for s in sentences}


def test_language_table():
    assert {"en", "es", "de", "it", "pt", "cmn", "yue", "en-gb-scotland", "en-029"} <= set(
        SYNTH_LANGUAGES
    )
    assert SYNTH_LANGUAGES["cmn"].text_lang == SYNTH_LANGUAGES["yue"].text_lang == "zh"
    assert SYNTH_LANGUAGES["en-029"].espeak_voices == ("en-029",)


def test_unknown_language(tmp_path):
    with pytest.raises(DataError, match="known: en, es"):
        build_xlt_synth(["xx"], tmp_path, **TINY)


def test_too_few_sentences(tmp_path):
    with pytest.raises(DataError, match="too few"):
        build_xlt_synth(["es"], tmp_path, **{**TINY, "test_utts": 10**6})


def test_missing_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        build_xlt_synth(["es"], tmp_path, **TINY)


def test_missing_fortunes(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "FORTUNE_ROOT", tmp_path)
    with pytest.raises(DataError, match="apt-get install .*fortunes-es"):
        available_sentences("es")
