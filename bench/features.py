"""On-the-fly log-mel features against cached ones: what a training batch costs before the model.

    .venv/bin/python bench/features.py              # a few seconds
    .venv/bin/python bench/features.py --json runs/features.json

xasr computes log-mel features inside the model (``CtcModel.features``), from audio the data
loader reads; the alternative is to compute them once and read them back from disk. On one batch
of 16 kHz WAV files with bench/speed.py's durations (8 utterances, 4-12 s, written to a temporary
folder), this measures, interleaved over repetitions (medians):

1. reading the audio as the training loader does (``xasr.data.audio.load_audio``: soundfile),
2. xasr's ``LogMel`` on the padded batch (what the model computes in every training step),
3. reading cached features for the same utterances (one float32 ``.npy`` per utterance, and
   float16 for half the disk) and padding them into a batch,
4. one training step of the small model from audio (log-mel, forward, CTC loss, backward, fused
   AdamW), for scale.

On-the-fly features cost (1) + (2) per batch, cached ones (3). The files sit in the page cache
after the first read, so (1) and (3) are the best case for both. On disk, 16-bit 16 kHz audio
and float32 80-mel features at 100 frames a second take the same 32 kB per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from xasr.config import MODEL_SIZES
from xasr.data.audio import SAMPLE_RATE, load_audio
from xasr.data.features import LogMel
from xasr.models.build import build_model
from xasr.train.module import make_adamw

sys.path.insert(0, str(Path(__file__).parent))
from speed import CHARS_PER_SECOND, SEED, VOCAB_SIZE


def write_batch(folder: Path, durations: list[float], n_mels: int) -> list[tuple[Path, Path]]:
    """WAV files of noise and their cached log-mel features (.npy); returns (wav, npy) pairs."""
    gen = torch.Generator().manual_seed(SEED)
    logmel = LogMel(n_mels)
    pairs = []
    for i, seconds in enumerate(durations):
        audio = torch.randn(round(seconds * SAMPLE_RATE), generator=gen) * 0.1
        wav, npy = folder / f"{i}.wav", folder / f"{i}.npy"
        sf.write(wav, audio.numpy(), SAMPLE_RATE, subtype="PCM_16")
        with torch.no_grad():
            feats, _ = logmel(audio[None], torch.tensor([audio.numel()]))
        np.save(npy, feats[0].numpy())
        np.save(folder / f"{i}.f16.npy", feats[0].numpy().astype(np.float16))
        pairs.append((wav, npy))
    return pairs


def read_audio_batch(wavs: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, samples) zero-padded audio and lengths, as the training loader collates it."""
    clips = [torch.from_numpy(load_audio(path)) for path in wavs]
    lengths = torch.tensor([clip.numel() for clip in clips])
    return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), lengths


def read_cached_batch(npys: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, frames, n_mels) zero-padded cached features (float32) and frame counts."""
    feats = [torch.from_numpy(np.load(path)).float() for path in npys]
    lengths = torch.tensor([f.shape[0] for f in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


def train_step(model, optimizer, audio: torch.Tensor, lengths: torch.Tensor) -> None:
    """Forward from audio, CTC loss on random targets, backward, AdamW step."""
    log_probs, out_lengths = model(audio, lengths)
    seconds = lengths.float() / SAMPLE_RATE
    target_lengths = (seconds * CHARS_PER_SECOND).round().long()
    targets = torch.randint(1, VOCAB_SIZE, (len(lengths), int(target_lengths.max())))
    loss = F.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lengths, target_lengths, zero_infinity=True
    )
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(SEED)
    durations = (4.0 + 8.0 * torch.rand(args.utterances, generator=gen)).tolist()
    cfg = MODEL_SIZES["small"]
    torch.manual_seed(SEED)
    model = build_model(cfg, VOCAB_SIZE).train()
    optimizer = make_adamw(model.parameters(), 1e-4, 1e-3, "cpu")
    logmel = LogMel(cfg.n_mels)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = write_batch(Path(tmp), durations, cfg.n_mels)
        wavs, npys = [w for w, _ in pairs], [n for _, n in pairs]
        f16 = [n.with_suffix(".f16.npy") for n in npys]
        audio, lengths = read_audio_batch(wavs)
        work = {
            "read_audio": lambda: read_audio_batch(wavs),
            "logmel": lambda: logmel(audio, lengths),
            "read_cached_f32": lambda: read_cached_batch(npys),
            "read_cached_f16": lambda: read_cached_batch(f16),
            "train_step": lambda: train_step(model, optimizer, audio, lengths),
        }
        sizes = {
            "audio_bytes": sum(w.stat().st_size for w in wavs),
            "cached_f32_bytes": sum(n.stat().st_size for n in npys),
            "cached_f16_bytes": sum(n.stat().st_size for n in f16),
        }
        for fn in work.values():  # warm-up: page cache, allocator, thread pool
            fn()
        times = {name: [] for name in work}
        for _ in range(args.repeats):
            for name, fn in work.items():
                with torch.no_grad() if name != "train_step" else torch.enable_grad():
                    times[name].append(timed(fn))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    step = ms["train_step"]
    return {
        "threads": torch.get_num_threads(),
        "utterances": args.utterances,
        "audio_seconds": sum(durations),
        "repeats": args.repeats,
        "ms_per_batch": ms,
        "share_of_train_step": {k: v / step for k, v in ms.items() if k != "train_step"},
        "on_the_fly_ms": ms["read_audio"] + ms["logmel"],
        "cached_ms": ms["read_cached_f32"],
        **sizes,
    }


def print_report(r: dict) -> None:
    print(
        f"\n== features: {r['utterances']} utterances, {r['audio_seconds']:.1f} s of audio, "
        f"{r['threads']} threads, medians of {r['repeats']} =="
    )
    for name, value in r["ms_per_batch"].items():
        share = r["share_of_train_step"].get(name)
        note = f"{share:7.1%} of a training step" if share is not None else ""
        print(f"{name:<18}{value:9.1f} ms  {note}")
    print(
        f"\non the fly (read audio + log-mel): {r['on_the_fly_ms']:.1f} ms per batch; cached "
        f"float32 features: {r['cached_ms']:.1f} ms\non disk: audio {r['audio_bytes'] / 1e6:.1f}"
        f" MB, features {r['cached_f32_bytes'] / 1e6:.1f} MB (float32), "
        f"{r['cached_f16_bytes'] / 1e6:.1f} MB (float16)"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    result = run(args)
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
