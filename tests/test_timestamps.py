"""Word times (xasr.decode.timestamps) and subtitles (xasr.decode.subtitles)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from xasr.data.vocab import CharVocab
from xasr.decode.subtitles import cues, srt, timestamp, vtt
from xasr.decode.timestamps import Word, aligned_spans, greedy_spans, word_times

VOCAB = CharVocab(["<blank>", "<unk>", "|", "a", "b", "c"])


def one_hot(labels: str) -> np.ndarray:
    """(frames, vocab) log-probabilities whose argmax spells ``labels`` ("_" is the blank)."""
    ids = [0 if c == "_" else VOCAB.tokens.index(c) for c in labels]
    out = np.full((len(ids), len(VOCAB)), -10.0, dtype=np.float32)
    out[np.arange(len(ids)), ids] = 0.0
    return out


def test_greedy_words_start_at_the_first_frame_and_end_after_the_last():
    log_probs = one_hot("__aa_b__|__cc_c__")
    assert greedy_spans(log_probs) == [(3, 2, 3), (4, 5, 5), (2, 8, 8), (5, 11, 12), (5, 14, 14)]
    words = word_times(log_probs, VOCAB, 0.04)
    assert [w.text for w in words] == ["ab", "cc"]
    assert words[0].start == pytest.approx(0.08) and words[0].end == pytest.approx(0.24)
    assert words[1].start == pytest.approx(0.44) and words[1].end == pytest.approx(0.60)
    assert words[1].to_json() == {"word": "cc", "start": 0.44, "end": 0.6}


def test_forced_alignment_agrees_with_the_greedy_path_and_refuses_what_cannot_fit():
    log_probs = one_hot("__aa_b__|__cc_c__")
    assert aligned_spans(log_probs, VOCAB.encode("ab cc")) == greedy_spans(log_probs)
    assert word_times(log_probs, VOCAB, 0.04, "ab cc") == word_times(log_probs, VOCAB, 0.04)
    # another text is placed where its tokens are likeliest
    assert [w.text for w in word_times(log_probs, VOCAB, 0.04, "a c")] == ["a", "c"]
    assert aligned_spans(one_hot("_a_"), VOCAB.encode("aaaa")) is None  # 4 a's need 7 frames
    assert [w.text for w in word_times(one_hot("_a_"), VOCAB, 0.04, "aaaa")] == ["a"]


def test_sentencepiece_tokens_start_words_at_their_mark():
    class Pieces:  # the part of SentencePieceVocab that word times read
        tokens = ("<blank>", "<unk>", "\u2581ab", "c", "\u2581", "d")
        blank_id = 0

        def decode(self, ids):
            return "".join(self.tokens[i] for i in ids).replace("\u2581", " ").strip()

    log_probs = np.full((6, 6), -10.0, dtype=np.float32)
    log_probs[np.arange(6), [2, 3, 0, 4, 5, 0]] = 0.0
    assert [w.text for w in word_times(log_probs, Pieces(), 0.02)] == ["abc", "d"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_times_of_separately_spoken_words_are_within_a_tenth_of_a_second():
    """Words spoken one by one with known silences (0.08-0.23 s) between them: the words that
    en-small gets right (greedy: 3 of 7 on this hard input) and every word of the reference text (forced alignment) start
    and end within 0.1 s of where they were put."""
    from xasr.data.synth.words import spoken_words
    from xasr.decode.recognition import torch_recognition
    from xasr.models.build import load_model_dir

    model, _, vocab = load_model_dir("en-small")
    recognition = torch_recognition(model, vocab, device="cpu")
    text = "we sat under the green tree today"
    audio, truth = spoken_words(text.split(), [0.1, 0.23, 0.15, 0.08, 0.2, 0.12, 0.18])
    (log_probs,), (hypothesis,) = recognition.run([audio])
    greedy = word_times(log_probs, vocab, recognition.frame_seconds)
    assert " ".join(w.text for w in greedy) == hypothesis
    truth_of = {word: (start, end) for word, start, end in truth if text.split().count(word) == 1}
    hits = [w for w in greedy if w.text in truth_of]
    assert len(hits) >= 3, hypothesis
    for word in hits:
        start, end = truth_of[word.text]
        assert abs(word.start - start) <= 0.1 and abs(word.end - end) <= 0.1, (word, start, end)
    aligned = word_times(log_probs, vocab, recognition.frame_seconds, text)
    assert [w.text for w in aligned] == text.split()
    for word, (_, start, end) in zip(aligned, truth):
        assert abs(word.start - start) <= 0.1 and abs(word.end - end) <= 0.1, (word, start, end)


WORDS = [Word("hello", 0.5, 0.9), Word("there", 1.0, 1.4), Word("general", 3.0, 3.5)]
WORDS += [Word("kenobi", 3.6, 4.2), Word("x" * 30, 4.3, 5.0)]
SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d"


def test_cues_break_at_pauses_length_and_duration():
    out = cues(WORDS, max_chars=42, max_pause=1.0)
    assert [c.text for c in out] == ["hello there", "general kenobi", "x" * 30]
    assert [c.text for c in cues(WORDS[:2], max_seconds=0.5)] == ["hello", "there"]
    assert [c.text for c in cues(WORDS[:2], max_chars=8)] == ["hello", "there"]
    assert cues([]) == []


def test_srt_and_vtt_are_well_formed():
    out = cues(WORDS)
    text = srt(out)
    blocks = text.strip("\n").split("\n\n")
    assert len(blocks) == len(out)
    previous_end = "00:00:00,000"
    for number, block in enumerate(blocks, start=1):
        index, times, caption = block.split("\n")
        assert index == str(number)
        assert re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", times), times
        start, end = times.split(" --> ")
        assert previous_end <= start < end
        previous_end = end
        assert caption
    assert text.endswith("\n") and "00:00:03,000 --> 00:00:04,200\ngeneral kenobi\n" in text
    web = vtt(out)
    assert web.startswith("WEBVTT\n\n")
    web_blocks = web.strip("\n").split("\n\n")[1:]
    assert len(web_blocks) == len(out)
    for block in web_blocks:
        times, caption = block.split("\n")
        assert re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", times) and caption


def test_timestamps_past_an_hour_and_overlaps():
    assert timestamp(3725.0456) == "01:02:05,046"
    assert timestamp(3725.0456, ".") == "01:02:05.046"
    overlapping = cues([Word("a", 0.0, 1.5), Word("b", 1.2, 2.0)], max_chars=1)
    assert overlapping[0].end == overlapping[1].start == 1.2
