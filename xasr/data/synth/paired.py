"""A synthetic twin of a real corpus: the same lines, in the same splits, spoken by XLT-Synth.

Does a method that wins on synthetic speech win on real speech too? To ask it without the text
getting in the way, ``synth_paired`` reads real manifests (``{split: manifest}``, e.g.
``xasr prepare fillets``' Czech) and renders every line with XLT-Synth's planner and renderer:
the language's espeak-ng voice, the train or held-out voice variants by split, speed, pitch
and recording conditions drawn per utterance from (seed, language, split, index), as a fortune
build draws them. Each synthetic line keeps the real one's ``id`` and text, so the two sets
pair line by line (``paired_audio`` holds the real file).

Layout: ``OUT/<split>.jsonl``, ``OUT/audio/<split>/*.wav``, ``OUT/synth.json`` (parameters and
a digest of the source lines: a build whose parameters and lines are unchanged is reused).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from tqdm import tqdm

from xasr import checks
from xasr.data.manifest import Utterance, read_manifest, write_manifest
from xasr.data.synth.build import CONDITIONS, SYNTH_VERSION, _make_pool, _utterance
from xasr.data.synth.plan import Build, plan_utterances
from xasr.data.synth.render import render
from xasr.data.synth.sentences import Sentence, language
from xasr.errors import DataError
from xasr.io import output_dir

log = logging.getLogger(__name__)


def synth_paired(
    manifests: dict[str, str | Path],
    out: str | Path,
    lang: str,
    seed: int = 0,
    conditions: str = "noisy",
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Render the lines of ``manifests`` ({split: manifest}) in XLT-Synth language ``lang``
    (its espeak-ng voice; ``train`` with the training voice variants, any other split with the
    held-out ones) under ``out``; returns {split: synthetic manifest}."""
    language(lang)  # an unknown code: one line naming the known ones
    checks.one_of("--conditions", conditions, CONDITIONS)
    checks.integer("--seed", seed, at_least=0)
    lines = {split: read_manifest(path) for split, path in manifests.items()}
    out = output_dir(out).resolve()
    params = {"version": SYNTH_VERSION, "lang": lang, "seed": seed, "conditions": conditions,
              "lines": _digest(lines)}  # fmt: skip
    result = {split: out / f"{split}.jsonl" for split in lines}
    info = out / "synth.json"
    stored = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else None
    if stored == params and all(path.is_file() for path in result.values()):
        log.info("paired XLT-Synth %s: up to date (%s)", lang, out)
        return result
    info.unlink(missing_ok=True)  # a build cut short must not look finished
    workers = max(1, workers or os.cpu_count() or 1)
    pool = _make_pool(workers) if workers > 1 else None
    try:
        build = Build(lang, out, params, pool.imap if pool else map, workers, progress)
        for split, utterances in lines.items():
            write_manifest(result[split], _render_split(build, split, utterances))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    info.write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
    return result


def _render_split(build: Build, split: str, utterances: list[Utterance]) -> list[Utterance]:
    if not utterances:
        raise DataError(f"paired XLT-Synth: the {split} manifest has no lines")
    pool = [Sentence(u.text, topic="") for u in utterances]
    jobs = [plan_utterances(build, split, i, pool) for i in range(len(pool))]
    rendered = []
    with tqdm(total=len(jobs), desc=f"{build.code} {split} (paired)", unit="utt",
              disable=not build.progress) as bar:  # fmt: skip
        for real, job, duration in zip(utterances, jobs, build.mapper(render, jobs)):
            synthetic = _utterance(build.code, split, job, pool[0], duration)
            extra = {k: v for k, v in synthetic.extra.items() if k != "topic"}
            extra["paired_audio"] = str(real.audio_filepath)
            rendered.append(Utterance(**{**synthetic.__dict__, "id": real.id, "extra": extra}))
            bar.update(1)
    return rendered


def _digest(lines: dict[str, list[Utterance]]) -> str:
    """What the synthetic set depends on of the source: each split's ids and texts, in order."""
    text = json.dumps({s: [[u.id, u.text] for u in utts] for s, utts in sorted(lines.items())},
                      ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]
