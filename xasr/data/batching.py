"""From manifests to padded batches: checked utterances, lhotse cuts, duration-bucketed sampling.

lhotse's ``DynamicBucketingSampler`` groups utterances of similar duration (less padding) under a
total-duration budget per batch, and in DDP hands every rank the same number of batches.

Several training sources (languages, or a target and replayed source-language speech) are mixed
by ``xasr.data.sources``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from xasr.data.audio import SAMPLE_RATE, load_audio
from xasr.data.manifest import Utterance
from xasr.data.sources import MetaBatches, meta_sampler, sources_sampler
from xasr.data.vocab import Vocab
from xasr.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What ``check_utterances`` did to each manifest; counts are logged, never silent."""

    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    resampled: Counter = field(default_factory=Counter)  # original rate -> count
    downmixed: int = 0
    silent: int = 0  # kept silent files (a warning); with skip_bad they are skipped instead

    def summary(self) -> str:
        parts = [f"{self.kept} utterances"]
        if self.silent:
            parts.append(f"{self.silent} silent (peak below {SILENCE_PEAK:g}), kept")
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} {why}" for why, n in self.skipped.items()))
        if self.resampled:
            parts.append(
                "resampled to 16 kHz: "
                + ", ".join(f"{n} at {rate} Hz" for rate, n in self.resampled.items())
            )
        if self.downmixed:
            parts.append(f"down-mixed {self.downmixed} multi-channel files")
        return "; ".join(parts)


# Peak amplitude under which a file counts as silent: -80 dBFS, about three steps of 16-bit PCM.
SILENCE_PEAK = 1e-4
# A manifest duration this far from the decoded audio means the line points at another file
# (or the file was cut): more than a second off and more than a quarter of the duration.
DURATION_SLACK_SECONDS, DURATION_SLACK_FRACTION = 1.0, 0.25


def check_utterances(
    utterances: list[Utterance], skip_bad: bool = False, require_text: bool = True
) -> tuple[list[Utterance], CheckReport]:
    """Decode each audio file once, fill in missing durations, and catch bad lines early.

    A missing, undecodable or empty audio file, samples that are not finite (NaN, inf), a
    decoded length far from the manifest's duration (``DURATION_SLACK_*``) and an empty
    transcript raise ``DataError`` naming the manifest line, unless ``skip_bad``: then the line
    is dropped and counted in the report. Silent audio (peak below ``SILENCE_PEAK``) is kept
    with a warning and a count, or with ``skip_bad`` dropped and counted. ``require_text``
    False accepts empty transcripts (untranscribed speech for self-supervised training).
    """
    report = CheckReport()
    kept = []
    first_silent = None
    for utt in utterances:
        try:
            info = _audio_info(utt)
            if require_text:
                check_transcript(utt)
            silent, duration = _check_samples(utt, info)
            if silent and skip_bad:
                raise DataError(
                    f"{utt.source}: audio file {utt.audio_filepath} is silent", reason="silent"
                )
        except DataError as err:
            if not skip_bad:
                raise
            report.skipped[err.reason or "other"] += 1
            log.warning("skipping %s", err)
            continue
        if silent:  # one warning for them all, below: a large corpus may hold many
            report.silent += 1
            first_silent = first_silent or utt
            log.debug("%s: audio file %s is silent", utt.source, utt.audio_filepath)
        if info.samplerate != SAMPLE_RATE:
            report.resampled[info.samplerate] += 1
        if info.channels > 1:
            report.downmixed += 1
        kept.append(Utterance(**{**utt.__dict__, "duration": duration}))  # the decoded length
    report.kept = len(kept)
    if report.silent:
        log.warning(
            "%d silent audio files (peak below %g) kept, the first %s: audio file %s is silent; "
            "--skip-bad drops them",
            report.silent,
            SILENCE_PEAK,
            first_silent.source,
            first_silent.audio_filepath,
        )
    if not kept:
        manifest = utterances[0].source.rsplit(":", 1)[0] if utterances else "the manifest"
        raise DataError(f"{manifest}: no usable utterances ({report.summary()})")
    return kept, report


def check_transcript(utt: Utterance) -> None:
    """``DataError`` for a transcript without a word: empty, or nothing but punctuation,
    symbols and invisible characters ("...", "?!"), which would train on a target that says
    nothing of the speech."""
    if not utt.text.strip():
        raise DataError(
            f"{utt.source}: empty transcript for {utt.audio_filepath}; "
            "remove the line or pass --skip-bad to drop such lines",
            reason="empty transcript",
        )
    if not any(char.isalnum() for char in utt.text):
        raise DataError(
            f"{utt.source}: transcript {utt.text!r} of {utt.audio_filepath} has no word (no "
            "letter or digit); remove the line, or pass --skip-bad to drop such lines",
            reason="transcript without a word",
        )


def _audio_info(utt: Utterance):
    if not utt.audio_filepath.is_file():
        raise DataError(
            f"{utt.source}: audio file {utt.audio_filepath} does not exist; "
            "fix the path (relative paths resolve against the manifest's folder)",
            reason="does not exist",
        )
    try:
        info = sf.info(str(utt.audio_filepath))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"{utt.source}: cannot decode audio file {utt.audio_filepath} ({err}); "
            "re-encode it as WAV or FLAC",
            reason="cannot decode",
        ) from None
    if info.frames == 0:
        raise DataError(
            f"{utt.source}: audio file {utt.audio_filepath} is empty (0 samples)", reason="is empty"
        )
    return info


def _check_samples(utt: Utterance, info) -> tuple[bool, float]:
    """Decode the file in blocks (a long recording never sits in memory whole): ``DataError``
    for samples that are not finite or a length far from the manifest's duration. Returns
    (silent, decoded seconds)."""
    frames, bad, peak = 0, 0, 0.0
    try:
        for block in sf.blocks(str(utt.audio_filepath), blocksize=1 << 18, dtype="float32"):
            frames += block.shape[0]
            finite = np.isfinite(block)
            bad += int(block.size - np.count_nonzero(finite))
            if block.size:
                peak = max(peak, float(np.abs(np.where(finite, block, 0.0)).max()))
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise DataError(
            f"{utt.source}: cannot decode audio file {utt.audio_filepath} ({err}); "
            "re-encode it as WAV or FLAC",
            reason="cannot decode",
        ) from None
    if bad:
        raise DataError(
            f"{utt.source}: audio file {utt.audio_filepath} has {bad} samples that are not "
            "finite (NaN or infinity); re-export it, or pass --skip-bad to drop such lines",
            reason="not finite",
        )
    decoded = frames / info.samplerate
    if utt.duration is not None:
        gap = abs(decoded - utt.duration)
        if gap > max(DURATION_SLACK_SECONDS, DURATION_SLACK_FRACTION * utt.duration):
            raise DataError(
                f"{utt.source}: the manifest says {utt.duration:.2f} s but audio file "
                f"{utt.audio_filepath} is {decoded:.2f} s long; the line may point at the wrong "
                "file: fix it, or pass --skip-bad to drop such lines",
                reason="duration differs",
            )
    return peak < SILENCE_PEAK, decoded


def source_prefix(index: int) -> str:
    """The start of the cut ids of the ``index``-th training source (none for the first): keeps
    the ids of several sources apart, and says which source a cut came from."""
    return f"src{index}-" if index else ""


def source_index(cut_id: str) -> int:
    """The training source a cut came from (``source_prefix``'s inverse): 0 for the first."""
    match = _SOURCE_PREFIX.match(cut_id)
    return int(match.group(1)) if match else 0


_SOURCE_PREFIX = re.compile(r"^src(\d+)-")


def to_cuts(utterances: list[Utterance], prefix: str = "") -> CutSet:
    """One lhotse cut per utterance; the language and manifest line travel as data.

    ``prefix`` starts every cut id (``source_prefix``).
    """
    cuts = []
    for i, utt in enumerate(utterances):
        cut_id = f"{prefix}{i:07d}-{utt.id}"
        duration = float(utt.duration)
        num_samples = round(duration * SAMPLE_RATE)
        recording = Recording(
            id=cut_id,
            sources=[AudioSource(type="file", channels=[0], source=str(utt.audio_filepath))],
            sampling_rate=SAMPLE_RATE,  # we load and resample ourselves (load_audio)
            num_samples=num_samples,
            duration=duration,
        )
        supervision = SupervisionSegment(
            id=cut_id,
            recording_id=cut_id,
            start=0.0,
            duration=duration,
            text=utt.text,
            language=utt.lang,
            custom={"source": utt.source},
        )
        cuts.append(
            MonoCut(
                id=cut_id,
                start=0.0,
                duration=duration,
                channel=0,
                recording=recording,
                supervisions=[supervision],
            )
        )
    return CutSet.from_cuts(cuts)


def make_sampler(
    cuts: CutSet | list[CutSet],
    max_batch_seconds: float,
    shuffle: bool,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    shares: list[float] | None = None,
    mixing: str = "temperature",
    batches: str = "mixed",
    meta: MetaBatches | None = None,
):
    """Duration-bucketed batches of ``cuts``, or of several sources mixed by their ``shares``
    of the audio seconds (``xasr.data.sources.sources_sampler``), or meta-transfer groups of
    batches (``meta``: ``xasr.data.sources.meta_sampler``)."""
    sources = list(cuts) if isinstance(cuts, (list, tuple)) else [cuts]
    if meta is not None:
        return meta_sampler(
            sources, meta, max_batch_seconds, seed, world_size=world_size, rank=rank
        )
    return sources_sampler(
        sources,
        shares or [1.0 / len(sources)] * len(sources),
        max_batch_seconds,
        shuffle,
        seed,
        world_size,
        rank,
        mixing,
        batches,
    )


class ResumableSampler(torch.utils.data.Sampler):
    """A batch sampler whose next iteration can start part-way into an epoch.

    Lightning restarts a resumed epoch from its first batch (lhotse's samplers have no length
    and plain DataLoaders no state), so a run killed at step k would train again on batches it
    had already seen. ``resume(epoch, batches)`` makes the next ``__iter__`` yield that epoch's
    batches from number ``batches`` on: the sampler is deterministic given its seed and epoch,
    so skipping the first ``batches`` batches (cut lists only, no audio is read) gives exactly
    the batches the killed run would have trained on next. ``set_epoch`` and the rest go to the
    wrapped sampler.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self._skip = 0

    def resume(self, epoch: int, batches: int) -> None:
        self.sampler.set_epoch(epoch)
        self._skip = batches

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        # lhotse's samplers are their own iterators and restart the epoch in __iter__: one
        # iter(), then next() only (``yield from`` would call iter() again).
        batches = iter(self.sampler)
        position = 0
        while (batch := next(batches, None)) is not None:
            if position >= skip:
                yield batch
            position += 1


class AsrDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch from the sampler) to padded tensors.

    Returns a dict: ``audio`` (batch, samples) float32, ``audio_lengths`` (batch,),
    ``targets`` (batch, tokens) int64 padded with 0, ``target_lengths`` (batch,), ``texts`` and
    ``langs`` (lists of str), ``sources`` (list of int: the training source of each line,
    ``source_index``). A tuple of CutSets (a meta-transfer step, ``MetaSampler``)
    gives ``{"supports": [batch, ...], "query": batch}``.
    """

    def __init__(self, vocab: Vocab, on_unknown: str = "error"):
        self.vocab = vocab
        self.on_unknown = on_unknown

    def __getitem__(self, cuts: CutSet | tuple) -> dict:
        if isinstance(cuts, tuple):
            *supports, query = (self[part] for part in cuts)
            return {"supports": supports, "query": query}
        paths, wheres, targets, texts, langs, sources = [], [], [], [], [], []
        for cut in cuts:
            sources.append(source_index(cut.id))
            sup = cut.supervisions[0]
            where = sup.custom.get("source", cut.id) if sup.custom else cut.id
            paths.append(cut.recording.sources[0].source)
            wheres.append(where)
            targets.append(self.vocab.encode(sup.text, self.on_unknown, where=where))
            texts.append(sup.text)
            langs.append(sup.language or "")
        audio, audio_lengths = load_batch_audio(paths, wheres)
        return {
            "audio": audio,
            "audio_lengths": audio_lengths,
            "targets": _pad([torch.tensor(t, dtype=torch.long) for t in targets]),
            "target_lengths": torch.tensor([len(t) for t in targets]),
            "texts": texts,
            "langs": langs,
            "sources": sources,
        }


def _pad(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)


def make_loader(
    cuts: CutSet | list[CutSet],
    vocab: Vocab,
    max_batch_seconds: float,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    world_size: int = 1,
    rank: int = 0,
    on_unknown: str = "error",
    shares: list[float] | None = None,
    mixing: str = "temperature",
    batches: str = "mixed",
    meta: MetaBatches | None = None,
) -> torch.utils.data.DataLoader:
    """Padded batches (``AsrDataset``) of ``cuts`` (or of several sources: ``make_sampler``).

    The loader's sampler is a ``ResumableSampler``: ``loader.sampler.resume(epoch, batches)``
    continues an epoch where a killed run left it.
    """
    sampler = ResumableSampler(
        make_sampler(
            cuts, max_batch_seconds, shuffle, seed, world_size, rank, shares, mixing, batches, meta
        )
    )
    return torch.utils.data.DataLoader(
        AsrDataset(vocab, on_unknown),
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Starting an iterator draws the workers' base seed; from its own generator, so the
        # global one (dropout, SpecAugment) does not depend on when epochs start, which a
        # resumed run must reproduce (xasr.train.checkpoint.RandomState).
        generator=torch.Generator().manual_seed(seed),
    )


def load_batch_audio(
    paths: list, where: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded audio (batch, samples) and lengths for a list of files."""
    audios = [load_audio(p, where=(where[i] if where else "")) for i, p in enumerate(paths)]
    return _pad([torch.from_numpy(a) for a in audios]), torch.tensor([len(a) for a in audios])


def count_unknown_chars(utterances: list[Utterance], vocab: Vocab) -> Counter:
    """Characters of the transcripts a character vocabulary lacks (empty for sentencepiece)."""
    unknown = Counter()
    if vocab.kind != "char":
        return unknown
    known = set(vocab.tokens)
    for utt in utterances:
        # NFC as CharVocab.encode does: a decomposed ü is the vocabulary's ü, not u + U+0308.
        for char in unicodedata.normalize("NFC", utt.text).replace(" ", "|"):
            if char not in known:
                unknown[char] += 1
    return unknown


__all__ = [
    "AsrDataset",
    "CheckReport",
    "ResumableSampler",
    "check_utterances",
    "count_unknown_chars",
    "load_batch_audio",
    "make_loader",
    "make_sampler",
    "source_prefix",
    "to_cuts",
]
