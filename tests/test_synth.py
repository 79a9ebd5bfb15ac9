"""XLT-Synth (xasr.data.synth): a tiny Spanish build, built twice, plus the error paths."""

import hashlib
import json
import shutil
import subprocess
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
    build,
    build_xlt_synth,
    plan,
    render,
    sentences,
    topics_of,
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
    # en-small was trained on these: changing them would invalidate its data's provenance
    assert SYNTH_LANGUAGES["en"].espeak_voices == ("en-us", "en-gb", "en-gb-x-rp")
    for accent in ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"):
        assert SYNTH_LANGUAGES[accent].text_lang == "en"
        assert SYNTH_LANGUAGES[accent].fortune_globs == SYNTH_LANGUAGES["en"].fortune_globs


def test_every_voice_exists_and_speaks():
    listing = subprocess.run(
        ["espeak-ng", "--voices"], check=True, capture_output=True, text=True
    ).stdout
    known = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    for lang in SYNTH_LANGUAGES.values():
        for voice in lang.espeak_voices:
            assert voice in known, f"{lang.code}: espeak-ng has no voice {voice}"
    for code in ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"):
        speaker = plan.Voice(SYNTH_LANGUAGES[code].espeak_voices[0], HELDOUT_VARIANTS[0], 170, 50)
        assert len(render._speak("the car is near our house", speaker)) > 16000 // 2


def _pools(code, topics=None, seed=0, dev=20, test=30):
    params = {"seed": seed, "dev_utts": dev, "test_utts": test}
    if topics is not None:
        params["topics"] = topics
    return build._sentence_pools(code, params)


def test_topics_of_counts_usable_sentences():
    topics = topics_of("en")
    assert sum(topics.values()) == len(available_sentences("en"))
    assert list(topics.values()) == sorted(topics.values(), reverse=True)
    assert {"computers", "linux", "perl", "literature", "songs-poems"} <= set(topics)
    assert topics_of("en-us-nyc") == topics  # accents read the same text


def test_topic_pools_same_for_same_text_language_and_disjoint_across_topics():
    computing = ["computers", "debian", "linux", "perl"]
    pools = _pools("en", computing)
    assert pools == _pools("en-gb-x-gbclan", computing)  # same text language, same topics
    assert {s.topic for split in pools.values() for s in split} == set(computing)
    literature = _pools("en", ["literature", "songs-poems"])
    texts = {s.text for split in pools.values() for s in split}
    assert not texts & {s.text for split in literature.values() for s in split}
    # without topics, the pools are those of builds made before topics existed
    assert _pools("en") == _pools("en-029")
    # a topic build keeps the seed's order of the whole language: shuffle first, then filter
    everything = [s for split in ("test", "dev", "train") for s in _pools("en")[split]]
    chosen = [s for split in ("test", "dev", "train") for s in pools[split]]
    assert chosen == [s for s in everything if s.topic in computing]


def test_topic_build(tmp_path):
    options = {**TINY, "dev_utts": 2, "test_utts": 2, "train_minutes": 0.05}
    manifests = build_xlt_synth(["en"], tmp_path, topics=["linux", "debian", "linux"], **options)
    rows = _rows(manifests["en"])
    assert {u.extra["topic"] for utts in rows.values() for u in utts} <= {"linux", "debian"}
    info = json.loads((tmp_path / "en" / "synth.json").read_text())
    assert info["params"]["topics"] == ["debian", "linux"]  # sorted, deduplicated
    again = build_xlt_synth(["en"], tmp_path, topics=["debian", "linux"], **options)
    assert again == manifests  # the same selection in another order is up to date
    plain = build._params("en", 1, 2, 3, 0, "noisy")
    assert "topics" not in plain  # builds without topics keep their old parameters


def test_unknown_topic_lists_the_topics(tmp_path):
    with pytest.raises(DataError, match=r"no topic 'nope'.*computers \(\d+\)"):
        build_xlt_synth(["en"], tmp_path, topics=["computers", "nope"], **TINY)
    with pytest.raises(DataError, match="no topic 'computers'"):
        build_xlt_synth(["es"], tmp_path, topics=["computers"], **TINY)
    with pytest.raises(DataError, match="empty"):
        build_xlt_synth(["en"], tmp_path, topics=[], **TINY)


def test_too_few_sentences_of_a_topic(tmp_path):
    with pytest.raises(DataError, match="too few"):
        build_xlt_synth(["en"], tmp_path, topics=["pratchett"], **TINY)


def test_unknown_language(tmp_path):
    with pytest.raises(DataError, match="known: en, es"):
        build_xlt_synth(["xx"], tmp_path, **TINY)


def test_too_few_sentences(tmp_path):
    with pytest.raises(DataError, match="too few"):
        build_xlt_synth(["es"], tmp_path, **{**TINY, "test_utts": 10**6})


def test_missing_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        build_xlt_synth(["es"], tmp_path, **TINY)


def test_missing_fortunes(tmp_path, monkeypatch):
    monkeypatch.setattr(sentences, "FORTUNE_ROOT", tmp_path)
    with pytest.raises(DataError, match="apt-get install .*fortunes-es"):
        available_sentences("es")
