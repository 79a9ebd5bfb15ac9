"""ONNX export: the whole model matches torch to 1e-4 on utterances of several lengths, carries
its vocabulary as metadata, and `xasr transcribe --onnx` gives torch's text without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from xasr.cli import main
from xasr.data.audio import load_audio
from xasr.export.onnx import export_onnx
from xasr.models.build import load_model_dir

# `import torch` fails in this process: what xasr imports for --onnx must not need it.
NO_TORCH = """
import sys
sys.modules["torch"] = None
from xasr.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def en_small_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "en-small.onnx"
    report = export_onnx("en-small", path)
    assert report["max_abs_diff"] < 1e-4
    return path


def test_export_matches_torch_on_speech(en_small_onnx, corpus):
    import onnxruntime

    model, _, vocab = load_model_dir("en-small")
    session = onnxruntime.InferenceSession(str(en_small_onnx), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vocab"])["tokens"] == vocab.tokens
    assert meta["sample_rate"] == "16000" and meta["blank_id"] == "0"
    assert float(meta["frame_seconds"]) == pytest.approx(0.04)
    # real speech of several lengths, one batch with padding
    audios = [load_audio(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:4]]
    assert len({len(a) for a in audios}) == 4
    lengths = torch.tensor([len(a) for a in audios])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(a) for a in audios], True)
    with torch.no_grad():
        expected, frames = model(batch, lengths)
    got, got_frames = session.run(None, {"audio": batch.numpy(), "lengths": lengths.numpy()})
    np.testing.assert_array_equal(got_frames, frames.numpy())
    for i, n in enumerate(frames.tolist()):
        np.testing.assert_allclose(got[i, :n], expected[i, :n].numpy(), atol=1e-4, rtol=0)


def test_transcribe_onnx_without_torch(en_small_onnx, corpus, capsys):
    files = [str(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:3]]
    files.append(str(corpus.root / corpus.de_rows[0]["audio_filepath"]))
    assert main(["transcribe", "--model", "en-small", "--device", "cpu", *files]) == 0
    expected = capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "transcribe", "--onnx", str(en_small_onnx), *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == expected
    assert len(expected.splitlines()) == 4


def test_transcribe_onnx_with_an_lm(en_small_onnx, corpus, tmp_path, capsys):
    from xasr.decode.lm import build_lm, kenlm_tool
    from xasr.errors import XasrError

    try:
        kenlm_tool("lmplz")
    except XasrError as err:
        pytest.skip(str(err))
    build_lm([corpus.en_train], tmp_path / "en.arpa", order=3)
    files = [str(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:3]]
    lm = ["--lm", str(tmp_path / "en.arpa"), "--lm-weight", "1.0"]
    assert main(["transcribe", "--model", "en-small", "--device", "cpu", *lm, *files]) == 0
    expected = capsys.readouterr().out
    assert main(["transcribe", "--onnx", str(en_small_onnx), *lm, *files]) == 0
    assert capsys.readouterr().out == expected


def test_onnx_mistakes_are_one_line(en_small_onnx, tmp_path, corpus, capsys):
    wav = str(corpus.root / corpus.en_rows[0]["audio_filepath"])
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    for argv, culprit in [
        (["transcribe", "--onnx", str(tmp_path / "none.onnx"), wav], "none.onnx does not exist"),
        (["transcribe", "--onnx", str(tmp_path / "bad.onnx"), wav], "is not a readable ONNX"),
        (["transcribe", "--onnx", str(en_small_onnx), "--device", "cuda", wav], "runs on the CPU"),
        (["export", "--model", "nowhere", "--onnx", str(tmp_path / "x.onnx")], "'nowhere'"),
        (["export", "--model", "en-small", "--onnx", str(tmp_path)], "is a folder"),
        (["export", "--model", "en-small", "--onnx", "x.onnx", "--tolerance", "0"], "> 0"),
    ]:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and culprit in lines[0], lines


def test_transcribe_onnx_refuses_what_the_onnx_path_cannot_do(tmp_path, corpus):
    from xasr.decode.options import DecodingOptions
    from xasr.errors import DataError, XasrError
    from xasr.export.onnx_runtime import transcribe_onnx

    wav = str(corpus.root / corpus.en_rows[0]["audio_filepath"])
    onnx = tmp_path / "none.onnx"  # every refusal comes before the model is read
    with pytest.raises(DataError, match=r"gone\.wav does not exist"):
        transcribe_onnx(onnx, [tmp_path / "gone.wav"])
    with pytest.raises(XasrError, match="runs on the CPU"):
        transcribe_onnx(onnx, [wav], device="cuda")
    with pytest.raises(XasrError, match="--onnx models are CTC models"):
        transcribe_onnx(onnx, [wav], DecodingOptions(decoder="attention"))


def test_a_graph_past_the_tolerance_is_not_written(en_model, tmp_path, capsys):
    """--tolerance is the check's bound: below the rounding every export has, the graph is
    refused in one line that says how to accept it, and no file is left."""
    out = tmp_path / "tiny.onnx"
    argv = ["export", "--model", str(en_model), "--onnx", str(out), "--tolerance", "1e-12"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "above the tolerance 1e-12; not written" in line and "--tolerance" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


ONNX_WORDS = """
import json, sys
sys.modules["torch"] = None
from xasr.decode.long_audio import LongAudioOptions, transcribe_files
from xasr.export.onnx_runtime import OnnxRecognizer
options = LongAudioOptions(max_seconds=8, vad=sys.argv[2])
out = transcribe_files(OnnxRecognizer(sys.argv[1]).recognition(), sys.argv[3:], options)
print(json.dumps([t.to_json() for t in out]))
"""


def test_onnx_word_times_and_long_files_without_torch(en_small_onnx, corpus, tmp_path):
    """--onnx gives torch's words and times, and splits a file over the piece limit with the
    silero VAD, all without torch."""
    import importlib.util

    import soundfile as sf

    from xasr.decode.long_audio import LongAudioOptions, transcribe_files
    from xasr.decode.recognition import torch_recognition

    files = [str(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:2]]
    pause = np.zeros(12_000, dtype=np.float32)
    rows = corpus.en_rows[:6]
    joined = [x for row in rows for x in (load_audio(corpus.root / row["audio_filepath"]), pause)]
    sf.write(str(tmp_path / "long.wav"), np.concatenate(joined), 16_000, subtype="PCM_16")
    files.append(str(tmp_path / "long.wav"))
    vad = "silero" if importlib.util.find_spec("silero_vad") else "energy"
    result = subprocess.run(
        [sys.executable, "-c", ONNX_WORDS, str(en_small_onnx), vad, *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    model, _, vocab = load_model_dir("en-small")
    options = LongAudioOptions(max_seconds=8, vad=vad)
    expected = transcribe_files(torch_recognition(model, vocab, device="cpu"), files, options)
    assert len(got[2]["pieces"]) >= 2
    for onnx, torch_ in zip(got, expected):
        assert onnx["text"] == torch_.text and onnx["pieces"] == torch_.to_json()["pieces"]
        assert [w["word"] for w in onnx["words"]] == [w.text for w in torch_.words]
        for a, b in zip(onnx["words"], torch_.words):
            assert abs(a["start"] - b.start) <= 0.04 and abs(a["end"] - b.end) <= 0.04
