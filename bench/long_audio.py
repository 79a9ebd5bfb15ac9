"""An hour-long recording transcribed in pieces: peak memory, real-time factor, and where the
voice-activity detectors cut.

The recording is built sentence by sentence straight into a WAV file (never held whole in
memory): espeak-ng sentences in several voices, pauses of 0.3-2.0 s between them, a faint noise
floor, optionally white noise at ``--snr`` dB. Each sentence's audible span (samples above
1 % of its peak) is the truth a cut must not fall into. Then, in the same process:

* ``vad``: for each detector, the pieces it plans and how many cuts fall inside a sentence;
* ``transcribe``: ``xasr.decode.long_audio.transcribe_files`` with ``--vad``, one thread; peak
  RSS (``ru_maxrss``) and RTF (wall seconds per audio second, VAD included; cpu_rtf: CPU seconds, steadier on
  a shared machine).

    python bench/long_audio.py --minutes 60 --out bench/results/long-audio.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import torch

from xasr.data.audio import SAMPLE_RATE
from xasr.data.synth.plan import Voice
from xasr.data.synth.render import PEAK, _speak
from xasr.data.vad import DETECTORS, plan_pieces, speech_probabilities
from xasr.decode.long_audio import LongAudioOptions, transcribe_files
from xasr.decode.recognition import torch_recognition
from xasr.models.build import load_model_dir

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "she sells sea shells by the sea shore",
    "open the door please",
    "we like green tea in the morning",
    "it is a sunny day",
    "the bus is late again",
    "my hat is red",
    "time is money and money is time",
    "never give up on your dreams",
    "water under the bridge",
    "the early bird catches the worm",
    "all that glitters is not gold",
    "a friend in need is a friend indeed",
    "the quick brown fox jumps over the lazy dog",
    "every cloud has a silver lining",
]
VOICES = [Voice("en-us", "m3", 175, 50), Voice("en", "f2", 160, 45), Voice("en-us", "m1", 190, 40)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU seconds of this process: on a shared machine a steadier figure than
    wall time (one thread, so the two agree on an idle one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(path: Path, minutes: float, snr: float | None, seed: int = 0):
    """Writes the recording; returns the reference text and the audible spans (seconds)."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    clips = {(s, v): _speak(s, v) for s in SENTENCES for v in VOICES}
    texts, spans, at = [], [], 0
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as out:
        while at < minutes * 60 * SAMPLE_RATE:
            sentence, voice = rng.choice(SENTENCES), rng.choice(VOICES)
            audio = clips[sentence, voice]
            audible = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
            audio = audio[audible[0] : audible[-1] + 1] * (PEAK / np.abs(audio).max())
            gap = np.zeros(round(rng.uniform(0.3, 2.0) * SAMPLE_RATE), dtype=np.float32)
            chunk = np.concatenate([audio, gap]).astype(np.float32)
            level = 1e-3
            if snr is not None:
                level = np.sqrt(np.mean(audio**2)) / 10 ** (snr / 20)
            chunk += noise.normal(0, level, len(chunk)).astype(np.float32)
            out.write(np.clip(chunk, -1, 1))
            texts.append(sentence)
            spans.append((at / SAMPLE_RATE, (at + len(audio)) / SAMPLE_RATE))
            at += len(chunk)
    return " ".join(texts), spans, at / SAMPLE_RATE


def cuts_inside(pieces, spans) -> int:
    """Piece edges that fall inside a sentence's audible span (by more than 20 ms)."""
    edges = [b for _, b in pieces[:-1]] + [a for a, _ in pieces[1:]]
    starts = np.array([s for s, _ in spans])
    inside = 0
    for edge in edges:
        k = int(np.searchsorted(starts, edge)) - 1
        if k >= 0 and spans[k][0] + 0.02 < edge < spans[k][1] - 0.02:
            inside += 1
    return inside


def speech_missed(pieces, spans) -> float:
    """Seconds of the sentences' audible spans that no piece covers (lost words)."""
    covered = 0.0
    for start, end in spans:
        for a, b in pieces:
            covered += max(0.0, min(end, b) - max(start, a))
    return sum(end - start for start, end in spans) - covered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="en-small")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument(
        "--snr",
        type=float,
        default=None,
        help="white noise at this SNR (dB) instead of the faint floor",
    )
    parser.add_argument("--vad", default="silero", choices=DETECTORS)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--batch-seconds", type=float, default=200.0)
    parser.add_argument("--wav", default="/tmp/xasr-long-audio.wav")
    parser.add_argument("--skip-transcribe", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    wav = Path(args.wav)
    reference, spans, seconds = build(wav, args.minutes, args.snr)
    result = {"minutes": round(seconds / 60, 2), "snr_db": args.snr, "sentences": len(spans)}
    result["rss_mb_after_build"] = round(rss_mb(), 1)
    for detector in DETECTORS:
        started, cpu = time.perf_counter(), cpu_seconds()
        pieces = plan_pieces(speech_probabilities(wav, detector), seconds, args.max_seconds)
        result[f"vad_{detector}"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_s": round(cpu_seconds() - cpu, 1),
            "pieces": len(pieces),
            "cuts_inside_a_sentence": cuts_inside(pieces, spans),
            "speech_missed_s": round(speech_missed(pieces, spans), 2),
            "cuts": 2 * (len(pieces) - 1),
            "longest_piece_s": round(max(b - a for a, b in pieces), 2),
            "audio_decoded_s": round(sum(b - a for a, b in pieces), 1),
        }
        print(detector, result[f"vad_{detector}"], flush=True)
    if not args.skip_transcribe:
        model, _, vocab = load_model_dir(args.model)
        recognition = torch_recognition(model, vocab, device="cpu")
        options = LongAudioOptions(args.max_seconds, args.vad, batch_seconds=args.batch_seconds)
        before = rss_mb()
        started, cpu = time.perf_counter(), cpu_seconds()
        (transcript,) = transcribe_files(recognition, [wav], options, progress=True)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        result["transcribe"] = {
            "vad": args.vad,
            "max_seconds": args.max_seconds,
            "batch_seconds": args.batch_seconds,
            "wall_s": round(wall, 1),
            "rtf": round(wall / seconds, 4),
            "cpu_s": round(cpu, 1),
            "cpu_rtf": round(cpu / seconds, 4),
            "peak_rss_mb": round(rss_mb(), 1),
            "rss_mb_before_transcribe": round(before, 1),
            "words": len(transcript.words),
            "wer": round(jiwer.wer(reference, transcript.text), 3),
            "cer": round(jiwer.cer(reference, transcript.text), 3),
        }
    result.update(threads=1, model=args.model, wav_mb=round(wav.stat().st_size / 2**20, 1))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
