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


@pytest.mark.parametrize("text", ["...", "?!", "\u200b", "- « » -"])
def test_a_transcript_without_a_word(tmp_path, good_wav, text):
    """Only punctuation, symbols or invisible characters: an error naming the line, or with
    --skip-bad dropped and counted; a word of any script passes."""
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": good_wav, "text": "ok"},
            {"audio_filepath": good_wav, "text": text},
            {"audio_filepath": good_wav, "text": "你好"},
            {"audio_filepath": good_wav, "text": "42"},
        ],
    )
    with pytest.raises(DataError, match=rf"{manifest}:2: transcript .* has no word"):
        check_utterances(read_manifest(manifest))
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert [u.text for u in kept] == ["ok", "你好", "42"]
    assert report.skipped == {"transcript without a word": 1}


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


# --- the battery: each mistake through the command line is exit 2 and one line naming it ----


def cli_error(argv: list[str], capsys) -> str:
    """Run ``xasr ARGV``; assert exit 2 and one stderr line ``xasr CMD: error: ...``."""
    from xasr.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"xasr {argv[0]}: error: "), lines[0]
    return lines[0]


def write_wav(path: Path, audio: np.ndarray, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), audio, SAMPLE_RATE, subtype=subtype)
    return path


def one_line_manifest(tmp_path: Path, corpus, **changes) -> Path:
    row = {
        **corpus.en_rows[0],
        "audio_filepath": str(corpus.root / corpus.en_rows[0]["audio_filepath"]),
    }
    return manifest_with(tmp_path, [{**row, **changes}], "bad.jsonl")


def train_argv(corpus, tmp_path, *extra, train=None):
    return [
        "train",
        "--train",
        str(train or corpus.en_train),
        "--valid",
        str(corpus.en_dev),
        "--out",
        str(tmp_path / "run"),
        "--size",
        "tiny",
        "--no-progress",
        *extra,
    ]


def _bad_json(tmp_path, corpus):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "text": "x"}\n{"audio_filepath": "b.wav",\n')
    return train_argv(corpus, tmp_path, train=path), f"{path}:2"


def _missing_key(tmp_path, corpus):
    path = manifest_with(tmp_path, [{"audio_filepath": "a.wav"}])
    return train_argv(corpus, tmp_path, train=path), f"{path}:1: missing key(s) text"


def _negative_duration(tmp_path, corpus):
    path = one_line_manifest(tmp_path, corpus, duration=-3)
    return train_argv(corpus, tmp_path, train=path), f"{path}:1: 'duration'"


def _nan_audio(tmp_path, corpus):
    audio = tone(1.0, SAMPLE_RATE)
    audio[100:110] = np.nan
    wav = write_wav(tmp_path / "nan.wav", audio, subtype="FLOAT")
    path = manifest_with(tmp_path, [{"audio_filepath": str(wav), "text": "hello"}])
    return train_argv(corpus, tmp_path, train=path), f"{path}:1: audio file {wav} has 10 samples"


def _wrong_duration(tmp_path, corpus):
    path = one_line_manifest(tmp_path, corpus, duration=30.0)
    return train_argv(corpus, tmp_path, train=path), f"{path}:1: the manifest says 30.00 s"


def _utf16_manifest(tmp_path, corpus):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "text": "x"}\n', encoding="utf-16")
    return train_argv(corpus, tmp_path, train=path), f"{path}:1: the manifest is UTF-16"


def _out_is_a_file(tmp_path, corpus):
    (tmp_path / "run").write_text("not a folder")
    return train_argv(corpus, tmp_path), f"--out {tmp_path / 'run'} is a file"


def _out_under_a_file(tmp_path, corpus):
    (tmp_path / "file").write_text("x")
    argv = train_argv(corpus, tmp_path)
    argv[argv.index("--out") + 1] = str(tmp_path / "file" / "run")
    return argv, f"{tmp_path / 'file'} is a file"


def _config_missing(tmp_path, corpus):
    return train_argv(corpus, tmp_path, "--config", "nope.yaml"), "nope.yaml does not exist"


def _config_bad_value(tmp_path, corpus):
    config = tmp_path / "recipe.yaml"
    config.write_text("lr: fast\n")
    return train_argv(corpus, tmp_path, "--config", str(config)), f"{config}: lr (--lr)"


def _config_unknown_key(tmp_path, corpus):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: 0.1\n")
    return train_argv(corpus, tmp_path, "--config", str(config)), "unknown key(s) learning_rate"


def _train_option(*extra):
    def case(tmp_path, corpus):
        return train_argv(corpus, tmp_path, *extra[:-1]), extra[-1]

    return case


def _transfer(*extra, culprit, en=True):
    def case(tmp_path, corpus):
        source = ["--from", str(corpus.root / "no-model")] if not en else []
        argv = [
            "transfer",
            "--train",
            str(corpus.de_train),
            "--valid",
            str(corpus.de_dev),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            *source,
            *extra,
        ]
        return argv, culprit

    return case


def _evaluate(*extra, culprit, model=None):
    def case(tmp_path, corpus):
        argv = ["evaluate", "--model", model or "en-small", "--manifest", str(corpus.en_dev)]
        return [*argv, "--no-progress", *extra], culprit.format(tmp=tmp_path)

    return case


def _evaluate_json_is_a_folder(tmp_path, corpus):
    return _evaluate("--json", str(tmp_path), culprit=f"--json {tmp_path} is a folder")(
        tmp_path, corpus
    )


def _corrupt_weights(tmp_path, corpus):
    import shutil

    from xasr.models.build import PRETRAINED_DIR

    model = tmp_path / "model"
    shutil.copytree(PRETRAINED_DIR / "en-small", model)
    (model / "model.safetensors").write_bytes(b"\x00" * 100)
    return _evaluate(model=str(model), culprit=f"{model / 'model.safetensors'} is corrupt")(
        tmp_path, corpus
    )


def _synth(*extra, culprit):
    def case(tmp_path, corpus):
        return ["synth", "--out", str(tmp_path / "synth"), "--no-progress", *extra], culprit

    return case


def _synth_out_is_a_file(tmp_path, corpus):
    (tmp_path / "synth").write_text("x")
    return _synth(culprit=f"--out {tmp_path / 'synth'} is a file")(tmp_path, corpus)


def _transcribe_missing_file(tmp_path, corpus):
    return ["transcribe", "--model", "en-small", str(tmp_path / "gone.wav")], "gone.wav"


def _build_lm_order(tmp_path, corpus):
    argv = ["build-lm", "--text", str(corpus.en_train), "--out", str(tmp_path / "lm.arpa")]
    return [*argv, "--order", "9"], "--order must be 2..6"


def _token_map_missing(tmp_path, corpus):
    return _transfer("--token-map", str(tmp_path / "map.txt"), culprit="--token-map")(
        tmp_path, corpus
    )


def _trained_run(tmp_path, corpus) -> Path:
    """RUN of 2 steps of the tiny model, as train_argv would make it."""
    from xasr.config import MODEL_SIZES, TrainConfig
    from xasr.train.loop import train

    run = tmp_path / "run"
    cfg = TrainConfig(max_steps=2, val_every=2, warmup_steps=1, num_workers=0, accelerator="cpu")
    train(run, corpus.en_train, corpus.en_dev, cfg, MODEL_SIZES["tiny"], progress=False)
    return run


def _damaged_checkpoint(tmp_path, corpus):
    last = _trained_run(tmp_path, corpus) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # torn from outside
    return train_argv(corpus, tmp_path), f"{last} cannot be read"


def _transcribe_a_folder(tmp_path, corpus):
    return ["transcribe", "--model", "en-small", str(tmp_path)], f"{tmp_path} does not exist or"


def _resumed_with_another_size(tmp_path, corpus):
    run = _trained_run(tmp_path, corpus)
    argv = train_argv(corpus, tmp_path)
    argv[argv.index("--size") + 1] = "small"
    return argv, f"{run} was started with other options"


def _transfer_resumed_with_other_freezing(tmp_path, corpus):
    from xasr.config import TrainConfig
    from xasr.transfer.finetune import TransferOptions, transfer

    run = tmp_path / "run"
    cfg = TrainConfig(max_steps=2, val_every=2, warmup_steps=1, num_workers=0, freeze_layers=2)
    transfer(
        run, corpus.de_train, corpus.de_dev, TransferOptions(source="en-small"), cfg, progress=False
    )
    argv, _ = _transfer("--from", "en-small", "--freeze-layers", "0", culprit="")(tmp_path, corpus)
    return argv, "now: another --freeze-layers"


def _source_test_missing(tmp_path, corpus):
    return _transfer(
        "--from",
        "en-small",
        "--source-test",
        str(tmp_path / "gone.jsonl"),
        culprit="--source-test",
    )(tmp_path, corpus)


NO_GPU = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")

BATTERY = [
    pytest.param(_bad_json, id="manifest-not-json"),
    pytest.param(_missing_key, id="manifest-missing-key"),
    pytest.param(_negative_duration, id="manifest-negative-duration"),
    pytest.param(_nan_audio, id="audio-not-finite"),
    pytest.param(_wrong_duration, id="audio-length-differs"),
    pytest.param(_utf16_manifest, id="manifest-utf16"),
    pytest.param(_out_is_a_file, id="out-is-a-file"),
    pytest.param(_out_under_a_file, id="out-under-a-file"),
    pytest.param(_config_missing, id="config-missing"),
    pytest.param(_config_bad_value, id="config-bad-value"),
    pytest.param(_config_unknown_key, id="config-unknown-key"),
    pytest.param(_train_option("--max-steps", "0", "max_steps (--max-steps)"), id="max-steps-0"),
    pytest.param(_train_option("--lr", "-1", "lr (--lr) must be greater than 0"), id="lr-negative"),
    pytest.param(_train_option("--lr", "abc", "argument --lr: invalid float"), id="lr-not-number"),
    pytest.param(_train_option("--batch-seconds", "0", "(--batch-seconds)"), id="batch-seconds"),
    pytest.param(_train_option("--val-every", "0", "(--val-every)"), id="val-every-0"),
    pytest.param(_train_option("--devices", "0", "(--devices)"), id="devices-0"),
    pytest.param(_train_option("--precision", "fp16", "(--precision)"), id="precision-name"),
    pytest.param(
        _train_option("--precision", "16-mixed", "--accelerator", "cpu", "16-mixed needs a CUDA"),
        id="fp16-on-cpu",
    ),
    pytest.param(
        _train_option("--accelerator", "gpu", "(--accelerator) gpu: no CUDA GPU"),
        id="gpu-where-none",
        marks=NO_GPU,
    ),
    pytest.param(_train_option("--seed", "-1", "seed (--seed)"), id="seed-negative"),
    pytest.param(_train_option("--workers", "-1", "(--workers)"), id="workers-negative"),
    pytest.param(_train_option("--patience", "-2", "(--patience)"), id="patience-negative"),
    pytest.param(_train_option("--max-minutes", "0", "(--max-minutes)"), id="max-minutes-0"),
    pytest.param(_train_option("--size", "huge", "unknown model size 'huge'"), id="size-unknown"),
    pytest.param(_train_option("--colour", "red", "unrecognized arguments: --colour"), id="flag"),
    pytest.param(_transfer(culprit="no model directory", en=False), id="transfer-from-missing"),
    pytest.param(
        _transfer(
            "--from",
            "en-small",
            "--replay",
            "x.jsonl",
            "--replay-fraction",
            "1.5",
            culprit="--replay-fraction must be in (0, 1)",
        ),
        id="replay-fraction",
    ),
    pytest.param(
        _transfer("--from", "en-small", "--drop-layers", "-1", culprit="--drop-layers"),
        id="drop-layers-negative",
    ),
    pytest.param(
        _transfer("--scratch", "--size", "tiny", "--l2sp", "0.1", culprit="--scratch has none"),
        id="l2sp-with-scratch",
    ),
    pytest.param(
        _transfer(
            "--from",
            "en-small",
            "--ewc",
            "0.1",
            "--fisher-manifest",
            "m.jsonl",
            "--fisher-batches",
            "0",
            culprit="--fisher-batches must be at least 1",
        ),
        id="fisher-batches-0",
    ),
    pytest.param(
        lambda tmp_path, corpus: _transfer(
            "--from", "en-small", "--token-map", str(tmp_path / "map.txt"), culprit="map.txt"
        )(tmp_path, corpus),
        id="token-map-missing",
    ),
    pytest.param(
        _evaluate("--device", "cuda", culprit="--device cuda: no CUDA GPU"),
        id="device-cuda",
        marks=NO_GPU,
    ),
    pytest.param(
        _evaluate("--device", "tpu9", culprit="--device 'tpu9' is not a device"), id="device-name"
    ),
    pytest.param(
        _evaluate("--lm", "{tmp}/lm.arpa", culprit="--lm {tmp}/lm.arpa does not exist"),
        id="lm-missing",
    ),
    pytest.param(
        lambda tmp_path, corpus: _evaluate(
            "--lm", str(corpus.en_train), "--beam-width", "0", culprit="--beam-width"
        )(tmp_path, corpus),
        id="beam-width-0",
    ),
    pytest.param(
        _evaluate(model="nowhere", culprit="no model directory 'nowhere'"), id="model-missing"
    ),
    pytest.param(_evaluate_json_is_a_folder, id="json-is-a-folder"),
    pytest.param(_corrupt_weights, id="weights-corrupt"),
    pytest.param(
        _synth("--train-minutes", "-1", culprit="--train-minutes must be at least 0"),
        id="synth-minutes",
    ),
    pytest.param(_synth("--langs", "xx", culprit="'xx'"), id="synth-language"),
    pytest.param(
        _synth("--workers", "0", culprit="--workers must be at least 1"), id="synth-workers"
    ),
    pytest.param(_synth("--dev-utts", "-5", culprit="--dev-utts"), id="synth-dev-utts"),
    pytest.param(_synth_out_is_a_file, id="synth-out-is-a-file"),
    pytest.param(_transcribe_missing_file, id="transcribe-missing-audio"),
    pytest.param(_build_lm_order, id="lm-order"),
    pytest.param(_damaged_checkpoint, id="checkpoint-damaged"),
    pytest.param(_resumed_with_another_size, id="resume-another-size"),
    pytest.param(_transfer_resumed_with_other_freezing, id="resume-other-freezing"),
    pytest.param(_source_test_missing, id="source-test-missing"),
    pytest.param(_transcribe_a_folder, id="transcribe-a-folder"),
    pytest.param(
        _train_option("--vocab", "sentencepiece", "--vocab-size", "5000", "(--vocab-size) 5000"),
        id="vocab-size-too-large",
    ),
]


@pytest.mark.parametrize("case", BATTERY)
def test_battery(case, corpus, tmp_path, capsys):
    argv, culprit = case(tmp_path, corpus)
    before = sorted(tmp_path.rglob("*"))
    line = cli_error([arg.format(tmp=tmp_path) for arg in argv], capsys)
    assert culprit in line, line
    assert sorted(tmp_path.rglob("*")) == before  # stopped before writing anything


# --- audio that would train on garbage; manifests as common tools write them ---------------


def test_non_finite_and_misdescribed_audio_are_refused_or_skipped(tmp_path, good_wav):
    audio = tone(1.0, SAMPLE_RATE)
    audio[5] = np.inf
    write_wav(tmp_path / "inf.wav", audio, subtype="FLOAT")
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "inf.wav", "text": "loud"},
            {"audio_filepath": good_wav, "text": "long", "duration": 9.0},
            {"audio_filepath": good_wav, "text": "close enough", "duration": 1.4},
            {"audio_filepath": good_wav, "text": "fine"},
        ],
    )
    with pytest.raises(DataError, match=rf"{manifest}:1: .*has 1 samples that are not finite"):
        check_utterances(read_manifest(manifest))
    with pytest.raises(DataError, match=rf"{manifest}:2: the manifest says 9.00 s .* 1.00 s"):
        check_utterances(read_manifest(manifest)[1:])
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert [u.text for u in kept] == ["close enough", "fine"]
    assert kept[0].duration == pytest.approx(1.0)  # the decoded length replaces the manifest's
    assert report.skipped == {"not finite": 1, "duration differs": 1}


def test_silent_audio_is_a_counted_warning_or_skipped(tmp_path, good_wav, caplog):
    write_wav(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE, np.float32))
    manifest = manifest_with(
        tmp_path,
        [
            {"audio_filepath": "silence.wav", "text": "nothing"},
            {"audio_filepath": good_wav, "text": "fine"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="xasr.data.batching"):
        kept, report = check_utterances(read_manifest(manifest))
    assert len(kept) == 2 and report.silent == 1
    assert f"{manifest}:1: audio file" in caplog.text and "is silent" in caplog.text
    assert "1 silent (peak below 0.0001), kept" in report.summary()
    kept, report = check_utterances(read_manifest(manifest), skip_bad=True)
    assert [u.text for u in kept] == ["fine"] and report.skipped == {"silent": 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_manifest_with_bom_crlf_and_blank_lines(tmp_path, good_wav, suffix):
    if suffix == ".jsonl":
        lines = [json.dumps({"audio_filepath": good_wav, "text": t}) for t in ("uno", "dos")]
    else:
        lines = [f"{good_wav},uno", f"{good_wav},dos"]
    path = tmp_path / f"windows{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n\r\n".join(lines).encode() + b"\r\n\r\n")
    utts = read_manifest(path)
    assert [u.text for u in utts] == ["uno", "dos"]
    assert [u.source for u in utts] == [f"{path}:1", f"{path}:3"]
    assert all(u.audio_filepath == tmp_path / good_wav for u in utts)
