"""`xasr prepare`: a corpus as it was downloaded in, xasr's JSONL manifests (with ``lang``) out.

Common Voice, LibriSpeech, Multilingual LibriSpeech, FLEURS and VoxPopuli go through lhotse's
recipes (``lhotse.recipes.prepare_*``), which read the local layout; none of them downloads here
(VoxPopuli's recipe would fetch its annotation table: it must lie in the corpus folder).
Hugging Face ``datasets`` folders (``save_to_disk``) and folders of parquet files are read with
pyarrow (``xasr.data.hf_corpora``). Every transcript goes through ``TranscriptRules``; the
summary says what changed and what was dropped, with counts.

Layout written: ``OUT/<split>.jsonl`` (absolute paths to the corpus's own audio files), and
``OUT/audio/<split>/<id>.wav`` for audio that is not a whole file of its own (segments of long
recordings, audio stored inside parquet or arrow files).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from xasr.data.audio import SAMPLE_RATE, save_audio
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
) -> Prepared:
    """Read ``corpus`` (a name of ``CORPORA``) in ``corpus_dir``; write manifests under ``out``.

    ``lang``: the language to take (Common Voice's, MLS's, FLEURS's or VoxPopuli's code; the
    ``lang`` of every line); ``splits``: the splits to keep (default: all found).
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
            corpus_dir, lang, wanted, Path(work), out / "audio", audio_column, text_column
        )
        found = read(request)
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
        for split, utterances in found.items():
            normalise = TranscriptNormaliser(rules or TranscriptRules())
            lines = _normalised(utterances(), normalise, _language_code(corpus, lang))
            manifests[split] = out / f"{split}.jsonl"
            write_manifest(manifests[split], lines)
            kept[split] = len(lines)
            summary[split] = normalise.summary()
            log.info("%s %s: %d utterances; %s", corpus, split, len(lines), summary[split])
    return Prepared(manifests, kept, summary)


def _normalised(utterances, normalise, lang: str) -> list[Utterance]:
    kept = []
    for utt in utterances:
        text = normalise(utt.text)
        if text is not None:
            kept.append(Utterance(**{**utt.__dict__, "text": text, "lang": lang}))
    return kept


def _language_code(corpus: str, lang: str) -> str:
    """The ``lang`` written: ISO 639-1 where the corpus names languages otherwise."""
    if corpus == "fleurs":
        return lang.split("_")[0]  # es_419 -> es
    if corpus == "commonvoice":
        return lang.split("-")[0]  # zh-CN -> zh
    return lang


# --- lhotse recipes ------------------------------------------------------------------------


def _lhotse_splits(
    recipe: Callable[[], dict], corpus: str, corpus_dir: Path
) -> dict[str, dict[str, object]]:
    """Call a lhotse recipe, turning its failures (assertions, missing columns) into one line."""
    try:
        return recipe()
    except (AssertionError, KeyError, ValueError, OSError, IndexError) as err:
        raise DataError(
            f"lhotse's {corpus} recipe cannot read {corpus_dir} ({type(err).__name__}: {err}); "
            "check the folder's layout against the README"
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


def _commonvoice(req: Request):
    from lhotse.recipes import prepare_commonvoice

    lang_dir = req.corpus_dir / req.lang
    if not (lang_dir / "clips").is_dir():
        raise DataError(f"commonvoice: no folder {lang_dir}/clips (pass --lang as in the release)")
    splits = req.splits or [
        s for s in ("train", "dev", "test") if (lang_dir / f"{s}.tsv").is_file()
    ]
    manifests = _lhotse_splits(
        lambda: prepare_commonvoice(req.corpus_dir, req.work, languages=[req.lang], splits=splits),
        "commonvoice",
        req.corpus_dir,
    )
    return _cut_reader(manifests.get(req.lang, {}), req)


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
    if not opus and not (req.corpus_dir / f"mls_{name}").is_dir():
        raise DataError(f"mls: no folder mls_{name} (or mls_{name}_opus) in {req.corpus_dir}")
    manifests = _lhotse_splits(
        lambda: prepare_mls(req.corpus_dir, req.work, opus=opus), "mls", req.corpus_dir
    )
    return _cut_reader(manifests.get(name, {}), req)


def _fleurs(req: Request):
    from lhotse.recipes import prepare_fleurs

    root, lang = req.corpus_dir, req.lang
    if not (root / lang).is_dir() or not (root / "metadata" / lang).is_dir():
        raise DataError(
            f"fleurs: expected {root / lang}/{{train,dev,test}}/*.wav and "
            f"{root / 'metadata' / lang}/{{train,dev,test}}.tsv"
        )
    manifests = _lhotse_splits(
        lambda: prepare_fleurs(root, req.work, languages=[lang]), "fleurs", root
    )
    return _cut_reader(manifests.get(lang, {}), req)


def _voxpopuli(req: Request):
    from lhotse.recipes import prepare_voxpopuli

    table = f"asr_{req.lang}.tsv.gz"
    if not (req.corpus_dir / table).is_file():
        raise DataError(
            f"voxpopuli: {table} (VoxPopuli's annotations) must be in {req.corpus_dir}; "
            "lhotse's recipe would download it, and xasr does not download: fetch it "
            "elsewhere and copy it there"
        )
    shutil.copy(req.corpus_dir / table, req.work / table)  # where the recipe looks first
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


# name -> (reader, default language); the reader returns {split: () -> [Utterance]}
CORPORA: dict[str, tuple[Callable, str | None]] = {
    "commonvoice": (_commonvoice, None),
    "librispeech": (_librispeech, "en"),
    "mls": (_mls, None),
    "fleurs": (_fleurs, None),
    "voxpopuli": (_voxpopuli, None),
    "hf": (_hf, None),
}
