"""`xasr prepare`: a corpus as it was downloaded in, xasr's JSONL manifests (with ``lang``) out.

Common Voice, LibriSpeech, Multilingual LibriSpeech, FLEURS and VoxPopuli go through lhotse's
recipes (``lhotse.recipes.prepare_*``), which read the local layout; none of them downloads here
(VoxPopuli's recipe would fetch its annotation table: it must lie in the corpus folder).
Fish Fillets NG's Czech voice acting (Debian packages) goes through ``xasr.data.fillets``.
Hugging Face ``datasets`` folders (``save_to_disk``) and folders of parquet files are read with
pyarrow (``xasr.data.hf_corpora``). Every transcript goes through ``TranscriptRules``; the
summary says what changed and what was dropped, with counts.

Layout written: ``OUT/<split>.jsonl`` (absolute paths to the corpus's own audio files), and
``OUT/audio/<split>/<id>.wav`` for audio that is not a whole file of its own (segments of long
recordings, audio stored inside parquet or arrow files).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xasr.data.audio import SAMPLE_RATE, save_audio
from xasr.data.fillets import HeldOut, fillets_reader
from xasr.data.manifest import Utterance, write_manifest
from xasr.data.transcripts import TranscriptNormaliser, TranscriptRules
from xasr.errors import DataError
from xasr.io import output_dir

log = logging.getLogger(__name__)

# ISO 639-1 codes of MLS's languages, whose folders are named mls_<language>[_opus]
MLS_LANGUAGES = {
    "en": "english",
    "de": "german",
    "nl": "dutch",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "pl": "polish",
}


@dataclass(frozen=True)
class Prepared:
    """What ``prepare_corpus`` wrote: manifests by split, and per split the kept count and the
    normaliser's summary."""

    manifests: dict[str, Path]
    kept: dict[str, int]
    summary: dict[str, str]
    # files the reader could not pair with a transcript, before any split (why -> files)
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What a corpus reader is asked for; ``work`` is a scratch folder for lhotse's manifests,
    ``audio_dir`` where audio that is not a file of its own is written."""

    corpus_dir: Path
    lang: str
    splits: list[str] | None
    work: Path
    audio_dir: Path
    audio_column: str = "audio"
    text_column: str = "text"
    # rows of the corpus's own tables per split, where a reader knows them: lines lhotse's
    # recipe skipped (audio missing or unreadable) are counted from the difference
    source_rows: dict[str, int] = field(default_factory=dict)
    # corpora without splits of their own (fillets): how much goes to dev and test
    held_out: HeldOut = field(default_factory=HeldOut)
    skipped: Counter = field(default_factory=Counter)  # why -> files the reader dropped

    def keep(self, split: str) -> bool:
        return not self.splits or split in self.splits


def prepare_corpus(
    corpus: str,
    corpus_dir: str | Path,
    out: str | Path,
    lang: str | None = None,
    splits: Iterable[str] | None = None,
    rules: TranscriptRules | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
    held_out: HeldOut | None = None,
) -> Prepared:
    """Read ``corpus`` (a name of ``CORPORA``) in ``corpus_dir``; write manifests under ``out``.

    ``lang``: the language to take (Common Voice's, MLS's, FLEURS's or VoxPopuli's code; the
    ``lang`` of every line); ``splits``: the splits to keep (default: all found);
    ``held_out``: the dev and test shares of a corpus without splits of its own (fillets).
    """
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise DataError(f"corpus folder {corpus_dir} does not exist")
    out = output_dir(out)
    wanted = list(splits) if splits else None
    read, default_lang = CORPORA[corpus]
    lang = lang or default_lang
    if lang is None:
        raise DataError(f"{corpus}: pass --lang (the corpus's language code, e.g. es)")
    with tempfile.TemporaryDirectory(prefix="xasr-lhotse-") as work:
        request = Request(
            corpus_dir, lang, wanted, Path(work), out / "audio", audio_column, text_column,
            held_out=held_out or HeldOut(),
        )  # fmt: skip
        found = read(request)
        if request.skipped:
            log.info("%s: skipped %s", corpus,
                     "; ".join(f"{n} ({why})" for why, n in request.skipped.items()))  # fmt: skip
        if wanted:
            missing = [s for s in wanted if s not in found]
            if missing:
                raise DataError(
                    f"{corpus} in {corpus_dir}: no split {', '.join(missing)}; found "
                    f"{', '.join(found) or 'none'}"
                )
        if not found:
            raise DataError(f"{corpus} in {corpus_dir}: no split found")
        manifests, kept, summary = {}, {}, {}
        code = language_code(corpus, lang)
        for split, utterances in found.items():
            normalise = TranscriptNormaliser(rules or TranscriptRules(), code)
            read = utterances()
            if split in request.source_rows and request.source_rows[split] > len(read):
                missing = request.source_rows[split] - len(read)
                normalise.dropped["audio missing or unreadable (skipped by lhotse)"] += missing
            lines = _normalised(read, normalise, code)
            manifests[split] = out / f"{split}.jsonl"
            write_manifest(manifests[split], lines)
            kept[split] = len(lines)
            summary[split] = normalise.summary()
            log.info("%s %s: %d utterances; %s", corpus, split, len(lines), summary[split])
    return Prepared(manifests, kept, summary, dict(request.skipped))


def _normalised(utterances, normalise, lang: str) -> list[Utterance]:
    kept = []
    for utt in utterances:
        text = normalise(utt.text)
        if text is not None:
            kept.append(Utterance(**{**utt.__dict__, "text": text, "lang": lang}))
    return kept


# Corpus language codes whose first part is not the ISO 639-1 code xasr writes (Mandarin and
# Cantonese as XLT-Synth names them: cmn, yue)
LANGUAGE_CODES = {
    "zh-CN": "cmn", "zh-TW": "cmn", "zh-HK": "yue", "cmn": "cmn", "yue": "yue",
    "cmn_hans_cn": "cmn", "yue_hant_hk": "yue", "fil": "tl",
}  # fmt: skip


def language_code(corpus: str, lang: str) -> str:
    """The ``lang`` written: es_419 -> es, pt-BR -> pt, zh-CN -> cmn, zh-HK -> yue."""
    if lang in LANGUAGE_CODES:
        return LANGUAGE_CODES[lang]
    first = lang.replace("-", "_").split("_")[0]
    return LANGUAGE_CODES.get(first, first)


# --- lhotse recipes ------------------------------------------------------------------------


def _lhotse_splits(
    recipe: Callable[[], dict], corpus: str, corpus_dir: Path
) -> dict[str, dict[str, object]]:
    """Call a lhotse recipe: its failures (assertions, missing columns, undecodable audio in
    a worker) become one line, and what it prints goes to stderr, not into prepare's table."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return recipe()
    except Exception as err:  # noqa: BLE001 - recipes raise anything, from their workers too
        reason = (str(err).strip().splitlines() or [""])[0]
        raise DataError(
            f"lhotse's {corpus} recipe cannot read {corpus_dir} ({type(err).__name__}: "
            f"{reason}); check the folder's layout against the README"
        ) from None


def _cut_reader(manifests: dict, req: Request) -> dict[str, Callable[[], list[Utterance]]]:
    """{split: () -> utterances} for lhotse's {split: {recordings, supervisions}}."""
    return {
        split: (lambda parts=parts, split=split: list(_utterances_of(parts, req.audio_dir / split)))
        for split, parts in manifests.items()
        if req.keep(split) and len(parts["supervisions"])  # VoxPopuli lists empty splits
    }


def _utterances_of(parts: dict, audio_dir: Path):
    """One utterance per supervision; audio that is not a whole file is written as a WAV."""
    from lhotse import CutSet

    cuts = CutSet.from_manifests(
        recordings=parts["recordings"], supervisions=parts["supervisions"]
    ).trim_to_supervisions(keep_overlapping=False)
    for cut in cuts:
        recording = cut.recording
        whole = cut.start < 1e-3 and abs(cut.duration - recording.duration) < 1e-2
        sources = recording.sources
        if whole and len(sources) == 1 and sources[0].type == "file":
            path = Path(sources[0].source)
        else:
            audio_dir.mkdir(parents=True, exist_ok=True)
            path = audio_dir / f"{cut.id}.wav"
            audio = cut.resample(SAMPLE_RATE).load_audio().mean(axis=0)
            save_audio(path, audio)
        supervision = cut.supervisions[0]
        yield Utterance(
            audio_filepath=path.resolve(),
            text=supervision.text or "",
            duration=cut.duration,
            id=cut.id,
        )


# The columns lhotse's Common Voice recipe reads; older releases lack some ("accents" was
# "accent" up to release 7, "variant" came with release 13): added empty where missing.
COMMONVOICE_COLUMNS = ("client_id", "path", "sentence", "age", "gender", "accents", "variant")


def _commonvoice(req: Request):
    from lhotse.recipes import prepare_commonvoice

    lang_dir = req.corpus_dir / req.lang
    if not (lang_dir / "clips").is_dir():
        raise DataError(f"commonvoice: no folder {lang_dir}/clips (pass --lang as in the release)")
    splits = req.splits or [
        s for s in ("train", "dev", "test") if (lang_dir / f"{s}.tsv").is_file()
    ]
    root = req.work / "commonvoice"
    (root / req.lang).mkdir(parents=True)
    (root / req.lang / "clips").symlink_to(lang_dir.resolve() / "clips")
    for split in splits:
        if (lang_dir / f"{split}.tsv").is_file():
            req.source_rows[split] = _complete_tsv(
                lang_dir / f"{split}.tsv", root / req.lang / f"{split}.tsv"
            )
    jobs = max(1, len(os.sched_getaffinity(0)))
    manifests = _lhotse_splits(
        lambda: prepare_commonvoice(
            root, req.work, languages=[req.lang], splits=splits, num_jobs=jobs
        ),
        "commonvoice",
        req.corpus_dir,
    )
    return _cut_reader(manifests.get(req.lang, {}), req)


def _complete_tsv(source: Path, target: Path) -> int:
    """Copy a Common Voice table with the columns lhotse reads added (empty) where this
    release lacks them; returns its rows."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = list(rows[0].keys()) if rows else []
    if "accent" in columns and "accents" not in columns:  # releases up to 7
        for row in rows:
            row["accents"] = row["accent"]
    columns += [c for c in COMMONVOICE_COLUMNS if c not in columns]
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, columns, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", restval=""
        )
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _librispeech(req: Request):
    from lhotse.recipes import prepare_librispeech

    parts = req.splits or "auto"
    manifests = _lhotse_splits(
        lambda: prepare_librispeech(req.corpus_dir, dataset_parts=parts, output_dir=req.work),
        "librispeech",
        req.corpus_dir,
    )
    return _cut_reader(manifests, req)


def _mls(req: Request):
    from lhotse.recipes import prepare_mls

    if req.lang not in MLS_LANGUAGES:
        raise DataError(f"mls: --lang {req.lang!r}; MLS has {', '.join(MLS_LANGUAGES)}")
    name = MLS_LANGUAGES[req.lang]
    opus = (req.corpus_dir / f"mls_{name}_opus").is_dir()
    folder = req.corpus_dir / (f"mls_{name}_opus" if opus else f"mls_{name}")
    if not folder.is_dir():
        raise DataError(f"mls: no folder mls_{name} (or mls_{name}_opus) in {req.corpus_dir}")
    # The recipe reads every mls_* folder of its root: give it a root holding this one only.
    root = req.work / "mls"
    root.mkdir()
    (root / folder.name).symlink_to(folder.resolve())
    manifests = _lhotse_splits(lambda: prepare_mls(root, req.work, opus=opus), "mls", folder)
    return _cut_reader(manifests.get(name, {}), req)


def _fleurs(req: Request):
    """lhotse's layout (``<lang>/<split>/*.wav``, ``metadata/<lang>/<split>.tsv``, as
    ``lhotse.download_fleurs`` writes it) or the released one (``<lang>/audio/<split>/*.wav``,
    ``<lang>/<split>.tsv``), which is linked into lhotse's layout."""
    from lhotse.recipes import prepare_fleurs

    root, lang = req.corpus_dir, req.lang
    released = (root / lang / "audio").is_dir() and any((root / lang).glob("*.tsv"))
    if released:
        root = req.work / "fleurs"
        (root / "metadata" / lang).mkdir(parents=True)
        (root / lang).mkdir()
        for split in ("train", "dev", "test"):
            (root / lang / split).symlink_to((req.corpus_dir / lang / "audio" / split).resolve())
            (root / "metadata" / lang / f"{split}.tsv").symlink_to(
                (req.corpus_dir / lang / f"{split}.tsv").resolve()
            )
    elif not (root / lang).is_dir() or not (root / "metadata" / lang).is_dir():
        raise DataError(
            f"fleurs: expected {root / lang}/audio/{{train,dev,test}}/*.wav with "
            f"{root / lang}/{{train,dev,test}}.tsv (as released), or lhotse's layout "
            f"{root / lang}/{{train,dev,test}}/*.wav with metadata/{lang}/{{train,dev,test}}.tsv"
        )
    for split in ("train", "dev", "test"):
        table = root / "metadata" / lang / f"{split}.tsv"
        if table.is_file():
            req.source_rows[split] = sum(1 for line in table.open(encoding="utf-8") if line.strip())
    manifests = _lhotse_splits(
        lambda: prepare_fleurs(root, req.work, languages=[lang]), "fleurs", req.corpus_dir
    )
    return _cut_reader(manifests.get(lang, {}), req)


def _voxpopuli(req: Request):
    from lhotse.recipes import prepare_voxpopuli

    table = f"asr_{req.lang}.tsv.gz"
    # in DIR, or where VoxPopuli's own get_asr_data script puts it
    places = [req.corpus_dir / table, req.corpus_dir / "transcribed_data" / req.lang / table]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise DataError(
            f"voxpopuli: {table} (VoxPopuli's annotations) must be in {req.corpus_dir}; "
            "lhotse's recipe would download it, and xasr does not download: fetch it "
            "elsewhere and copy it there"
        )
    shutil.copy(found, req.work / table)  # where the recipe looks before downloading
    manifests = _lhotse_splits(
        lambda: prepare_voxpopuli(req.corpus_dir, req.work, task="asr", lang=req.lang),
        "voxpopuli",
        req.corpus_dir,
    )
    return _cut_reader(manifests, req)


def _hf(req: Request):
    from xasr.data.hf_corpora import read_hf_folder

    return read_hf_folder(
        req.corpus_dir, req.splits, req.audio_column, req.text_column, req.audio_dir
    )


def _fillets(req: Request):
    found = fillets_reader(req.corpus_dir, req.lang, req.audio_dir, req.held_out, req.skipped)
    return {split: read for split, read in found.items() if req.keep(split)}


# name -> (reader, default language); the reader returns {split: () -> [Utterance]}
CORPORA: dict[str, tuple[Callable, str | None]] = {
    "commonvoice": (_commonvoice, None),
    "librispeech": (_librispeech, "en"),
    "mls": (_mls, None),
    "fleurs": (_fleurs, None),
    "voxpopuli": (_voxpopuli, None),
    "hf": (_hf, None),
    "fillets": (_fillets, "cs"),
}
