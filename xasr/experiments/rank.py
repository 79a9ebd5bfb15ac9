"""`xasr rank-sources`: which base model to start a transfer from?

Each candidate source is transferred into the target (``xasr.transfer.finetune.transfer``, token
identity head transfer) with the same recipe for the same short budget of ``steps``, validated
at least ``PROBE_VALIDATIONS`` times; the candidates are then ranked from their learning curves.
Sources may differ in architecture and vocabulary: each transfer is its own run.

Ranking rule: the lowest **best dev CER** within the budget goes first. Candidates whose best
dev CER lies within ``NEAR_TIE`` (half a CER point) of their group's leader (the best of the
group, groups formed in CER order) are near-ties that dev-set noise cannot separate; within a
group the candidate whose curve still falls fastest goes first (most negative **slope**: dev CER
change per 100 steps, a least-squares line through the last half of the validations), then the
lower CER. The slope breaks ties but is never extrapolated: short learning curves are convex and
the schedule's cosine decay flattens their end, so a straight-line forecast would overrate any
steep curve; the best CER reached is what was measured.

Layout: ``OUT/<source as a safe name>/`` is each candidate's run directory (a transfer run:
``result.json``, ``metrics.csv``, ``model/`` ...) plus ``probe.json`` (what it was trained
with); ``OUT/ranking.json`` (the returned rows), ``OUT/ranking.md`` (a table) and
``OUT/ranking.png`` (the dev CER curves). A candidate with ``result.json`` is not trained again;
a killed one resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path

from xasr.config import TrainConfig, replace
from xasr.errors import XasrError
from xasr.experiments.report import plot_curves
from xasr.experiments.tables import markdown_table
from xasr.models.build import resolve_model
from xasr.train.curve import read_curve, validation_points
from xasr.transfer.finetune import TransferOptions, transfer

PROBE_VALIDATIONS = 6  # at least this many validations per candidate (slope over the last 3)
NEAR_TIE = 0.005  # best dev CERs closer than this (absolute) count as tied
RANKING_KEYS = ("source", "dev_cer", "best_dev_cer", "slope", "steps", "rank")


def rank_sources(
    out: Path,
    train,
    valid,
    sources: list[str],
    cfg: TrainConfig,
    steps: int = 300,
    progress: bool = True,
) -> list[dict]:
    """Transfer each source into ``train``/``valid`` for ``steps`` steps and rank them.

    Returns one dict per source, best first: ``source``, ``dev_cer`` (last validation),
    ``best_dev_cer``, ``slope`` (dev CER change per 100 steps over the last half of the
    validations; None with fewer than 2), ``steps`` (trained), ``rank`` (1 = start from this).
    ``cfg`` is the shared recipe; ``max_steps`` becomes ``steps``, ``val_every`` at most
    ``steps / PROBE_VALIDATIONS``, warm-up at most a quarter of the probe, and early stopping is
    off so that every candidate gets the same budget (``max_minutes``, if set, caps each one).
    Writes ``OUT/ranking.json``, ``OUT/ranking.md``, ``OUT/ranking.png``; prints the table.
    """
    out = Path(out)
    sources = list(dict.fromkeys(str(s) for s in sources))  # one named twice is ranked once
    if not sources:
        raise XasrError("rank-sources needs at least one source model (--from A B ...)")
    if steps < 2:
        raise XasrError(f"steps must be at least 2 for a learning curve, got {steps}")
    for source in sources:
        resolve_model(source)  # fail on a typo before hours of training
    probe_cfg = probe_config(cfg, steps)
    names = run_names(sources)
    runs = {}
    for source in sources:
        run_dir = out / names[source]
        runs[source] = run_dir
        probe = {
            "source": source,
            "train": str(Path(train).resolve()),
            "valid": str(Path(valid).resolve()),
            "steps": steps,
            # Loader workers and the wall-clock cap do not change what a step computes.
            "train_config": {
                k: v
                for k, v in asdict(probe_cfg).items()
                if k not in ("num_workers", "max_minutes")
            },
        }
        check_probe(run_dir, probe)
        if (run_dir / "result.json").is_file():
            continue  # finished: not trained again
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "probe.json").write_text(json.dumps(probe, indent=1, ensure_ascii=False))
        if progress:
            print(f"== {source}: transfer for {steps} steps -> {run_dir} ==", flush=True)
        transfer(
            run_dir, train, valid, TransferOptions(source=source), probe_cfg, progress=progress
        )
    rows = rank_rows([candidate_row(source, runs[source]) for source in sources])
    write_ranking(out, rows, runs, steps, probe_cfg.val_every)
    return rows


def probe_config(cfg: TrainConfig, steps: int) -> TrainConfig:
    """The shared recipe cut to a probe of ``steps`` steps (see ``rank_sources``)."""
    return replace(
        cfg,
        max_steps=steps,
        val_every=max(1, min(cfg.val_every, steps // PROBE_VALIDATIONS)),
        warmup_steps=min(cfg.warmup_steps, max(1, steps // 4)),
        patience=None,  # every probe spends its whole budget
    )


def run_names(sources: list[str]) -> dict[str, str]:
    """A folder name per source that depends on that source alone (so reruns find their runs):
    a file-safe source (``en-small``) as it is; any other (``runs/a/model``) made file-safe and
    suffixed with a short hash of it, so that two sources never share a folder."""
    names = {}
    for source in sources:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._")[-60:]
        if name != source:
            name = f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:8]}".lstrip("-")
        names[source] = name
    return names


def check_probe(run_dir: Path, probe: dict) -> None:
    """Refuse to reuse or resume a candidate trained with other data or another recipe."""
    path = run_dir / "probe.json"
    if not path.is_file():
        if (run_dir / "result.json").is_file() or (run_dir / "checkpoints").is_dir():
            raise XasrError(
                f"{run_dir} holds a run that rank-sources did not start; use another --out"
            )
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored != json.loads(json.dumps(probe)):
        changed = sorted(k for k in probe if stored.get(k) != json.loads(json.dumps(probe[k])))
        raise XasrError(
            f"{run_dir} was trained with other settings ({', '.join(changed)} differ); "
            "rank with the same settings or use another --out"
        )


def candidate_row(source: str, run_dir: Path) -> dict:
    """One source's figures from its run's learning curve and result.json (rank not set)."""
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    points = validation_points(read_curve(run_dir))
    if not points:
        raise XasrError(f"{run_dir} has no validation in its learning curve; train longer")
    return {
        "source": source,
        "dev_cer": points[-1][1],
        "best_dev_cer": min(cer for _, cer in points),
        "slope": curve_slope(points),
        "steps": result["steps"],
    }


def curve_slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares dev CER change per 100 steps over the last half of the validations
    (the later half when their number is odd is the larger one); None with fewer than 2."""
    tail = points[len(points) // 2 :]
    if len(tail) < 2:
        return None
    steps = [s for s, _ in tail]
    cers = [c for _, c in tail]
    mean_s, mean_c = sum(steps) / len(steps), sum(cers) / len(cers)
    spread = sum((s - mean_s) ** 2 for s in steps)
    if spread == 0:
        return None
    return 100 * sum((s - mean_s) * (c - mean_c) for s, c in zip(steps, cers)) / spread


def rank_rows(rows: list[dict]) -> list[dict]:
    """Apply the ranking rule (module docstring): best dev CER, near-ties by slope."""
    ordered = sorted(rows, key=lambda row: (row["best_dev_cer"], row["source"]))
    groups: list[list[dict]] = []
    for row in ordered:
        if groups and row["best_dev_cer"] - groups[-1][0]["best_dev_cer"] <= NEAR_TIE:
            groups[-1].append(row)
        else:
            groups.append([row])
    ranked = []
    for group in groups:
        ranked += sorted(group, key=lambda row: (_slope_key(row), row["best_dev_cer"]))
    return [
        {key: {**row, "rank": rank}[key] for key in RANKING_KEYS}
        for rank, row in enumerate(ranked, start=1)
    ]


def _slope_key(row: dict) -> float:
    return row["slope"] if row["slope"] is not None else 0.0  # unknown: not improving


def ranking_table(rows: list[dict]) -> str:
    def pct(value):
        return "" if value is None else f"{100 * value:.1f} %"

    def slope(value):
        return "" if value is None else f"{100 * value:+.2f}"

    return markdown_table(
        ["rank", "source", "best dev CER", "final dev CER", "slope (CER pts / 100 steps)", "steps"],
        [
            [r["rank"], r["source"], pct(r["best_dev_cer"]), pct(r["dev_cer"]), slope(r["slope"]),
             r["steps"]]
            for r in rows
        ],
    )  # fmt: skip


def write_ranking(out: Path, rows: list[dict], runs: dict, steps: int, val_every: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranking.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    table = ranking_table(rows)
    text = (
        f"# Which source to transfer from\n\n"
        f"Each source transferred for {steps} steps with the same recipe, dev CER every "
        f"{val_every} steps. Ranked by best dev CER; sources within {100 * NEAR_TIE:.1f} CER "
        "points of their group's best are near-ties, ordered by slope (the steepest fall "
        "first). Slope: least-squares dev CER change per 100 steps over the last half of the "
        "validations.\n\n" + table + "\n"
    )
    (out / "ranking.md").write_text(text, encoding="utf-8")
    plot_curves(
        {r["source"]: runs[r["source"]] for r in rows},
        out / "ranking.png",
        f"dev CER of each source over {steps} steps",
    )
    print(table, flush=True)
