"""Long recordings: split at pauses (xasr.data.vad), decoded in pieces and stitched
(xasr.decode.long_audio)."""

from __future__ import annotations

import importlib.util
import shutil

import jiwer
import numpy as np
import pytest
import soundfile as sf

from xasr.data.audio import SAMPLE_RATE, load_audio
from xasr.data.vad import FRAME_SECONDS, audio_blocks, plan_pieces, speech_probabilities
from xasr.data.vocab import CharVocab
from xasr.decode.long_audio import LongAudioOptions, Recognition, read_piece, transcribe_files
from xasr.errors import XasrError

HAS_SILERO = importlib.util.find_spec("silero_vad") is not None
VOCAB = CharVocab(["<blank>", "<unk>", "|", "a"])
HOP = 640  # the stub model's samples per frame: 0.04 s


def loudness_model(max_seconds: float = float("inf")) -> Recognition:
    """A model without context: each 40 ms frame is "a" when loud, the space when quiet, so a
    word is a loud stretch and its time does not depend on where the audio was cut."""

    def run(audios):
        outputs, texts = [], []
        for audio in audios:
            assert len(audio) <= max_seconds * SAMPLE_RATE + 1
            frames = audio[: len(audio) // HOP * HOP].reshape(-1, HOP)
            loud = np.sqrt((frames**2).mean(axis=1)) > 0.05
            log_probs = np.full((len(frames), len(VOCAB)), -10.0, dtype=np.float32)
            log_probs[np.arange(len(frames)), np.where(loud, 3, 2)] = 0.0
            best = log_probs.argmax(axis=1)
            keep = best != np.concatenate([[-1], best[:-1]])
            outputs.append(log_probs)
            texts.append(" ".join(VOCAB.decode(best[keep].tolist()).split()))
        return outputs, texts

    return Recognition(run, VOCAB, HOP / SAMPLE_RATE, max_seconds=max_seconds)


def bursts(path, seconds: float, seed: int = 0, rate: int = SAMPLE_RATE):
    """A file of tone bursts (0.3-2.5 s) and pauses (0.4-1.2 s); returns the bursts' spans."""
    rng = np.random.default_rng(seed)
    parts, spans, at = [], [], 0.0
    while at < seconds:
        length, pause = rng.uniform(0.3, 2.5), rng.uniform(0.4, 1.2)
        t = np.arange(round(length * rate)) / rate
        parts += [0.5 * np.sin(2 * np.pi * 220 * t), np.zeros(round(pause * rate))]
        spans.append((at, at + len(t) / rate))
        at += (len(t) + round(pause * rate)) / rate
    audio = np.concatenate(parts).astype(np.float32)
    audio += np.random.default_rng(seed).normal(0, 1e-3, len(audio)).astype(np.float32)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return spans


def test_pieces_are_cut_in_pauses_within_the_limit():
    probs = np.zeros(1000, dtype=np.float32)  # 32 s of 32 ms frames
    for a, b in ((10, 150), (165, 250), (300, 305), (400, 990)):  # 150-165: a 0.48 s pause
        probs[a:b] = 0.9
    probs[600] = probs[800] = 0.6  # the least speech-like frames of the 18.9 s stretch
    pieces = plan_pieces(probs, 32.0, max_seconds=10.0, pad=0.2)
    frame = FRAME_SECONDS
    assert [t for piece in pieces for t in piece] == pytest.approx(
        [
            *(10 * frame - 0.2, 250 * frame + 0.2),  # joined across the 0.48 s pause
            *(300 * frame - 0.2, 305 * frame + 0.2),
            *(400 * frame - 0.2, 600 * frame),  # cut at frame 600, then 800
            *(600 * frame, 800 * frame),
            *(800 * frame, 990 * frame + 0.2),
        ]
    )
    assert plan_pieces(np.zeros(100, dtype=np.float32), 3.2) == []  # silence: nothing to decode
    with pytest.raises(XasrError, match="--vad"):
        LongAudioOptions(vad="webrtc")
    with pytest.raises(XasrError, match="--max-piece-seconds"):
        LongAudioOptions(max_seconds=0.5)


def test_pieces_are_read_by_seeking_and_streamed_at_16k(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (22050 * 5, 2)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), stereo, 22050, subtype="FLOAT")
    whole = load_audio(tmp_path / "a.wav")
    piece = read_piece(tmp_path / "a.wav", 1.0, 2.5)
    assert len(piece) == 24000
    # resampled alone, a piece matches the whole file's resampling away from its edges
    np.testing.assert_allclose(piece[2000:-2000], whole[18000:38000], atol=2e-3)
    streamed = np.concatenate(list(audio_blocks(tmp_path / "a.wav", 4096)))
    assert abs(len(streamed) - len(whole)) <= 1
    np.testing.assert_allclose(streamed[:-100], whole[: len(streamed) - 100], atol=1e-4)


def test_pieces_stitch_to_the_whole_files_words_and_times(tmp_path):
    """Two files, one over the model's own limit (5 s, as Whisper's 30 s): split, not refused;
    the stitched words and times are the whole file's (within a frame), in order. (Tones, so
    the energy detector: silero rightly finds no speech in them.)"""
    spans = bursts(tmp_path / "long.wav", 40.0)
    bursts(tmp_path / "short.wav", 3.0, seed=1)
    files = [tmp_path / "long.wav", tmp_path / "short.wav"]
    whole = transcribe_files(loudness_model(), files, LongAudioOptions(max_seconds=100))
    pieces = transcribe_files(loudness_model(5.0), files, LongAudioOptions(vad="energy"))
    assert len(whole[0].pieces) == 1 and len(pieces[0].pieces) > 8
    assert pieces[1].pieces == whole[1].pieces == [(0.0, pytest.approx(whole[1].duration))]
    assert all(b - a <= 5.0 for a, b in pieces[0].pieces)
    for piece_end, next_start in zip(
        [b for _, b in pieces[0].pieces], [a for a, _ in pieces[0].pieces[1:]]
    ):
        assert not any(s < piece_end < e or s < next_start < e for s, e in spans)
    for got, want in zip(pieces, whole):
        assert got.text == want.text and len(got.words) == len(want.words) == got.text.count("a")
        for a, b in zip(got.words, want.words):
            assert abs(a.start - b.start) <= 0.04 and abs(a.end - b.end) <= 0.04
    assert len(whole[0].words) == len(spans)
    for word, (start, end) in zip(whole[0].words, spans):
        assert abs(word.start - start) <= 0.08 and abs(word.end - end) <= 0.08
    assert pieces[0].to_json()["words"][0].keys() == {"word", "start", "end"}


def test_silero_and_energy_agree_on_speech(tmp_path):
    if not HAS_SILERO or shutil.which("espeak-ng") is None:
        pytest.skip("needs silero-vad and espeak-ng")
    from xasr.data.synth.words import spoken_words

    audio, truth = spoken_words(["hello", "world"], [1.0, 0.5], lead=1.0)
    sf.write(str(tmp_path / "w.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
    for detector in ("silero", "energy"):
        probs = speech_probabilities(tmp_path / "w.wav", detector)
        assert len(probs) == -(-len(audio) // 512)
        speech = probs >= 0.5
        for _, start, end in truth:  # speech in each word, none in the middle of the pauses
            assert speech[int(start / FRAME_SECONDS) : int(end / FRAME_SECONDS)].mean() > 0.5
        assert not speech[int(0.4 / FRAME_SECONDS) : int(0.6 / FRAME_SECONDS)].any(), detector
        middle = (truth[0][2] + truth[1][1]) / 2
        assert not speech[int(middle / FRAME_SECONDS)], detector


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_a_long_synthesized_file_in_pieces(corpus, tmp_path):
    """Two minutes of sentences and pauses, decoded whole and in pieces of at most 10 s: no cut
    inside a sentence, and the pieces' text is as good as the whole file's (en-small's text
    changes with the audio around it, so the two are compared with the reference)."""
    from xasr.decode.recognition import torch_recognition
    from xasr.models.build import load_model_dir

    rng = np.random.default_rng(0)
    parts, spans, texts, at = [], [], [], 0
    while at < 120 * SAMPLE_RATE:
        row = corpus.en_rows[len(texts) % len(corpus.en_rows)]
        audio = load_audio(corpus.root / row["audio_filepath"])
        pause = np.zeros(round(rng.uniform(0.4, 1.5) * SAMPLE_RATE), dtype=np.float32)
        parts += [audio, pause]
        spans.append((at / SAMPLE_RATE, (at + len(audio)) / SAMPLE_RATE))
        texts.append(row["text"])
        at += len(audio) + len(pause)
    audio = np.concatenate(parts) + rng.normal(0, 1e-3, at).astype(np.float32)
    sf.write(str(tmp_path / "long.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
    model, _, vocab = load_model_dir("en-small")
    recognition = torch_recognition(model, vocab, device="cpu")
    vad = "silero" if HAS_SILERO else "energy"
    (whole,) = transcribe_files(recognition, [tmp_path / "long.wav"], LongAudioOptions(1000))
    (split,) = transcribe_files(recognition, [tmp_path / "long.wav"], LongAudioOptions(10, vad))
    assert len(split.pieces) >= 12 and all(b - a <= 10 for a, b in split.pieces)
    edges = [b for _, b in split.pieces[:-1]] + [a for a, _ in split.pieces[1:]]
    assert not [e for e in edges for s, t in spans if s + 0.05 < e < t - 0.05]
    reference = " ".join(texts)
    assert jiwer.cer(reference, split.text) <= jiwer.cer(reference, whole.text) + 0.02
    starts = [w.start for w in split.words]
    assert starts == sorted(starts) and split.words[-1].end <= split.duration
