"""Bad input: each case is an error naming the file and line and what to do, or a documented,
counted handling (resampling, down-mixing, --skip-bad, --on-unknown unk)."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xasr.config import MODEL_SIZES
from xasr.data.audio import SAMPLE_RATE, load_audio
from xasr.data.batching import AsrDataset, check_utterances, count_unknown_chars, to_cuts
from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab
from xasr.errors import DataError
from xasr.train.loop import check_alphabet, train

TINY = MODEL_SIZES["tiny"]


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    if channels == 1:
        return mono
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


def manifest_with(tmp_path: Path, rows: list[dict], name: str = "m.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def good_wav(tmp_path) -> str:
    sf.write(str(tmp_path / "good.wav"), tone(1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    return "good.wav"


def test_missing_audio_file(tmp_path, good_wav):
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": good_wav, "text": "fine"},
            {"audio_filepath": "gone.wav", "text": "lost"},
        ],
    )
    utts = read_manifest(manifest)
    with pytest.raises(DataError) as info:
        check_utterances(utts)
    message = str(info.value)
    assert f"{manifest}:2" in message
    assert str(tmp_path / "gone.wav") in message
    assert "does not exist" in message and "fix the path" in message
    with pytest.raises(DataError, match=r"gone\.wav does not exist; fix the path"):
        load_audio(tmp_path / "gone.wav")
    kept, report = check_utterances(utts, skip_bad=True)
    assert [u.text for u in kept] == ["fine"]
    assert report.skipped == {"does not exist": 1} and report.kept == 1
    assert "skipped 1 does not exist" in report.summary()


# libsndfile reports seed 0's bytes as "Format not recognised" and seed 1's (1000 bytes) as
# "File does not exist or is not a regular file": both are undecodable files, not missing ones.
@pytest.mark.parametrize(("seed", "size"), [(0, 4000), (1, 1000)])
def test_corrupt_audio(tmp_path, good_wav, seed, size):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(seed).bytes(size))
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "noise.wav", "text": "garbage"},
            {"audio_filepath": good_wav, "text": "fine"},
        ],
    )
    with pytest.raises(DataError) as info:
        check_utterances(read_manifest(manifest))
    message = str(info.value)
    assert f"{manifest}:1" in message and "noise.wav" in message
    assert "cannot decode" in message and "re-encode it as WAV or FLAC" in message
    with pytest.raises(DataError, match=rf"{manifest}:1: cannot decode audio file .*noise\.wav"):
        load_audio(tmp_path / "noise.wav", where=f"{manifest}:1")
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert len(kept) == 1 and report.skipped == {"cannot decode": 1}


def test_empty_audio(tmp_path, good_wav):
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": good_wav, "text": "fine"},
            {"audio_filepath": "empty.wav", "text": "silence"},
        ],
    )
    with pytest.raises(DataError, match=rf"{manifest}:2: audio file .*empty\.wav is empty"):
        check_utterances(read_manifest(manifest))
    with pytest.raises(DataError, match="is empty .*remove it from the manifest"):
        load_audio(tmp_path / "empty.wav")
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert len(kept) == 1 and report.skipped == {"is empty": 1}


def test_8khz_audio_is_resampled_and_counted(tmp_path, good_wav):
    sf.write(str(tmp_path / "phone.wav"), tone(1.5, 8000), 8000, subtype="PCM_16")
    audio = load_audio(tmp_path / "phone.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - int(1.5 * SAMPLE_RATE)) <= 2
    assert np.abs(audio).max() > 0.2  # the tone survives resampling
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "phone.wav", "text": "hello"},
            {"audio_filepath": good_wav, "text": "fine"},
        ],
    )
    kept, report = check_utterances(read_manifest(manifest))
    assert report.resampled == {8000: 1}
    assert kept[0].duration == pytest.approx(1.5)
    assert "resampled to 16 kHz: 1 at 8000 Hz" in report.summary()


def test_stereo_audio_is_downmixed_and_counted(tmp_path, good_wav):
    stereo = tone(1.0, SAMPLE_RATE, channels=2)
    sf.write(str(tmp_path / "stereo.wav"), stereo, SAMPLE_RATE, subtype="FLOAT")
    audio = load_audio(tmp_path / "stereo.wav")
    assert audio.shape == (SAMPLE_RATE,)
    np.testing.assert_allclose(audio, stereo.mean(axis=1), atol=1e-6)
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "stereo.wav", "text": "hello"},
            {"audio_filepath": good_wav, "text": "fine"},
        ],
    )
    _, report = check_utterances(read_manifest(manifest))
    assert report.downmixed == 1 and report.kept == 2 and not report.resampled
    assert "down-mixed 1 multi-channel files" in report.summary()


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_transcript(tmp_path, good_wav, text):
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": good_wav, "text": "fine"},
            {"audio_filepath": good_wav, "text": "again"},
            {"audio_filepath": good_wav, "text": text},
        ],
    )
    with pytest.raises(DataError) as info:
        check_utterances(read_manifest(manifest))
    assert f"{manifest}:3: empty transcript" in str(info.value)
    assert "--skip-bad" in str(info.value)
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert [u.text for u in kept] == ["fine", "again"]
    assert report.skipped == {"empty transcript": 1} and report.kept == 2
    assert "skipped 1 empty transcript" in report.summary()


def test_every_line_bad_is_an_error_even_with_skip_bad(tmp_path):
    manifest = manifest_with(tmp_path, [{"audio_filepath": "gone.wav", "text": "x"}])
    with pytest.raises(DataError, match="no usable utterances"):
        check_utterances(read_manifest(manifest), skip_bad=True)


def test_skip_bad_counts_each_reason(tmp_path, good_wav):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(1).bytes(1000))
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "gone.wav", "text": "a"},
            {"audio_filepath": "noise.wav", "text": "b"},
            {"audio_filepath": good_wav, "text": ""},
            {"audio_filepath": good_wav, "text": "kept"},
            {"audio_filepath": "gone2.wav", "text": "c"},
        ],
    )
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert [u.text for u in kept] == ["kept"]
    assert report.skipped == {"does not exist": 2, "cannot decode": 1, "empty transcript": 1}


def test_check_alphabet_names_unknown_characters(tmp_path):
    english = CharVocab.from_texts(["the cat sat on the mat"])
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "a.wav", "text": "the cat"},
            {"audio_filepath": "b.wav", "text": "the mäß"},
        ],
    )
    utts = read_manifest(manifest)
    assert count_unknown_chars(utts, english) == {"ä": 1, "ß": 1}
    with pytest.raises(DataError) as info:
        check_alphabet(utts, english, "error", "train")
    message = str(info.value)
    assert "'ßä'" in message or "'äß'" in message
    assert f"first at {manifest}:2" in message
    assert "--on-unknown unk" in message


def test_check_alphabet_unk_warns_with_count(tmp_path, caplog):
    english = CharVocab.from_texts(["the cat sat on the mat"])
    manifest = manifest_with(tmp_path, [{"audio_filepath": "b.wav", "text": "the mäß ä"}])
    with caplog.at_level(logging.WARNING, logger="xasr.train.loop"):
        check_alphabet(read_manifest(manifest), english, "unk", "train")
    assert "3 characters outside the vocabulary" in caplog.text
    assert "mapped to <unk>" in caplog.text


def test_decomposed_unicode_is_not_unknown(tmp_path):
    """A transcript in NFD (u + combining diaeresis) is the same text as its NFC form."""
    nfd = unicodedata.normalize("NFD", "grüße über köln")
    assert len(nfd) > len("grüße über köln")
    vocab = CharVocab.from_texts([nfd])
    assert "ü" in vocab.tokens and "\u0308" not in vocab.tokens
    manifest = manifest_with(tmp_path, [{"audio_filepath": "a.wav", "text": nfd}])
    utts = read_manifest(manifest)
    assert count_unknown_chars(utts, vocab) == {}
    check_alphabet(utts, vocab, "error", "train")  # no error: every character is known
    assert vocab.unk_id not in vocab.encode(nfd, "error")
    # and against a vocabulary without them, the NFC characters are named
    english = CharVocab.from_texts(["gre ber kln"])
    with pytest.raises(DataError, match="'ßöü'"):
        check_alphabet(utts, english, "error", "train")


def test_training_with_unknown_characters(corpus, tmp_path, make_cfg):
    """A given (English) vocabulary and German transcripts: "error" names a character and the
    line before any training; "unk" maps them to <unk> and counts them."""
    english = CharVocab.from_texts(r["text"] for r in corpus.en_rows)
    with pytest.raises(DataError) as info:
        train(
            tmp_path / "run",
            corpus.de_train,
            corpus.de_dev,
            make_cfg(on_unknown="error"),
            TINY,
            vocab=english,
            progress=False,
        )
    message = str(info.value)
    assert "characters outside the vocabulary" in message
    assert "ä" in message and "ß" in message
    assert f"{corpus.de_train}:1" in message  # "grüße aus köln" is the first line
    assert not (tmp_path / "run" / "checkpoints").exists()

    utts, _ = check_utterances(read_manifest(corpus.de_train))
    dataset = AsrDataset(english, on_unknown="unk")
    batch = dataset[to_cuts(utts)]
    assert batch["targets"].shape[0] == len(utts)
    unknown = count_unknown_chars(utts, english)
    assert {"ä", "ö", "ü", "ß"} <= set(unknown)
    n_unknown = sum(unknown.values())
    assert int((batch["targets"] == english.unk_id).sum()) == n_unknown
    assert english.unknown_counts == unknown
    with pytest.raises(DataError, match=rf"{corpus.de_train}:1: character 'ü'"):
        AsrDataset(english, on_unknown="error")[to_cuts(utts)]


def test_non_utf8_manifest_line_stops_training(corpus, tmp_path, make_cfg):
    manifest = tmp_path / "latin1.jsonl"
    rows = [
        dict(r, audio_filepath=str(corpus.root / r["audio_filepath"])) for r in corpus.de_rows[:2]
    ]
    manifest.write_bytes(
        json.dumps(rows[0]).encode()
        + b"\n"
        + json.dumps(rows[1], ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    with pytest.raises(DataError, match=rf"{manifest}:2: not valid UTF-8"):
        train(tmp_path / "run", manifest, manifest, make_cfg(), TINY, progress=False)


def test_missing_audio_stops_training_before_it_starts(corpus, tmp_path, make_cfg):
    rows = [
        dict(r, audio_filepath=str(corpus.root / r["audio_filepath"])) for r in corpus.en_rows[:3]
    ]
    rows[1]["audio_filepath"] = str(tmp_path / "nowhere.wav")
    manifest = manifest_with(tmp_path, rows)
    with pytest.raises(DataError, match=rf"{manifest}:2: audio file .*nowhere\.wav does not exist"):
        train(tmp_path / "run", manifest, corpus.en_dev, make_cfg(), TINY, progress=False)
