"""How close are word times to the truth? Utterances built from separately spoken words with
known silences (``xasr.data.synth.words``), decoded by a CTC model; the error of each rule:

* ``greedy``: the argmax path's words (what ``transcribe --json`` gives with greedy decoding),
  each paired with its reference word by the edit alignment: the words it got right, and apart
  the substituted ones (insertions have no reference time);
* ``aligned``: the Viterbi forced alignment of the reference text (what the LM beam search's and
  an attention decoder's texts go through);
* ``ctc-segmentation``: the ctc-segmentation package (PyPI; each word given as one "utterance"),
  where it is installed.

    python bench/word_times.py [--model en-small] [--out bench/results/word-times.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import jiwer
import numpy as np
import torch

from xasr.data.synth.plan import Voice
from xasr.data.synth.words import spoken_words
from xasr.decode.recognition import torch_recognition
from xasr.decode.timestamps import Word, word_times
from xasr.models.build import load_model_dir

SENTENCES = [
    "open the green door please",
    "she sells sea shells today",
    "the cat sat on the mat",
    "it is a sunny day",
    "water under the bridge",
    "time is money",
    "we like green tea",
    "the bus is late again",
]
SPEAKERS = [
    Voice("en-us", "m3", 175, 50),
    Voice("en-us", "f2", 160, 50),
    Voice("en", "m1", 190, 40),
]
GAPS = {"short (0.05-0.25 s)": (0.05, 0.25), "long (0.2-0.8 s)": (0.2, 0.8)}


def paired(ref_words: list[str], hyp_words: list, kind: str) -> list[tuple[int, object]]:
    """(reference index, hypothesis Word) of the edit alignment's chunks of ``kind``: "equal"
    (the words the model got right) or "substitute"."""
    if not hyp_words:
        return []
    result = jiwer.process_words(" ".join(ref_words), " ".join(w.text for w in hyp_words))
    out = []
    for chunk in result.alignments[0]:
        if chunk.type == kind:
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                out.append((chunk.ref_start_idx + k, hyp_words[chunk.hyp_start_idx + k]))
    return out


def ctc_segmentation_words(log_probs, vocab, words, frame_seconds):
    from ctc_segmentation import (
        CtcSegmentationParameters,
        ctc_segmentation,
        determine_utterance_segments,
        prepare_token_list,
    )

    config = CtcSegmentationParameters(index_duration=frame_seconds, blank=0)
    config.char_list = list(vocab.tokens)
    tokens = [np.array(vocab.encode(w)) for w in words]
    matrix, begins = prepare_token_list(config, tokens)
    timings, char_probs, _ = ctc_segmentation(config, log_probs, matrix)
    segments = determine_utterance_segments(config, begins, char_probs, timings, words)
    return [(s, e) for s, e, _ in segments]


def summary(errors: list[float]) -> dict:
    e = np.abs(np.array(errors))
    return {
        "n": int(e.size),
        "mean_abs": round(float(e.mean()), 3),
        "p95_abs": round(float(np.percentile(e, 95)), 3),
        "max_abs": round(float(e.max()), 3),
        "within_0.1s": round(float((e <= 0.1).mean()), 3),
        "mean_signed": round(float(np.mean(errors)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="en-small")
    parser.add_argument("--out", default="bench/results/word-times.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _, vocab = load_model_dir(args.model)
    recognition = torch_recognition(model, vocab, device="cpu")
    rng = random.Random(0)
    errors: dict[str, dict[str, list[float]]] = {}
    paired_count = total = 0
    for gap_name, (low, high) in GAPS.items():
        for speaker in SPEAKERS:
            for sentence in SENTENCES:
                words = sentence.split()
                gaps = [rng.uniform(low, high) for _ in words]
                audio, truth = spoken_words(words, gaps, speaker)
                (log_probs,), (_text,) = recognition.run([audio])
                fs = recognition.frame_seconds
                rules = {"aligned": list(enumerate(word_times(log_probs, vocab, fs, sentence)))}
                greedy = word_times(log_probs, vocab, fs)
                rules["greedy (right words)"] = paired(words, greedy, "equal")
                rules["greedy (substituted words)"] = paired(words, greedy, "substitute")
                paired_count += len(rules["greedy (right words)"])
                total += len(words)
                try:
                    spans = ctc_segmentation_words(log_probs, vocab, words, fs)
                    rules["ctc-segmentation"] = [
                        (i, Word(w, s, e)) for i, (w, (s, e)) in enumerate(zip(words, spans))
                    ]
                except ImportError:
                    pass
                for rule, pairs in rules.items():
                    for key in (f"{rule} start", f"{rule} end"):
                        errors.setdefault(gap_name, {}).setdefault(key, [])
                    for i, word in pairs:
                        errors[gap_name][f"{rule} start"].append(word.start - truth[i][1])
                        errors[gap_name][f"{rule} end"].append(word.end - truth[i][2])
    result = {
        "model": args.model,
        "utterances": len(GAPS) * len(SPEAKERS) * len(SENTENCES),
        "greedy_right_words": f"{paired_count} of {total}",
        "errors_seconds": {
            gap: {key: summary(v) for key, v in rules.items() if v} for gap, rules in errors.items()
        },
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
