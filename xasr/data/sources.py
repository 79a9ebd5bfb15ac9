"""Training from several sources: how much of the training audio each one gives, and the
batch samplers that mix them.

A source is one training manifest with an optional weight. Its share of the training audio
seconds is decided once (``source_shares``):

* ``weights``: share_i = w_i / sum(w) (fixed partitions, as the meta-transfer code's);
* ``temperature``: share_i proportional to n_i^(1/T), n_i its seconds (T = 1: as much as it
  has; larger T: flatter, the multilingual toolkits' up-sampling of small languages);
* ``balanced``: one batch of each source per step, so every source gives the same seconds.

Batches are ``mixed`` (any source in any batch) or of one ``language`` (one source per batch,
the same source on every DDP rank at a step, so each step is one language's update).

An epoch is one pass over the first source; the others repeat, re-shuffled, as long as it
lasts, so a small first source (a target with replay) is seen once per epoch while a large
second one is drawn from as its share asks. Everything is deterministic given the seed and the
epoch, which is what ``ResumableSampler`` needs to continue an epoch after a kill.

Replay (adapting without forgetting) is two sources: the target with weight 1 - f and the
source language with weight f, mixed batches.

Meta-transfer learning draws its batches otherwise (``MetaSampler``): each step is one support
batch per task and one query batch of the target.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler, ZipSampler

from xasr import checks
from xasr.config import MIXINGS, SOURCE_BATCHES
from xasr.errors import DataError

# xasr's cut sets are manifests read into memory on purpose (checked line by line first); lhotse
# warns that an eager set gains nothing from its lazy sampler, on every sampler built.
warnings.filterwarnings(
    "ignore", message="You are using DynamicBucketingSampler with an eagerly read CutSet"
)


@dataclass(frozen=True)
class Source:
    """One training manifest; ``weight`` is used by ``weights`` mixing (None: not given)."""

    manifest: str
    weight: float | None = None

    def __post_init__(self):
        if self.weight is not None:
            checks.number(f"the weight of {self.manifest}", self.weight, above=0)


def as_sources(manifests, weights=None) -> list[Source]:
    """``manifests``: one path or a list; ``weights``: None or one number per manifest."""
    if isinstance(manifests, Source):
        return [manifests]
    if not isinstance(manifests, (list, tuple)):
        manifests = [manifests]
    manifests = [m if isinstance(m, Source) else Source(str(m)) for m in manifests]
    if weights is None:
        return manifests
    if len(weights) != len(manifests):
        raise DataError(
            f"--weights gives {len(weights)} weights for {len(manifests)} --train manifests; "
            "give one per manifest"
        )
    return [Source(s.manifest, float(w)) for s, w in zip(manifests, weights)]


def source_shares(
    seconds: list[float], mixing: str, weights: list[float | None], temperature: float
) -> list[float]:
    """Each source's share of the training audio seconds (they sum to 1).

    ``seconds``: each source's total duration; ``weights``: each source's weight (used by
    ``weights`` mixing, where every source must have one)."""
    checks.one_of("mixing", mixing, MIXINGS)
    if len(seconds) == 1:
        return [1.0]
    if mixing == "weights":
        missing = [i for i, w in enumerate(weights) if w is None]
        if missing:
            raise DataError(
                "mixing 'weights' needs a weight for every training manifest (--weights W ...); "
                f"manifest {missing[0] + 1} has none"
            )
        raw = list(weights)
    elif mixing == "temperature":
        checks.number("temperature", temperature, above=0)
        raw = [s ** (1.0 / temperature) for s in seconds]
    else:
        raw = [1.0] * len(seconds)
    total = sum(raw)
    return [r / total for r in raw]


def utterance_probabilities(sources: list[CutSet], shares: list[float]) -> list[float]:
    """The chance that an utterance of the mixed stream comes from each source, so that each
    gives its share of the audio seconds in expectation.

    Drawing source i with probability p_i, the expected seconds of source i are p_i m_i (m_i
    its mean duration), so p_i is proportional to share_i / m_i. (Weighting by utterances
    alone would over-sample sources with longer utterances.)
    """
    means = [sum(c.duration for c in cuts) / len(cuts) for cuts in sources]
    raw = [share / mean for share, mean in zip(shares, means)]
    total = sum(raw)
    return [r / total for r in raw]


def mix_sources(sources: list[CutSet], shares: list[float], seed: int) -> CutSet:
    """One epoch of mixed training cuts (lazy): every cut of the first source once,
    interleaved at random with cuts of the others (``utterance_probabilities``), which repeat
    re-shuffled; the epoch ends with the first source."""
    rng = random.Random(seed)
    probabilities = utterance_probabilities(sources, shares)
    first, *others = sources
    return CutSet.mux(
        first.shuffle(rng),
        *(cuts.shuffle(rng).repeat() for cuts in others),
        weights=probabilities,
        stop_early=True,  # stop when the first source runs out: the others are infinite
        seed=seed,
    )


class MixedSourcesSampler(DynamicBucketingSampler):
    """``DynamicBucketingSampler`` over ``mix_sources(sources, shares, seed + epoch)``.

    One bucketing sampler over the mixed stream, rather than lhotse's ``ZipSampler`` of one
    sampler per source with split budgets: a split budget packs each part to a different fill
    (a 7 s budget of 3 s utterances holds 6 s), so the shares would drift. Here each source's
    share of an epoch's seconds is as asked in expectation; one batch's varies, as batches
    group utterances of similar duration from all sources. Lightning calls ``set_epoch`` at
    every epoch start (also after a resume), which re-mixes.
    """

    def __init__(self, sources: list[CutSet], shares: list[float], seed: int = 0, **kwargs):
        self._mix = (sources, shares)
        self._base_seed = seed
        super().__init__(mix_sources(sources, shares, seed), seed=seed, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.cuts = (mix_sources(*self._mix, self._base_seed + epoch),)


RESTART_EPOCHS = 1 << 30  # epoch numbers of repeated passes start here


class OneSourcePerBatchSampler:
    """Batches of one source each: the source of each batch drawn by its share (or in turn,
    ``in_turn``), with one bucketing sampler per source underneath.

    The draw uses its own generator seeded with seed + epoch, the same on every rank, so all
    ranks train on the same source at a step (each on its own batches of it). The first
    source's sampler ends the epoch; the others restart when they run out.

    A source is drawn with probability proportional to share_i / b_i, b_i the mean seconds of
    its batches (counted once over one pass of its sampler: cut lists only, no audio), so that
    it gives its share of the seconds in expectation even when its batches are not full (a
    small source's last batch of every pass is partial).
    """

    def __init__(
        self,
        samplers: list,
        shares: list[float],
        seed: int,
        batch_seconds: list[float],
        in_turn: bool = False,
    ):
        """``batch_seconds``: each source's mean batch seconds (``mean_batch_seconds``),
        measured with one process's sampler settings so that every DDP rank draws alike."""
        self.samplers, self.seed, self.in_turn = samplers, seed, in_turn
        raw = [share / b for share, b in zip(shares, batch_seconds)]
        self.draw_weights = [r / sum(raw) for r in raw]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[CutSet]:
        rng = random.Random(self.seed + self.epoch)
        streams = [iter(s) for s in self.samplers]
        restarts = [0] * len(streams)
        step = 0
        while True:
            if self.in_turn:
                i = step % len(streams)
            else:
                i = rng.choices(range(len(streams)), weights=self.draw_weights)[0]
            batch = next(streams[i], None)
            if batch is None:
                if i == 0:
                    return
                restarts[i] += 1  # a fresh order for each pass over a repeating source,
                # from seeds no plain epoch uses (epoch 0's second pass is not epoch 1's first)
                self.samplers[i].set_epoch(RESTART_EPOCHS + self.epoch * 10_000 + restarts[i])
                streams[i] = iter(self.samplers[i])
                batch = next(streams[i], None)
                if batch is None:
                    return
            yield batch
            step += 1


@dataclass(frozen=True)
class MetaBatches:
    """How meta-transfer learning batches its sources (``TrainConfig``'s keys of the same
    names): ``k_train`` utterances per support batch, ``k_valid`` per query batch, and which
    sources are tasks (``all``, the target included, or ``sources``: all but the first)."""

    k_train: int
    k_valid: int
    tasks: str = "all"

    def task_indices(self, n_sources: int) -> list[int]:
        indices = list(range(n_sources)) if self.tasks == "all" else list(range(1, n_sources))
        if not indices:
            raise DataError(
                "meta-transfer with --meta-tasks sources needs a source besides the target: "
                "give a second --train manifest, or use --meta-tasks all"
            )
        return indices


class MetaSampler:
    """Meta-transfer batches: each item is a tuple of CutSets, one support batch per task and
    then the query batch of the target (the first source), ``(S_1, ..., S_n, Q)``.

    An epoch is one pass over the target's query batches; the support samplers repeat without
    end, each pass re-shuffled from seeds no plain epoch uses. Deterministic given the seed and
    the epoch (``ResumableSampler`` can skip into an epoch); under DDP every rank draws its own
    share of each sampler (lhotse's rank split), so a step averages the ranks' meta-gradients.

    With the target among the tasks, its support and query batches are drawn independently,
    so one step's support and query batches can share an utterance (as in the public code,
    which samples both from the same set). Source shares (``--mixing``, ``--weights``) do not
    apply: every task gives one support batch per step.
    """

    def __init__(self, query, supports: list):
        self.query, self.supports = query, supports
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.query.set_epoch(epoch)

    def _support_epoch(self, task: int, restarts: int) -> int:
        """The epoch number of task ``task``'s pass ``restarts`` of this epoch: distinct for
        every (epoch, task, pass) below 2^20 tasks and passes, and from every plain epoch."""
        return RESTART_EPOCHS + (self.epoch << 40) + (task << 20) + restarts

    def __iter__(self) -> Iterator[tuple]:
        # Every iteration of an epoch starts the supports afresh: the same batches each time.
        for i, sampler in enumerate(self.supports):
            sampler.set_epoch(self._support_epoch(i, 0))
        streams = [iter(s) for s in self.supports]
        restarts = [0] * len(streams)
        for query in self.query:
            supports = []
            for i, sampler in enumerate(self.supports):
                batch = next(streams[i], None)
                if batch is None:  # this task's pass ended: the next, in a fresh order
                    restarts[i] += 1
                    sampler.set_epoch(self._support_epoch(i, restarts[i]))
                    streams[i] = iter(sampler)
                    batch = next(streams[i])
                supports.append(batch)
            yield (*supports, query)


def meta_sampler(
    sources: list[CutSet], meta: MetaBatches, max_batch_seconds: float, seed: int, **rank
) -> MetaSampler:
    """``MetaSampler`` over ``sources`` (the first is the target): batches of k utterances,
    bucketed by duration, never over ``max_batch_seconds``; ``rank``: world_size and rank."""
    check_longest(sources, max_batch_seconds)
    common = {"max_duration": max_batch_seconds, "shuffle": True, "seed": seed, **rank}
    common["drop_last"] = False
    query = bucketing_sampler(sources[0], max_cuts=meta.k_valid, **common)
    supports = [
        bucketing_sampler(sources[i], max_cuts=meta.k_train, **common)
        for i in meta.task_indices(len(sources))
    ]
    return MetaSampler(query, supports)


def mean_batch_seconds(sampler) -> float:
    """The mean audio seconds of a sampler's batches over its epoch 0 (left at epoch 0)."""
    sampler.set_epoch(0)
    seconds = [sum(cut.duration for cut in batch) for batch in sampler]
    sampler.set_epoch(0)
    return sum(seconds) / max(len(seconds), 1) or 1.0


def check_longest(sources: list[CutSet], max_batch_seconds: float, how: str = "") -> None:
    for cuts in sources:
        longest = max((cut.duration for cut in cuts), default=0.0)
        if longest > max_batch_seconds:
            raise DataError(
                f"an utterance of {longest:.1f} s is longer than the batch budget of "
                f"{max_batch_seconds:g} s{how}; raise --batch-seconds (max_batch_seconds) or cut "
                "the audio"
            )


def num_buckets(n_cuts: int) -> int:
    """Duration buckets for a set of ``n_cuts``: 2 to 10, about 20 cuts each."""
    return min(10, max(2, n_cuts // 20))


def bucketing_sampler(
    cuts: CutSet, repeat: bool = False, **common
) -> DynamicBucketingSampler | SimpleCutSampler:
    """lhotse's duration-bucketing sampler, or plain batches for a set too small to bucket;
    ``repeat``: over the cuts repeated without end."""
    common = {"num_buckets": num_buckets(len(cuts)), **common}
    too_few = len(cuts) < common["num_buckets"]
    if repeat:
        cuts = cuts.repeat()
    if too_few:
        # lhotse's bucketing needs at least two cuts (one per bucket): a one-utterance set
        # (a smoke test, a single enrolment recording) gets plain batches.
        del common["num_buckets"]
        return SimpleCutSampler(cuts, **common)
    return DynamicBucketingSampler(cuts, **common)


def sources_sampler(
    sources: list[CutSet],
    shares: list[float],
    max_batch_seconds: float,
    shuffle: bool,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    mixing: str = "temperature",
    batches: str = "mixed",
):
    """The batch sampler of one or several sources (module docstring), rank-aware."""
    checks.one_of("source_batches", batches, SOURCE_BATCHES)
    check_longest(sources, max_batch_seconds)
    common = {
        "max_duration": max_batch_seconds,
        "shuffle": shuffle,
        "seed": seed,
        "world_size": world_size,
        "rank": rank,
        "drop_last": False,
    }
    if len(sources) == 1:
        return bucketing_sampler(sources[0], **common)
    if batches == "language":
        # The draw's weights must not depend on the rank: measure batches as one process.
        alone = {**common, "world_size": 1, "rank": 0}
        return OneSourcePerBatchSampler(
            [bucketing_sampler(cuts, **common) for cuts in sources],
            shares,
            seed,
            [mean_batch_seconds(bucketing_sampler(c, **alone)) for c in sources],
            in_turn=mixing == "balanced",
        )
    if mixing == "balanced":
        # One sub-batch of each source per step, each with its part of the budget; the others
        # repeat, so the zip ends with the first source.
        part = {**common, "max_duration": max_batch_seconds / len(sources)}
        check_longest(sources, part["max_duration"], f" (split {len(sources)} ways: balanced)")
        samplers = [bucketing_sampler(sources[0], **part)]
        samplers += [bucketing_sampler(cuts, repeat=True, **part) for cuts in sources[1:]]
        return ZipSampler(*samplers, merge_batches=True)
    # Buckets as for the first source alone (an epoch is one pass over it).
    return MixedSourcesSampler(sources, shares, num_buckets=num_buckets(len(sources[0])), **common)
