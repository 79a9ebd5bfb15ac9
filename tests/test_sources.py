"""Training from several sources: shares, mixing proportions, one-source batches, replay as two
weighted sources (identical batches to the replay sampler it replaced), reproducibility."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from xasr.data.batching import check_utterances, make_loader, make_sampler, source_prefix, to_cuts
from xasr.data.manifest import Utterance, read_manifest
from xasr.data.sources import Source, as_sources, source_shares
from xasr.data.vocab import CharVocab
from xasr.errors import DataError, XasrError

DATA = Path(__file__).parent / "data"


def fake_cuts(n: int, low: float, high: float, seed: int, prefix: str = ""):
    """Cuts of durations uniform in [low, high] s; no audio is read by the sampler."""
    rng = random.Random(seed)
    utts = [
        Utterance(Path(f"/nowhere/{prefix}{i}.wav"), "a", rng.uniform(low, high), id=str(i))
        for i in range(n)
    ]
    return to_cuts(utts, prefix=prefix)


def source_of(cut) -> int:
    return int(cut.id[3:].split("-")[0]) if cut.id.startswith("src") else 0


def three_sources():
    # different sizes and utterance lengths: a share of utterances would be far off
    return [
        fake_cuts(60, 1.0, 3.0, 0, source_prefix(0)),
        fake_cuts(30, 3.0, 9.0, 1, source_prefix(1)),
        fake_cuts(12, 1.0, 2.0, 2, source_prefix(2)),
    ]


def seconds_by_source(sampler, epochs: int):
    seconds, batches, pure = Counter(), 0, 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # as Lightning does at every epoch start
        for batch in sampler:
            batches += 1
            pure += len({source_of(cut) for cut in batch}) == 1
            for cut in batch:
                seconds[source_of(cut)] += cut.duration
    total = sum(seconds.values())
    return [seconds[i] / total for i in range(3)], pure, batches


def test_shares_by_weights_temperature_and_balance():
    seconds = [900.0, 100.0]
    assert source_shares(seconds, "weights", [3.0, 1.0], 1.0) == [0.75, 0.25]
    assert source_shares(seconds, "temperature", [None, None], 1.0) == [0.9, 0.1]
    # T = 2: square roots, 30 : 10
    assert source_shares(seconds, "temperature", [None, None], 2.0) == pytest.approx([0.75, 0.25])
    assert source_shares(seconds, "balanced", [None, None], 1.0) == [0.5, 0.5]
    assert source_shares([5.0], "weights", [None], 1.0) == [1.0]
    with pytest.raises(DataError, match="manifest 2 has none"):
        source_shares(seconds, "weights", [1.0, None], 1.0)


@pytest.mark.parametrize(
    ("mixing", "batches"),
    [("weights", "mixed"), ("temperature", "mixed"), ("weights", "language")],
)
def test_each_source_gives_its_share_of_the_seconds(mixing, batches):
    sources = three_sources()
    seconds = [sum(c.duration for c in cuts) for cuts in sources]
    shares = source_shares(seconds, mixing, [0.5, 0.3, 0.2], 2.0)
    sampler = make_sampler(sources, 15.0, True, 0, shares=shares, mixing=mixing, batches=batches)
    got, pure, total = seconds_by_source(sampler, epochs=60)
    assert got == pytest.approx(shares, abs=0.03)
    if batches == "language":
        assert pure == total  # every batch holds one source's utterances
    else:
        assert pure < total


def test_balanced_takes_one_batch_of_each_source_per_step():
    sources = three_sources()
    with pytest.raises(DataError, match="split 3 ways"):  # 9 s utterances, 5 s each
        make_sampler(sources, 15.0, True, 0, shares=[1 / 3] * 3, mixing="balanced")
    mixed = make_sampler(sources, 30.0, True, 0, shares=[1 / 3] * 3, mixing="balanced")
    mixed.set_epoch(0)
    for batch in mixed:
        assert {source_of(cut) for cut in batch} == {0, 1, 2}
        assert sum(cut.duration for cut in batch) <= 30.0
    in_turn = make_sampler(
        sources, 15.0, True, 0, shares=[1 / 3] * 3, mixing="balanced", batches="language"
    )
    in_turn.set_epoch(0)
    order = [source_of(next(iter(batch))) for batch in in_turn]
    assert order[:6] == [0, 1, 2, 0, 1, 2]


def test_an_epoch_is_one_pass_over_the_first_source():
    sources = three_sources()
    for batches in ("mixed", "language"):
        sampler = make_sampler(
            sources, 15.0, True, 0, shares=[0.4, 0.4, 0.2], mixing="weights", batches=batches
        )
        sampler.set_epoch(2)
        first = [cut.id for batch in sampler for cut in batch if source_of(cut) == 0]
        assert sorted(first) == sorted(sources[0].ids)


def test_language_batches_are_the_same_source_on_every_rank():
    sources = three_sources()

    def sources_per_batch(rank):
        sampler = make_sampler(
            sources, 10.0, True, 0, 2, rank, [0.5, 0.3, 0.2], "weights", "language"
        )
        sampler.set_epoch(1)
        return [source_of(next(iter(batch))) for batch in sampler]

    rank0, rank1 = sources_per_batch(0), sources_per_batch(1)
    assert rank0 == rank1[: len(rank0)] or rank1 == rank0[: len(rank1)]
    assert len(set(rank0)) == 3


def test_replay_as_two_weighted_sources_gives_the_replay_samplers_batches():
    """tests/data/replay_batches.json holds the batches (three epochs, replay fractions 0.2
    and 0.5) of the replay sampler that training from several sources replaced; replay
    re-expressed as target weight 1 - f and source weight f must give exactly those."""
    reference = json.loads((DATA / "replay_batches.json").read_text())
    for fraction in (0.2, 0.5):
        sampler = make_sampler(
            [fake_cuts(40, 1.0, 3.0, 0), fake_cuts(25, 3.0, 9.0, 1, "replay-")],
            30.0,
            shuffle=True,
            seed=0,
            shares=[1 - fraction, fraction],
            mixing="weights",
        )
        for epoch in range(3):
            sampler.set_epoch(epoch)
            batches = [[cut.id for cut in batch] for batch in sampler]
            assert batches == reference[str(fraction)][epoch], (fraction, epoch)


@pytest.mark.parametrize("batches", ["mixed", "language"])
def test_mixing_is_reproducible(batches):
    def first_epoch():
        sampler = make_sampler(
            three_sources(), 10.0, True, 3, shares=[0.5, 0.3, 0.2], batches=batches
        )
        sampler.set_epoch(0)
        return [[cut.id for cut in batch] for batch in sampler]

    assert first_epoch() == first_epoch()


def test_loader_mixes_real_audio_of_two_languages(corpus):
    de = check_utterances(read_manifest(corpus.de_train))[0]
    en = check_utterances(read_manifest(corpus.en_train))[0]
    vocab = CharVocab.from_texts(u.text for u in de + en)
    loader = make_loader(
        [to_cuts(de), to_cuts(en, prefix=source_prefix(1))],
        vocab,
        30.0,
        shuffle=True,
        seed=0,
        shares=[0.5, 0.5],
        batches="language",
    )
    loader.sampler.set_epoch(0)
    langs = [set(batch["langs"]) for batch in loader]
    assert all(len(b) == 1 for b in langs)
    assert sum(b == {"de"} for b in langs) > 0 and sum(b == {"en"} for b in langs) > 0


def test_weights_must_match_the_manifests():
    assert as_sources(["a", "b"], [1, 3]) == [Source("a", 1.0), Source("b", 3.0)]
    with pytest.raises(DataError, match="2 weights for 3"):
        as_sources(["a", "b", "c"], [1, 3])
    with pytest.raises(XasrError, match="weight of a"):
        as_sources(["a"], [0])


# -- meta-transfer batches --------------------------------------------------------------------


def meta_sources():
    """A small target (20 cuts) and two larger sources, each cut id telling its source."""
    return [
        fake_cuts(20, 1.0, 3.0, seed=1),
        fake_cuts(60, 1.0, 3.0, seed=2, prefix=source_prefix(1)),
        fake_cuts(50, 1.0, 3.0, seed=3, prefix=source_prefix(2)),
    ]


@pytest.mark.parametrize(("tasks", "expected"), [("all", [0, 1, 2]), ("sources", [1, 2])])
def test_meta_batches_come_from_their_sources(tasks, expected):
    from xasr.data.sources import MetaBatches

    sources = meta_sources()
    # No set_epoch: Lightning need not call it before the first epoch.
    steps = list(make_sampler(sources, 30.0, True, seed=0, meta=MetaBatches(3, 4, tasks)))
    # An epoch is one pass over the target's query batches: every target cut once.
    queries = [cut.id for step in steps for cut in step[-1]]
    assert sorted(queries) == sorted(cut.id for cut in sources[0])
    for step in steps:
        *supports, query = step
        assert {source_of(c) for c in query} == {0} and len(query) <= 4
        assert [{source_of(c) for c in s} for s in supports] == [{i} for i in expected]
        assert all(1 <= len(s) <= 3 for s in supports)
    # The target's support batches are drawn apart from its query batches' order.
    if tasks == "all":
        assert [[c.id for c in s[0]] for s in steps] != [[c.id for c in s[-1]] for s in steps]


def test_meta_batches_repeat_the_supports_and_are_reproducible():
    from xasr.data.sources import MetaBatches

    sources = [fake_cuts(40, 1.0, 2.0, seed=1), fake_cuts(6, 1.0, 2.0, seed=2, prefix="src1-")]

    def epoch(e):
        sampler = make_sampler(sources, 30.0, True, seed=5, meta=MetaBatches(2, 2, "sources"))
        sampler.set_epoch(e)
        return [[[c.id for c in part] for part in step] for step in sampler]

    first = epoch(0)
    assert len(first) >= 20  # 40 target cuts in queries of 2, the 6-cut task repeats
    seen = Counter(c for step in first for c in step[0])
    assert set(seen) == {c.id for c in sources[1]} and min(seen.values()) >= 2
    assert epoch(0) == first and epoch(1) != first
    sampler = make_sampler(sources, 30.0, True, seed=5, meta=MetaBatches(2, 2, "sources"))
    again = [[[c.id for c in part] for part in step] for step in sampler]
    assert again == [[[c.id for c in part] for part in step] for step in sampler]  # no set_epoch


def test_meta_tasks_sources_needs_a_source():
    from xasr.data.sources import MetaBatches

    with pytest.raises(DataError, match="--meta-tasks sources needs a source"):
        make_sampler([fake_cuts(5, 1, 2, 0)], 30.0, True, 0, meta=MetaBatches(2, 2, "sources"))
