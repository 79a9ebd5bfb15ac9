"""Building XLT-Synth: the splits of each language (sentence pools, the train prefix up to N
minutes), rendered in parallel, written as manifests; up-to-date builds are skipped."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from xasr import checks
from xasr.data.audio import SAMPLE_RATE
from xasr.data.manifest import Utterance, write_manifest
from xasr.data.synth.plan import HELDOUT_VARIANTS, TRAIN_VARIANTS, Build, Job, plan_utterances
from xasr.data.synth.render import render
from xasr.data.synth.sentences import (
    INSTALL_HINT,
    SYNTH_LANGUAGES,
    Sentence,
    available_sentences,
    check_topics,
    language,
)
from xasr.errors import DataError
from xasr.io import output_dir

log = logging.getLogger(__name__)

SYNTH_VERSION = 1  # bump when a change alters the audio or the text, to invalidate old builds
SPLITS = ("train", "dev", "test")


CONDITIONS = ("noisy", "clean")


def build_xlt_synth(
    langs: list[str],
    out: Path,
    train_minutes: float = 10,
    dev_utts: int = 100,
    test_utts: int = 200,
    seed: int = 0,
    conditions: str = "noisy",
    workers: int | None = None,
    progress: bool = True,
    topics: Sequence[str] | None = None,
) -> dict[str, dict[str, Path]]:
    """Synthesise XLT-Synth for ``langs`` under ``out``; returns ``{code: {split: manifest}}``.

    ``train_minutes`` is the total train audio (the shortest prefix of the train pool that
    reaches it); ``dev_utts``/``test_utts`` count utterances; ``conditions`` is ``"noisy"`` or
    ``"clean"``. ``topics`` (fortune file stems, see ``topics_of``) keeps only those topics'
    sentences, in every language of the request; build different selections under different
    ``out`` folders. A language whose ``synth.json`` holds the same parameters and whose
    manifests exist is skipped ("up to date"). Raises ``DataError`` for an unknown language or
    topic, a missing espeak-ng or fortune package, or too few sentences for the dev/test sizes.
    """
    _check_request(langs, train_minutes, dev_utts, test_utts, conditions)
    checks.integer("--seed", seed, at_least=0)
    if workers is not None:
        checks.integer("--workers", workers, at_least=1)
    topics = check_topics(langs, topics)
    out = output_dir(out).resolve()
    workers = max(1, workers or os.cpu_count() or 1)
    result: dict[str, dict[str, Path]] = {}
    pool = _make_pool(workers) if workers > 1 else None
    try:
        mapper = pool.imap if pool is not None else map
        for code in langs:
            params = _params(code, train_minutes, dev_utts, test_utts, seed, conditions)
            if topics is not None:  # absent otherwise: builds made before topics stay valid
                params["topics"] = topics
            build = Build(code, out / code, params, mapper, workers, progress)
            result[code] = _build_language(build)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return result


def _check_request(
    langs: Sequence[str], train_minutes: float, dev_utts: int, test_utts: int, conditions: str
) -> None:
    if not langs:
        raise DataError("--langs is empty; give language codes such as en,es")
    for code in langs:
        language(code)
    checks.one_of("--conditions", conditions, CONDITIONS)
    checks.number("--train-minutes", train_minutes, at_least=0)
    checks.integer("--dev-utts", dev_utts, at_least=0)
    checks.integer("--test-utts", test_utts, at_least=0)
    if shutil.which("espeak-ng") is None:
        raise DataError(f"espeak-ng is not installed; install it with: {INSTALL_HINT}")


def build_per_language(
    root: Path, minutes: dict[str, float], progress: bool = True, **synth
) -> dict[str, dict[str, Path]]:
    """``build_xlt_synth`` for each language with its own train minutes, in ``root/<lang>/``
    (the experiments' data: a few minutes of one language, hours of another)."""
    return {
        lang: build_xlt_synth(
            [lang], Path(root) / lang, train_minutes=m, progress=progress, **synth
        )[lang]
        for lang, m in minutes.items()
    }


def _params(
    code: str, train_minutes: float, dev_utts: int, test_utts: int, seed: int, conditions: str
) -> dict:
    """Everything that determines one language's output (``synth.json["params"]``). Unset
    language fields are left out, so builds made before they existed stay up to date; a
    code-switched pair adds its switching settings and its dictionary's identity."""
    lang = SYNTH_LANGUAGES[code]
    params = {
        "version": SYNTH_VERSION,
        "espeak_ng": _espeak_version(),
        "language": {k: v for k, v in asdict(lang).items() if v is not None},
        "train_variants": list(TRAIN_VARIANTS),
        "heldout_variants": list(HELDOUT_VARIANTS),
        "train_minutes": float(train_minutes),
        "dev_utts": dev_utts,
        "test_utts": test_utts,
        "seed": seed,
        "conditions": conditions,
        "sample_rate": SAMPLE_RATE,
    }
    if lang.embedded is not None:
        params["code_switch"] = code_switch_params(lang)
    return params


def code_switch_params(lang) -> dict:
    """The switching settings and the dictionary (path, size, SHA-1 of its index) of a pair;
    a missing dictionary is an error here, before any old build is removed."""
    from xasr.data.lexicon import lexicon_for
    from xasr.data.synth.codeswitch import MAX_WORDS, SWITCH_RATE

    source = lexicon_for(lang.text_lang, lang.embedded).source_file
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    return {"rate": SWITCH_RATE, "max_words": MAX_WORDS, "dictionary": [str(source), digest]}


@lru_cache(maxsize=1)
def _espeak_version() -> str:
    result = subprocess.run(["espeak-ng", "--version"], check=False, capture_output=True, text=True)
    return result.stdout.split("  Data")[0].strip()


def _build_language(build: Build) -> dict[str, Path]:
    """Build (or reuse) one language; returns ``{split: manifest path}``."""
    manifests = {split: build.folder / f"{split}.jsonl" for split in SPLITS}
    info_path = build.folder / "synth.json"
    if _up_to_date(info_path, build.params, manifests.values()):
        log.info("XLT-Synth %s: up to date (%s)", build.code, build.folder)
        return manifests
    pools = _sentence_pools(build.code, build.params)  # too few sentences: the old build stays
    info_path.unlink(missing_ok=True)  # a build cut short must not look finished
    shutil.rmtree(build.folder / "audio", ignore_errors=True)  # no stale files of old builds
    stats = {}
    for split in ("test", "dev", "train"):
        if split == "train":
            utts = _build_train(build, pools[split])
        else:
            utts = _build_fixed(build, split, pools[split])
        write_manifest(manifests[split], utts)
        stats[split] = {"utterances": len(utts), "seconds": sum(u.duration for u in utts)}
    info = {"params": build.params, "stats": stats}
    info_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("XLT-Synth %s: %s", build.code, stats)
    return manifests


def _up_to_date(info_path: Path, params: dict, manifests: Iterable[Path]) -> bool:
    if not info_path.is_file() or not all(p.is_file() for p in manifests):
        return False
    try:
        stored = json.loads(info_path.read_text(encoding="utf-8")).get("params")
    except (json.JSONDecodeError, OSError):
        return False
    return stored == json.loads(json.dumps(params))  # as JSON: tuples read back as lists


def _sentence_pools(code: str, params: dict) -> dict[str, list[Sentence]]:
    """Disjoint sentence pools: shuffle with the seed, keep the requested topics, cut test, then
    dev; train gets the rest.

    Shuffling before the topic filter keeps every sentence's place relative to the others the
    same in each build of a seed, whatever the topics; without topics the pools are those of
    builds made before topics existed.
    """
    sentences = available_sentences(code)
    random.Random(params["seed"]).shuffle(sentences)
    topics = params.get("topics")
    if topics is not None:
        sentences = [s for s in sentences if s.topic in topics]
    dev_utts, test_utts = params["dev_utts"], params["test_utts"]
    if len(sentences) < dev_utts + test_utts + 1:
        of_topics = f" of topics {', '.join(topics)}" if topics is not None else ""
        raise DataError(
            f"XLT-Synth {code} has {len(sentences)} usable sentences{of_topics}, too few for "
            f"{test_utts} test + {dev_utts} dev utterances and a train split; ask for fewer"
        )
    return {
        "test": sentences[:test_utts],
        "dev": sentences[test_utts : test_utts + dev_utts],
        "train": sentences[test_utts + dev_utts :],
    }


def _build_fixed(build: Build, split: str, pool: list[Sentence]) -> list[Utterance]:
    """dev/test: one utterance per pool sentence."""
    jobs = [plan_utterances(build, split, i, pool) for i in range(len(pool))]
    desc = f"{build.code} {split}"
    utts = []
    with tqdm(total=len(jobs), desc=desc, unit="utt", disable=not build.progress) as bar:
        for i, duration in enumerate(build.mapper(render, jobs)):
            utts.append(_utterance(build.code, split, jobs[i], pool[i], duration))
            bar.update(1)
    return utts


def _build_train(build: Build, pool: list[Sentence]) -> list[Utterance]:
    """train: render the pool in order, keep the shortest prefix reaching ``train_minutes``.

    Chunks only decide how much is rendered ahead; the kept prefix depends on the per-utterance
    durations alone, so it is the same for any number of workers.
    """
    target = build.params["train_minutes"] * 60
    utts: list[Utterance] = []
    total, start = 0.0, 0
    bar = tqdm(
        total=round(target), desc=f"{build.code} train", unit="s", disable=not build.progress
    )
    with bar:
        while total < target and start < len(pool):
            stop = min(len(pool), start + _chunk_size(target - total, utts, build.workers))
            jobs = [plan_utterances(build, "train", i, pool) for i in range(start, stop)]
            for index, job, duration in zip(range(start, stop), jobs, build.mapper(render, jobs)):
                if total >= target:
                    Path(job.path).unlink(missing_ok=True)  # rendered ahead, not needed
                    continue
                utts.append(_utterance(build.code, "train", job, pool[index], duration))
                total += duration
                bar.update(min(duration, max(0.0, target - bar.n)))
            start = stop
    if total < target:
        log.warning("XLT-Synth %s: train pool ran out at %.1f min", build.code, total / 60)
    return utts


def _chunk_size(remaining_s: float, done: list[Utterance], workers: int) -> int:
    """How many train utterances to render next: enough for the remaining time, plus slack."""
    mean = sum(u.duration for u in done) / len(done) if done else 3.0
    return max(workers, min(512, math.ceil(remaining_s / mean) + workers))


def _utterance(code: str, split: str, job: Job, sentence: Sentence, duration: float):
    """The manifest row of a rendered job."""
    speaker = job.speaker
    return Utterance(
        audio_filepath=Path(job.path),
        text=job.text,
        duration=duration,
        lang=code,
        id=Path(job.path).stem,
        extra={
            "voice": speaker.voice,
            "variant": speaker.variant,
            "speed": speaker.speed,
            "pitch": speaker.pitch,
            "topic": sentence.topic,
            "conditions": job.conditions.describe(),
            "split_voices": "train" if split == "train" else "heldout",
            **_code_switch_fields(job),
        },
    )


def _code_switch_fields(job: Job) -> dict:
    """A code-switched utterance's stretches (character offsets and language) and the SSML
    it was spoken from; nothing for a monolingual one."""
    if not job.stretches:
        return {}
    return {"stretches": [s.to_json() for s in job.stretches], "ssml": job.ssml}


def _make_pool(workers: int):
    # fork: workers inherit the imported modules and start in milliseconds (no re-import).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers)
