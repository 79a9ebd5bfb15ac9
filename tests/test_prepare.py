"""`xasr prepare`: tiny fake corpora in each downloaded layout (the real folder structure, file
names and columns, MP3 for Common Voice) become xasr manifests; a lhotse cut manifest trains;
a run directory is accepted where a model directory is expected."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xasr.cli import main
from xasr.data.batching import check_utterances
from xasr.data.corpora import prepare_corpus
from xasr.data.manifest import read_manifest
from xasr.data.transcripts import TranscriptNormaliser, TranscriptRules
from xasr.errors import XasrError

RATE = 16_000


def tone(seconds: float, rate: int = RATE, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, seconds: float = 1.0, rate: int = RATE, fmt: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate), rate, format=fmt)
    return path


def texts(manifest: Path) -> list[str]:
    return [u.text for u in read_manifest(manifest)]


def test_commonvoice_mp3(tmp_path):
    lang = tmp_path / "cv-corpus-17.0" / "es"
    columns = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender"]
    columns += ["accents", "variant", "locale", "segment"]
    rows = {
        "train": [
            ("a1", "common_voice_es_1.mp3", "¡Hola, Mundo!"),
            ("a2", "common_voice_es_2.mp3", "Tengo 3 gatos."),
        ],
        "dev": [("a3", "common_voice_es_3.mp3", "Buenos días.")],
        "test": [("a4", "common_voice_es_4.mp3", "¿Qué tal?")],
    }
    lang.mkdir(parents=True)
    for split, entries in rows.items():
        with (lang / f"{split}.tsv").open("w", newline="") as out:
            writer = csv.writer(out, delimiter="\t")
            writer.writerow(columns)
            for client, name, sentence in entries:
                write_audio(lang / "clips" / name, 1.2, 48_000, fmt="MP3")
                writer.writerow([client, name, sentence, 2, 0, "twenties", "", "", "", "es", ""])
    prepared = prepare_corpus(
        "commonvoice", tmp_path / "cv-corpus-17.0", tmp_path / "out", lang="es"
    )
    assert set(prepared.manifests) == {"train", "dev", "test"}
    assert texts(prepared.manifests["train"]) == ["hola mundo"]  # "tengo 3 gatos": digits refused
    assert "dropped 1 (digits)" in prepared.summary["train"]
    assert "lower-cased" in prepared.summary["train"]
    assert texts(prepared.manifests["test"]) == ["qué tal"]
    utt = read_manifest(prepared.manifests["dev"])[0]
    assert utt.lang == "es" and utt.audio_filepath.suffix == ".mp3"
    assert utt.duration == pytest.approx(1.2, abs=0.1)
    # the MP3 lines pass training's audio checks (decoded, 48 kHz counted as resampled)
    kept, report = check_utterances(read_manifest(prepared.manifests["dev"]))
    assert len(kept) == 1 and report.resampled == {48_000: 1}


def test_commonvoice_old_release_and_missing_clip(tmp_path):
    """A release-7 table ("accent", no "variant") reads; a row whose clip is missing is
    counted as dropped."""
    lang = tmp_path / "cv-corpus-7.0" / "de"
    lang.mkdir(parents=True)
    columns = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"]
    lines = ["\t".join(columns)]
    for i, sentence in enumerate(["Guten Tag.", "Danke schön!"]):
        if i == 0:
            write_audio(lang / "clips" / f"common_voice_de_{i}.mp3", 1.0, 48_000, fmt="MP3")
        lines.append("\t".join(["c", f"common_voice_de_{i}.mp3", sentence, "2", "0", "", "", ""]))
    (lang / "train.tsv").write_text("\n".join(lines) + "\n")
    prepared = prepare_corpus("commonvoice", lang.parent, tmp_path / "out", lang="de")
    assert texts(prepared.manifests["train"]) == ["guten tag"]
    assert (
        "dropped 1 (audio missing or unreadable (skipped by lhotse))" in prepared.summary["train"]
    )


def test_librispeech(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    lines = ["84-121123-0000 GO DO YOU HEAR", "84-121123-0001 BUT IN LESS THAN FIVE MINUTES"]
    chapter.mkdir(parents=True)
    (chapter / "84-121123.trans.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        write_audio(chapter / f"{line.split()[0]}.flac", 1.0)
    prepared = prepare_corpus("librispeech", tmp_path / "LibriSpeech", tmp_path / "out")
    assert texts(prepared.manifests["dev-clean"]) == [
        "go do you hear",
        "but in less than five minutes",
    ]
    assert read_manifest(prepared.manifests["dev-clean"])[0].lang == "en"


def test_mls(tmp_path):
    root = tmp_path / "mls"
    lang = root / "mls_spanish"
    lang.mkdir(parents=True)
    (lang / "metainfo.txt").write_text(
        "SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | TITLE | CHAPTER\n"
        "10087 | F | train | 10.0 | 10388 | t | c\n"
    )
    for split in ("train", "dev", "test"):
        ident = f"10087_10388_00000{len(split)}"
        (lang / split).mkdir()
        (lang / split / "transcripts.txt").write_text(f"{ident}\tuna frase de {split}\n")
        write_audio(lang / split / "audio" / "10087" / "10388" / f"{ident}.flac", 1.0)
    (root / "mls_german_opus" / "train").mkdir(parents=True)  # half-extracted: not read
    prepared = prepare_corpus("mls", root, tmp_path / "out", lang="es", splits=["train", "test"])
    assert set(prepared.manifests) == {"train", "test"}
    assert texts(prepared.manifests["test"]) == ["una frase de test"]


def test_fleurs(tmp_path):
    root = tmp_path / "fleurs"
    for split in ("train", "dev", "test"):
        meta = root / "metadata" / "es_419"
        meta.mkdir(parents=True, exist_ok=True)
        name = f"{split}_1.wav"
        write_audio(root / "es_419" / split / name, 1.0)
        raw = f"La frase de {split.upper()}."
        (meta / f"{split}.tsv").write_text(
            f"1001\t{name}\t{raw}\t{raw.lower()}\tl a\t{RATE}\tFEMALE\n"
        )
    prepared = prepare_corpus("fleurs", root, tmp_path / "out", lang="es_419")
    assert texts(prepared.manifests["dev"]) == ["la frase de dev"]
    assert read_manifest(prepared.manifests["dev"])[0].lang == "es"


def test_fleurs_released_layout(tmp_path):
    """As Google releases it: <lang>/audio/<split>/*.wav and <lang>/<split>.tsv."""
    lang = tmp_path / "fleurs" / "es_419"
    for split in ("train", "dev", "test"):
        name = f"{split}_1.wav"
        write_audio(lang / "audio" / split / name, 1.0)
        raw = f"Otra frase de {split}."
        (lang / f"{split}.tsv").write_text(f"7\t{name}\t{raw}\t{raw.lower()}\to t\t{RATE}\tMALE\n")
    prepared = prepare_corpus("fleurs", lang.parent, tmp_path / "out", lang="es_419")
    assert texts(prepared.manifests["test"]) == ["otra frase de test"]
    assert "dropped" not in prepared.summary["test"]


def test_voxpopuli_segments_become_files(tmp_path):
    root = tmp_path / "voxpopuli"
    session = "20200101-0900-PLENARY"
    write_audio(root / "raw_audios" / "es" / "2020" / f"{session}_original.ogg", 6.0, fmt="OGG")
    header = ["id_", "session_id", "id_", "original_text", "normed_text", "speaker_id"]
    header += ["split", "gender", "is_gold_transcript", "accent", "start_time", "end_time"]
    segments = [  # (split, normed text, original text, start, end)
        ("train", "señor presidente", "Señor presidente.", 0.5, 2.5),
        ("train", "gracias", "Gracias.", 3.0, 4.5),
        ("dev", "bien", "Bien.", 4.6, 5.2),
        ("test", "adiós", "Adiós.", 5.3, 5.9),
    ]
    rows = [
        [f"s{i}", session, f"s{i}", original, normed, "p1", split, "male", "True", "None"]
        + [str(start), str(end)]
        for i, (split, normed, original, start, end) in enumerate(segments)
    ]
    with gzip.open(root / "asr_es.tsv.gz", "wt") as out:
        out.write("|".join(header) + "\n" + "".join("|".join(r) + "\n" for r in rows))
    prepared = prepare_corpus("voxpopuli", root, tmp_path / "out", lang="es")
    assert set(prepared.manifests) == {"train", "dev", "test"}
    utts = read_manifest(prepared.manifests["train"])
    assert [u.text for u in utts] == ["señor presidente", "gracias"]
    assert [round(u.duration, 2) for u in utts] == [2.0, 1.5]
    for utt in utts:  # each segment cut out of the session into its own 16 kHz file
        assert utt.audio_filepath.parent == tmp_path / "out" / "audio" / "train"
        assert sf.info(str(utt.audio_filepath)).samplerate == RATE


def test_voxpopuli_without_its_table_says_so(tmp_path):
    (tmp_path / "raw_audios" / "es").mkdir(parents=True)
    with pytest.raises(XasrError, match="asr_es.tsv.gz .* must be in .*would download it"):
        prepare_corpus("voxpopuli", tmp_path, tmp_path / "out", lang="es")


def _datasets_rows(tmp_path):
    wav = write_audio(tmp_path / "on-disk.wav", 0.8)
    buffer = __import__("io").BytesIO()
    sf.write(buffer, tone(1.0, 8000), 8000, format="FLAC")
    return {
        "audio": [
            {"bytes": buffer.getvalue(), "path": "a.flac"},
            {"bytes": None, "path": str(wav)},
        ],
        "sentence": ["Primera frase.", "Segunda frase"],
    }


def test_hf_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    # Built from the Audio feature's storage (bytes, path), then cast to it: encoding audio
    # through the feature needs torchcodec, which is not installed.
    storage = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    features = datasets.Features({"audio": storage, "sentence": datasets.Value("string")})
    train = datasets.Dataset.from_dict(_datasets_rows(tmp_path), features=features)
    train = train.cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"train": train, "test": train}).save_to_disk(str(tmp_path / "saved"))
    prepared = prepare_corpus(
        "hf", tmp_path / "saved", tmp_path / "out", lang="es", text_column="sentence"
    )
    assert set(prepared.manifests) == {"train", "test"}
    utts = read_manifest(prepared.manifests["train"])
    assert [u.text for u in utts] == ["primera frase", "segunda frase"]
    assert sf.info(str(utts[0].audio_filepath)).samplerate == RATE  # bytes written, resampled
    # save_to_disk embeds the bytes of files given by path: both rows are written
    assert [round(u.duration, 2) for u in utts] == [1.0, 0.8]


def test_parquet_converter_layout_keeps_splits_apart(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _datasets_rows(tmp_path)
    for split in ("validated", "other"):
        (tmp_path / "conv" / "default" / split).mkdir(parents=True)
        table = pa.table({"audio": rows["audio"], "text": [f"{split} a", f"{split} b"]})
        pq.write_table(table, tmp_path / "conv" / "default" / split / "0000.parquet")
    prepared = prepare_corpus("hf", tmp_path / "conv", tmp_path / "out", lang="es")
    assert set(prepared.manifests) == {"validated", "other"}
    assert texts(prepared.manifests["other"]) == ["other a", "other b"]


def test_parquet_folder_and_wrong_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _datasets_rows(tmp_path)
    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"audio": rows["audio"], "transcription": rows["sentence"]}),
        tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet",
    )
    prepared = prepare_corpus(
        "hf", tmp_path / "hub", tmp_path / "out", lang="es", text_column="transcription"
    )
    utts = read_manifest(prepared.manifests["validation"])
    assert [u.text for u in utts] == ["primera frase", "segunda frase"]
    assert utts[1].audio_filepath == (tmp_path / "on-disk.wav").resolve()  # a path, kept
    with pytest.raises(XasrError, match="no column 'text'; its columns are audio, transcription"):
        prepare_corpus("hf", tmp_path / "hub", tmp_path / "out2", lang="es")


@pytest.mark.parametrize(
    ("rules", "text", "expected"),
    [
        (TranscriptRules(), "  L'acqua è «fresca»,  vero?", "l'acqua è fresca vero"),
        (TranscriptRules(), "'Tis the 'end'", "tis the end"),
        (TranscriptRules(case="keep", punctuation="keep"), "Hola,  Mundo", "Hola, Mundo"),
        (TranscriptRules(digits="keep"), "Room 101.", "room 101"),
        (TranscriptRules(), "Room 101.", None),
        (TranscriptRules(), "¿?", None),
    ],
)
def test_transcript_rules(rules, text, expected):
    assert TranscriptNormaliser(rules)(text) == expected


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        ("tr", "İstanbul IĞDIR", "istanbul ığdır"),  # dotted and dotless i
        ("en", "İstanbul", "istanbul"),  # NFC again: no i + combining dot
        ("cmn", "你好，世界。", "你好世界"),  # no word break where there was none
        ("ca", "La col·lecció · bé", "la col·lecció bé"),
        ("hi", "राम\u2019s", "राम's"),  # after a combining vowel sign, still inside the word
        ("en", "soft\u00adhyphen zero\u200bwidth", "softhyphen zerowidth"),
        ("en", "½ price", None),  # numbers beyond 0-9 are digits too
    ],
)
def test_transcript_rules_by_language(lang, text, expected):
    assert TranscriptNormaliser(TranscriptRules(), lang)(text) == expected


def test_prepare_command_line(tmp_path, capsys):
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "1" / "2"
    chapter.mkdir(parents=True)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO THERE\n")
    write_audio(chapter / "1-2-0000.flac")
    out = tmp_path / "out"
    assert main(["prepare", "librispeech", str(tmp_path / "LibriSpeech"), "--out", str(out)]) == 0
    assert (
        f"test-clean\t{out / 'test-clean.jsonl'}\t1 utterances\t1 lower-cased"
        in capsys.readouterr().out
    )
    assert main(["prepare", "mls", str(tmp_path), "--out", str(out), "--lang", "xx"]) == 2
    assert "mls: --lang 'xx'" in capsys.readouterr().err


def test_lhotse_cut_manifest_trains(corpus, tmp_path, make_cfg):
    """A cuts.jsonl.gz as lhotse writes it is a manifest wherever one is expected."""
    from lhotse import CutSet, Recording, SupervisionSegment

    from xasr.config import MODEL_SIZES
    from xasr.train.loop import train

    cuts = []
    for row in corpus.en_rows:
        recording = Recording.from_file(corpus.root / row["audio_filepath"], recording_id=row["id"])
        supervision = SupervisionSegment(
            row["id"], row["id"], 0.0, recording.duration, text=row["text"], language="en"
        )
        cuts.append(recording.to_cut().truncate(duration=recording.duration))
        cuts[-1].supervisions = [supervision]
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    utts = read_manifest(path)
    assert [u.text for u in utts] == [r["text"] for r in corpus.en_rows]
    assert utts[0].lang == "en" and utts[0].source == f"{path}:1"
    result = train(
        tmp_path / "run",
        path,
        path,
        make_cfg(max_steps=4, val_every=2),
        MODEL_SIZES["tiny"],
        progress=False,
    )
    assert result.steps == 4


def test_cut_manifest_as_icefall_writes_it(corpus, tmp_path, monkeypatch):
    """Paths relative to the working folder (lhotse's rule), "English" as the language; a
    speed-perturbed cut is refused."""
    from lhotse import CutSet, Recording, SupervisionSegment

    monkeypatch.chdir(corpus.root)
    row = corpus.en_rows[0]
    recording = Recording.from_file(row["audio_filepath"], recording_id="r")  # relative
    cut = recording.to_cut()
    cut.supervisions = [
        SupervisionSegment("s", "r", 0.0, cut.duration, text="x", language="English")
    ]
    (tmp_path / "data" / "manifests").mkdir(parents=True)
    path = tmp_path / "data" / "manifests" / "cuts.jsonl.gz"
    CutSet.from_cuts([cut]).to_file(path)
    (utt,) = read_manifest(path)
    assert utt.audio_filepath == corpus.root / row["audio_filepath"] and utt.lang == "en"
    CutSet.from_cuts([cut.perturb_speed(0.9)]).to_file(path)
    with pytest.raises(XasrError, match="applies Speed to its audio"):
        read_manifest(path)


def test_segment_cut_is_refused_with_the_way_out(corpus, tmp_path):
    from lhotse import CutSet, Recording, SupervisionSegment

    recording = Recording.from_file(corpus.root / corpus.en_rows[0]["audio_filepath"])
    cut = recording.to_cut().truncate(offset=0.2, duration=0.5)
    cut.supervisions = [SupervisionSegment("s", recording.id, 0.0, 0.5, text="the cat")]
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([cut]).to_file(path)
    with pytest.raises(XasrError, match=r"cuts.jsonl.gz:1: cut .* is a segment .*xasr prepare"):
        read_manifest(path)


def test_a_run_directory_is_accepted_as_a_model(en_run, corpus, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="xasr.models.build"):
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(en_run),
                    "--manifest",
                    str(corpus.en_dev),
                    "--no-progress",
                ]
            )
            == 0
        )
    assert f"{en_run} is a run directory: using its model" in caplog.text
    assert json.loads(capsys.readouterr().out)["model"] == str(en_run)
