"""Manifests: JSONL and CSV forms, relative paths, errors that name file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xasr.data.manifest import Utterance, read_manifest, write_manifest
from xasr.errors import DataError


def test_jsonl_relative_paths_resolve_against_manifest_folder(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    manifest = corpus / "train.jsonl"
    rows = [
        {
            "audio_filepath": "wavs/a.wav",
            "duration": 1.5,
            "text": "hello",
            "lang": "en",
            "speaker": "s1",
            "gender": "f",
        },
        {"audio_filepath": str(tmp_path / "abs.wav"), "text": "world", "id": "u2"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    # The working directory must not matter.
    monkeypatch.chdir(tmp_path)
    first, second = read_manifest(manifest)
    assert first.audio_filepath == (corpus / "wavs" / "a.wav").resolve()
    assert first.audio_filepath.is_absolute()
    assert first.text == "hello" and first.duration == 1.5 and first.lang == "en"
    assert first.id == "a"  # defaults to the file's stem
    assert first.extra == {"speaker": "s1", "gender": "f"}
    assert first.source == f"{manifest}:1"
    assert second.audio_filepath == tmp_path / "abs.wav"
    assert second.duration is None and second.lang is None and second.id == "u2"
    assert second.source == f"{manifest}:2"


def test_csv_transcript_inline_and_from_txt_file(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "b.txt").write_text("from a file\n", encoding="utf-8")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "wavs/a.wav,an inline transcript\n"
        "wavs/b.wav,txt/b.txt\n"
        '"wavs/c.wav","a, quoted transcript"\n',
        encoding="utf-8",
    )
    a, b, c = read_manifest(manifest)
    assert a.audio_filepath == (tmp_path / "wavs" / "a.wav").resolve()
    assert a.text == "an inline transcript" and a.id == "a"
    assert b.text == "from a file"
    assert b.audio_filepath == (tmp_path / "wavs" / "b.wav").resolve()
    assert c.text == "a, quoted transcript"
    # no header: the first line is data
    assert len(read_manifest(manifest)) == 3


def test_csv_missing_txt_file_and_wrong_field_count(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("a.wav,hello\nb.wav,missing.txt\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest}:2: transcript file .*missing\.txt"):
        read_manifest(manifest)
    manifest.write_text("a.wav,hello\nb.wav\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest}:2: expected 2 fields"):
        read_manifest(manifest)


def test_csv_with_a_header_row(tmp_path):
    """A header naming the audio and text columns (any order, other columns ignored, duration
    optional) is read as such; without a recognised header the first row is data."""
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        'client,Sentence,path,duration\nx1,"hola, mundo",wavs/a.wav,1.5\nx2,adiós,wavs/b.wav,\n',
        encoding="utf-8",
    )
    a, b = read_manifest(manifest)
    assert (a.text, a.duration, a.id) == ("hola, mundo", 1.5, "a")
    assert a.audio_filepath == (tmp_path / "wavs" / "a.wav").resolve()
    assert (b.text, b.duration) == ("adiós", None)
    assert "client" not in a.extra
    manifest.write_text("audio_filepath,text\nwavs/a.wav\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest}:2: 1 fields, the header names 2"):
        read_manifest(manifest)
    manifest.write_text("file,transcript,duration\nwavs/a.wav,hi,long\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest}:2: duration 'long' is not a number"):
        read_manifest(manifest)


def test_malformed_json_line_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"audio_filepath": "a.wav", "text": "ok"}\n'
        "\n"
        '{"audio_filepath": "b.wav", "text": "broken"\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert f"{manifest}:3:" in message  # blank lines still count
    assert "JSON object" in message


def test_json_line_that_is_not_an_object(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('["a.wav", "text"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{manifest}:1: expected a JSON object, got list"):
        read_manifest(manifest)


def test_non_utf8_line_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    good = b'{"audio_filepath": "a.wav", "text": "ok"}\n'
    bad = '{"audio_filepath": "b.wav", "text": "gr\u00fc\u00dfe"}\n'.encode("latin-1")
    manifest.write_bytes(good + good + bad)
    with pytest.raises(DataError) as info:
        read_manifest(manifest)
    assert f"{manifest}:3:" in str(info.value)
    assert "UTF-8" in str(info.value) and "iconv" in str(info.value)


def test_non_utf8_csv_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("a.wav,stra\u00dfe\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{manifest}:1: not valid UTF-8"):
        read_manifest(manifest)


def test_missing_keys_are_named(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"audio_filepath": "a.wav", "text": "ok"}\n{"duration": 1.0}\n', encoding="utf-8"
    )
    with pytest.raises(DataError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert f"{manifest}:2:" in message
    assert "audio_filepath" in message and "text" in message
    manifest.write_text('{"audio_filepath": "a.wav"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"missing key\(s\) text$"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"audio_filepath": "a.wav", "text": 3}, "'text' must be a string"),
        ({"audio_filepath": "a.wav", "text": "x", "duration": -1}, "'duration' must be"),
        ({"audio_filepath": "a.wav", "text": "x", "duration": "long"}, "'duration' must be"),
    ],
)
def test_bad_field_types(tmp_path, row, pattern):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{manifest}:1: {pattern}"):
        read_manifest(manifest)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_manifest_round_trip(tmp_path):
    out_dir = tmp_path / "out"
    utterances = [
        Utterance(
            audio_filepath=out_dir / "audio" / "x.wav",
            text="grüße aus köln",
            duration=1.25,
            lang="de",
            id="x1",
            extra={"speaker": "anna"},
        ),
        Utterance(
            audio_filepath=tmp_path / "elsewhere" / "y.wav", text="hello", duration=None, id="y"
        ),
    ]
    path = out_dir / "m.jsonl"
    write_manifest(path, utterances)
    assert not path.with_name("m.jsonl.tmp").exists()
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert raw[0]["audio_filepath"] == str(Path("audio") / "x.wav")  # relative inside the folder
    assert raw[0]["speaker"] == "anna"
    assert "grüße" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert raw[1]["audio_filepath"] == str(tmp_path / "elsewhere" / "y.wav")  # outside: absolute
    back = read_manifest(path)
    for got, want in zip(back, utterances, strict=True):
        assert got.audio_filepath == want.audio_filepath
        assert (got.text, got.duration, got.lang, got.id) == (
            want.text,
            want.duration,
            want.lang,
            want.id,
        )
        assert got.extra == want.extra
    assert [u.source for u in back] == [f"{path}:1", f"{path}:2"]
