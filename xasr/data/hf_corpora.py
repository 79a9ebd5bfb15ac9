"""Hugging Face ``datasets`` folders and parquet files as xasr utterances, read with pyarrow.

Two layouts: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(``state.json`` and ``data-*.arrow`` files, one subfolder per split under a
``dataset_dict.json``), and any folder of ``*.parquet`` files (the Hub's ``data/train-00000-of-
00002.parquet``, or ``train/0000.parquet``): a file's split is its folder's name when that is a
split name, else its name up to the first ``-``. No ``datasets`` import and no download.

The audio column may be the ``Audio`` feature's struct (``bytes`` and/or ``path``), a decoded
struct (``array``, ``sampling_rate``) or a plain path. Audio bytes and arrays are written to
WAV files (16 kHz mono); a path that exists on disk is used as it is.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from xasr.data.audio import SAMPLE_RATE, audio_duration, resample, save_audio
from xasr.data.manifest import Utterance
from xasr.errors import DataError

SPLIT_NAMES = ("train", "dev", "validation", "valid", "test", "eval")


def read_hf_folder(
    folder: Path,
    splits: list[str] | None,
    audio_column: str,
    text_column: str,
    audio_dir: Path,
) -> dict[str, Callable[[], list[Utterance]]]:
    """{split: () -> utterances} of a ``save_to_disk`` folder or a folder of parquet files."""
    tables = _arrow_files(folder) or _parquet_files(folder)
    if not tables:
        raise DataError(
            f"{folder}: neither a `datasets` folder (state.json, data-*.arrow) nor a folder "
            "of .parquet files"
        )
    return {
        split: (
            lambda files=files, split=split: list(
                _utterances(files, folder, audio_column, text_column, audio_dir / split, split)
            )
        )
        for split, files in tables.items()
        if not splits or split in splits
    }


def _arrow_files(folder: Path) -> dict[str, list[Path]]:
    """{split: arrow files} of a save_to_disk folder (DatasetDict or a single Dataset)."""
    index = folder / "dataset_dict.json"
    if index.is_file():
        try:
            names = json.loads(index.read_text(encoding="utf-8"))["splits"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{index} is not a datasets index ({err})") from None
        return {name: _state_files(folder / name) for name in names}
    if (folder / "state.json").is_file():
        return {"train": _state_files(folder)}
    return {}


def _state_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    try:
        files = json.loads(state.read_text(encoding="utf-8"))["_data_files"]
        return [folder / f["filename"] for f in files]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{state} cannot be read as a datasets state ({err})") from None


def _parquet_files(folder: Path) -> dict[str, list[Path]]:
    tables: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.parquet")):
        # the converter's <config>/<split>/0000.parquet, a split folder, or the Hub's
        # data/<split>-00000-of-00002.parquet
        if path.parent.name in SPLIT_NAMES or path.stem.isdigit():
            split = path.parent.name
        else:
            split = path.stem.split("-")[0]
        tables.setdefault(split, []).append(path)
    return tables


def _batches(path: Path) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=64)
        else:
            with pa.memory_map(str(path)) as source:
                yield from pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path} cannot be read ({err})") from None


def _utterances(files, folder, audio_column, text_column, audio_dir, split):
    index = 0
    for path in files:
        for batch in _batches(path):
            columns = batch.schema.names
            for column in (audio_column, text_column):
                if column not in columns:
                    raise DataError(
                        f"{path}: no column {column!r}; its columns are {', '.join(columns)} "
                        "(choose with --audio-column / --text-column)"
                    )
            for audio, text in zip(
                batch.column(audio_column).to_pylist(), batch.column(text_column).to_pylist()
            ):
                where = f"{path} row {index}"
                audio_path = _audio_file(audio, folder, audio_dir, f"{split}-{index:07d}", where)
                yield Utterance(
                    audio_filepath=audio_path,
                    text=text if isinstance(text, str) else "",
                    duration=audio_duration(audio_path),
                    id=f"{split}-{index:07d}",
                    source=where,
                )
                index += 1


def _audio_file(value, folder: Path, audio_dir: Path, name: str, where: str) -> Path:
    """The audio of one row as a file on disk (written when it is bytes or an array)."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise DataError(f"{where}: the audio column holds {type(value).__name__}, not audio")
    if value.get("bytes"):
        try:
            audio, rate = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise DataError(f"{where}: cannot decode its audio bytes ({err})") from None
        return _write(audio.mean(axis=1), rate, audio_dir / f"{name}.wav")
    if value.get("array") is not None:
        audio = np.asarray(value["array"], dtype=np.float32)
        return _write(
            audio, int(value.get("sampling_rate") or SAMPLE_RATE), audio_dir / f"{name}.wav"
        )
    if value.get("path"):
        path = Path(value["path"])
        path = path if path.is_absolute() else folder / path
        if path.is_file():
            return path.resolve()
        raise DataError(f"{where}: audio file {path} does not exist and the row has no bytes")
    raise DataError(f"{where}: the audio column has neither bytes, an array nor a path")


def _write(audio: np.ndarray, rate: int, path: Path) -> Path:
    audio = resample(audio, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, audio)
    return path.resolve()
