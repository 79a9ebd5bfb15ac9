"""Manifests: one utterance per line, NeMo's JSONL form or the meta-transfer code's CSV form.

JSONL (NeMo): ``{"audio_filepath": "a.wav", "duration": 2.1, "text": "hola", "lang": "es"}``;
extra keys are kept in ``Utterance.extra``. CSV (meta-transfer learning code):
``wav_path,transcript_or_txt_path`` with no header, where the second field is the transcript
itself or the path of a ``.txt`` file holding it. Relative paths resolve against the manifest's
folder, so a corpus directory can be moved as a whole.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xasr.errors import DataError
from xasr.io import write_file

REQUIRED_KEYS = ("audio_filepath", "text")


@dataclass(frozen=True)
class Utterance:
    """One line of a manifest; ``audio_filepath`` is absolute once read."""

    audio_filepath: Path
    text: str
    duration: float | None = None
    lang: str | None = None
    id: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    source: str = ""  # "manifest.jsonl:12", for error messages

    def to_json(self, relative_to: Path | None = None) -> dict:
        path = self.audio_filepath
        if relative_to is not None:
            try:
                path = path.relative_to(relative_to)
            except ValueError:
                pass
        row = {"audio_filepath": str(path), "duration": self.duration, "text": self.text}
        if self.lang:
            row["lang"] = self.lang
        if self.id:
            row["id"] = self.id
        row.update(self.extra)
        return row


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest, by suffix: ``.csv`` is CSV; anything else JSONL, gzipped when it ends in
    ``.gz``, each line an xasr/NeMo row or a lhotse cut (``cuts.jsonl.gz`` as lhotse writes it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; pass the path of a .jsonl or .csv file")
    if path.suffix.lower() == ".csv":
        return read_csv_manifest(path)
    return read_jsonl_manifest(path)


def read_jsonl_manifest(path: Path) -> list[Utterance]:
    utterances = []
    for line_no, line in _numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{where}: not a JSON object ({err.msg}); each line must be one JSON object "
                'such as {"audio_filepath": "a.wav", "duration": 1.5, "text": "..."}'
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if "audio_filepath" not in row and "supervisions" in row and "recording" in row:
            utterances.append(_utterance_from_cut(row, path.parent, where))
            continue
        missing = [key for key in REQUIRED_KEYS if key not in row]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        utterances.append(_utterance_from_row(row, path.parent, where))
    return utterances


def _utterance_from_cut(row: dict, base: Path, where: str) -> Utterance:
    """One lhotse cut as an utterance: a whole audio file with one supervision (xasr reads
    whole files; ``xasr prepare`` writes segments of longer recordings out as files)."""
    from lhotse.serialization import deserialize_item

    try:
        cut = deserialize_item(row)
        recording, supervisions = cut.recording, cut.supervisions
        (source,) = recording.sources
    except Exception as err:  # noqa: BLE001 - lhotse raises many types for a malformed cut
        raise DataError(f"{where}: not a lhotse cut with one audio file ({err})") from None
    if len(supervisions) != 1 or source.type != "file":
        raise DataError(
            f"{where}: cut {cut.id} has {len(supervisions)} supervisions and audio of type "
            f"{source.type!r}; xasr reads cuts of one supervision over one audio file"
        )
    if cut.start > 1e-3 or abs(cut.duration - recording.duration) > 1e-2:
        raise DataError(
            f"{where}: cut {cut.id} is a segment ({cut.start:.2f} s + {cut.duration:.2f} s) of "
            f"{source.source}; xasr reads whole files: `xasr prepare` writes segments as files"
        )
    transforms = [t for t in (recording.transforms or []) if _transform_name(t) != "Resample"]
    if transforms:  # speed or volume perturbation: the file alone is not what the cut holds
        raise DataError(
            f"{where}: cut {cut.id} applies {_transform_name(transforms[0])} to its audio; "
            "xasr reads the files as they are: give it the cuts without perturbation"
        )
    supervision = supervisions[0]
    # lhotse resolves relative paths against the working folder, as the cuts were written
    path = Path(source.source)
    if not path.is_absolute() and not path.exists() and (base / path).exists():
        path = base / path
    row = {
        "audio_filepath": str(path.absolute()),
        "text": supervision.text or "",
        "duration": cut.duration,
        "lang": _language_of(supervision.language),
        "id": cut.id,
    }
    return _utterance_from_row(row, base, where)


def _transform_name(transform) -> str:
    name = transform.get("name") if isinstance(transform, dict) else type(transform).__name__
    return str(name)


# lhotse's recipes name languages in words ("English" from LibriSpeech, "spanish" from MLS)
_LANGUAGE_NAMES = {
    "english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es",
    "italian": "it", "portuguese": "pt", "polish": "pl", "mandarin": "cmn", "cantonese": "yue",
}  # fmt: skip


def _language_of(language: str | None) -> str | None:
    """A supervision's language as xasr's code ("English" -> en); codes stay as they are."""
    if language is None:
        return None
    return _LANGUAGE_NAMES.get(language.lower(), language)


# the columns a CSV manifest's header row may name (lower case), each in order of preference
CSV_AUDIO_COLUMNS = ("audio_filepath", "path", "file")
CSV_TEXT_COLUMNS = ("text", "sentence", "transcript")


def read_csv_manifest(path: Path) -> list[Utterance]:
    """Rows ``wav_path,transcript_or_txt_path``, or, when the first row is a header naming an
    audio column (``CSV_AUDIO_COLUMNS``) and a text column (``CSV_TEXT_COLUMNS``), those
    columns and an optional ``duration``; any other column is ignored."""
    lines = [(n, line) for n, line in _numbered_lines(path) if line.strip()]
    rows = [(n, _csv_fields(line, f"{path}:{n}")) for n, line in lines]
    header = _csv_header(rows[0][1]) if rows else None
    utterances = []
    for line_no, fields in rows[1:] if header else rows:
        where = f"{path}:{line_no}"
        if header:
            row = _header_row(fields, header, where)
        else:
            if len(fields) != 2:
                raise DataError(
                    f"{where}: expected 2 fields 'wav_path,transcript_or_txt_path', or a header "
                    f"row naming the columns (audio_filepath/path/file, text/sentence/transcript), "
                    f"got {len(fields)}"
                )
            row = {"audio_filepath": fields[0].strip(), "text": fields[1].strip()}
            row["text"] = _text_or_file(row["text"], path.parent, where)
        row["id"] = Path(row["audio_filepath"]).stem
        utterances.append(_utterance_from_row(row, path.parent, where))
    return utterances


def _csv_fields(line: str, where: str) -> list[str]:
    try:
        return next(csv.reader([line]))
    except csv.Error as err:
        raise DataError(f"{where}: not a CSV line ({err})") from None


def _csv_header(fields: list[str]) -> dict[str, int] | None:
    """{audio_filepath, text[, duration]: column} when ``fields`` is a header row, else None."""
    names = [f.strip().lower() for f in fields]
    audio = next((names.index(c) for c in CSV_AUDIO_COLUMNS if c in names), None)
    text = next((names.index(c) for c in CSV_TEXT_COLUMNS if c in names), None)
    if audio is None or text is None:
        return None
    header = {"audio_filepath": audio, "text": text}
    if "duration" in names:
        header["duration"] = names.index("duration")
    return header


def _header_row(fields: list[str], header: dict[str, int], where: str) -> dict:
    if len(fields) <= max(header.values()):
        raise DataError(
            f"{where}: {len(fields)} fields, the header names {max(header.values()) + 1}"
        )
    row = {key: fields[column].strip() for key, column in header.items()}
    if "duration" in row:
        try:
            row["duration"] = float(row["duration"]) if row["duration"] else None
        except ValueError:
            raise DataError(f"{where}: duration {row['duration']!r} is not a number") from None
        if row["duration"] is None:
            del row["duration"]
    return row


def _text_or_file(text: str, base: Path, where: str) -> str:
    """``text``, or the contents of the ``.txt`` file it names."""
    if not text.endswith(".txt"):
        return text
    text_path = _resolve(text, base, where)
    if not text_path.is_file():
        raise DataError(f"{where}: transcript file {text_path} does not exist")
    try:
        return text_path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise DataError(
            f"{where}: transcript file {text_path} is not valid UTF-8 (byte {err.start})"
        ) from None


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write JSONL with audio paths relative to the manifest's folder where possible (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as out:
            for utt in utterances:
                out.write(json.dumps(utt.to_json(relative_to=base), ensure_ascii=False) + "\n")

    write_file(path, write)


def take_minutes(utterances: Iterable[Utterance], minutes: float) -> list[Utterance]:
    """The shortest prefix whose audio reaches ``minutes`` (all of it when the total is shorter).

    The rule XLT-Synth uses for its train split, so the prefix of a larger build equals a
    smaller build. No shuffling: the order of the manifest decides. Durations missing from the
    manifest are read from the audio headers.
    """
    target = minutes * 60
    kept: list[Utterance] = []
    total = 0.0
    for utt in utterances:
        if total >= target:
            break
        if utt.duration is None:
            from xasr.data.audio import audio_duration

            duration = audio_duration(utt.audio_filepath)
        else:
            duration = utt.duration
        kept.append(utt)
        total += duration
    return kept


def _numbered_lines(path: Path):
    """Yield (line number, text without its line ending), failing with the line that is not
    UTF-8. Files as common tools write them read too: a UTF-8 byte-order mark (Excel,
    Notepad), CRLF line endings (Windows); blank lines are the readers' to skip."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        for line_no, raw in enumerate(_lines(handle, path), start=1):
            if line_no == 1:
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise DataError(
                        f"{path}:1: the manifest is UTF-16; re-encode it as UTF-8, e.g. "
                        "iconv -f utf-16 -t utf-8"
                    )
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
            try:
                yield line_no, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{line_no}: not valid UTF-8 (byte {err.start}); re-encode the "
                    "manifest as UTF-8, e.g. iconv -f latin1 -t utf-8"
                ) from None


def _lines(handle, path: Path):
    try:
        yield from handle
    except (OSError, EOFError) as err:  # a damaged .gz
        raise DataError(f"{path}: cannot be read ({err})") from None


def _resolve(path: str, base: Path, where: str) -> Path:
    if not path.strip() or "\x00" in path:
        raise DataError(f"{where}: {path!r} is not a file path")
    try:
        candidate = Path(path).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know
        raise DataError(f"{where}: cannot expand the home folder in {path!r}") from None
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def _is_duration(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an integer too large for a float
        return False


def _utterance_from_row(row: dict, base: Path, where: str) -> Utterance:
    text = row["text"]
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    duration = row.get("duration")
    if duration is not None and not _is_duration(duration):
        raise DataError(f"{where}: 'duration' must be a non-negative number, got {duration!r}")
    lang = row.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise DataError(f"{where}: 'lang' must be a string such as \"es\", got {lang!r}")
    if not isinstance(row["audio_filepath"], str):
        raise DataError(
            f"{where}: 'audio_filepath' must be a string, got {row['audio_filepath']!r}"
        )
    known = {"audio_filepath", "text", "duration", "lang", "id"}
    audio = _resolve(row["audio_filepath"], base, where)
    return Utterance(
        audio_filepath=audio,
        text=text,
        duration=float(duration) if duration is not None else None,
        lang=lang,
        id=str(row.get("id") or audio.stem),
        extra={k: v for k, v in row.items() if k not in known},
        source=where,
    )
