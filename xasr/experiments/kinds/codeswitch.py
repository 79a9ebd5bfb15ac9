"""``kind: codeswitch``: meta-transfer learning for a code-switched target with a few minutes of
speech and monolingual sources with more (Winata et al. 2020), beside the controls that could
explain its win, every arm from the same base with the same budget and seeds.

Arms (``arms:``, all by default), each one run per seed in ``OUT/runs/<arm>/seed<S>``:

* ``target``: the code-switched target alone (meta-paper's control: with a tiny inner step its
  outer gradient is the query's, i.e. target-only training);
* ``joint``: target and sources together, one batch of each per step (``joint:`` keys);
* ``joint-share``: joint training with meta-reference's target share of each step and batches
  of its size (the control of meta-reference, whose outer gradient is the sum of the support
  gradients plus the query's: joint training with the target weighted about twice);
* ``joint-finetune``: joint training for ``1 - finetune_share`` of the budget, then the target
  alone for the rest (``finetune:`` keys);
* ``meta-paper-lr<X>``: meta-transfer, the paper's variant, for each inner learning rate of
  ``inner_lrs`` (SGD, no clipping by default); the family ``meta-paper`` is the member with
  the best dev score (a choice made on dev);
* ``meta-reference``: the public code's variant at ``meta:``'s inner_lr.

The budget is best given in forward-backward passes (``budget: {passes: N}``): a meta step
costs 2 x tasks passes, a joint step one. Every arm validates ``validations`` times, evenly over
its steps, and is scored at its best dev checkpoint on the target's test set (MER, CER, CER
within each language's stretches) and on every source's test set (what it keeps of them).
Meta arms log the inner step's size and the turn of the query gradient at each validation
(``xasr.train.meta``), which the report shows.

Comparisons, named before any result: the paper's claim, meta-transfer (the variant better on
dev) against joint training; each variant against its control (meta-reference against
joint-share, meta-paper against target); by the hierarchical bootstrap of the test MER over
seeds and utterances.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xasr.config import TrainConfig
from xasr.data.manifest import read_manifest
from xasr.data.sources import Source
from xasr.errors import XasrError
from xasr.experiments.budget import Budget
from xasr.experiments.common import (
    KindSetting,
    check_keys,
    mapping,
    number_list,
    read_common,
    read_synth,
    recipe_variant,
)
from xasr.experiments.compare import primary_verdict, select_on_dev
from xasr.experiments.engine import run_state, save_outcome, save_record
from xasr.experiments.report import plot_lines
from xasr.experiments.tables import markdown_table, mean_std, verdict_sentence, work_section
from xasr.train.curve import read_curve

KEYS = ("target", "sources", "synth", "base", "arms", "joint", "finetune",
        "finetune_share", "meta", "inner_lrs", "validations")  # fmt: skip
ARMS = ("target", "joint", "joint-share", "joint-finetune", "meta-paper", "meta-reference")
META_DEFAULTS = {"k_train": 6, "k_valid": 6, "meta_tasks": "all", "meta_clip": 0.0}
DEFAULT_INNER_LRS = (1e-2, 3e-2, 1e-1)


@dataclass(frozen=True)
class Setting(KindSetting):
    pair: str
    target_minutes: float
    sources: dict[str, float]
    synth: dict
    base: str
    arms: tuple[str, ...]
    joint: TrainConfig
    finetune: TrainConfig
    finetune_share: float
    meta: TrainConfig
    inner_lrs: tuple[float, ...]
    validations: int

    @property
    def n_tasks(self) -> int:
        return len(self.sources) + (1 if self.meta.meta_tasks == "all" else 0)


@dataclass(frozen=True)
class Run:
    """One arm of one seed; ``family``: the name the comparisons use (meta-paper for every
    inner learning rate)."""

    name: str
    family: str
    seed: int
    dir: Path
    inner_lr: float | None = None

    @property
    def id(self) -> str:
        return f"{self.name}/seed{self.seed}"

    def state(self) -> tuple[str, str]:
        return run_state(self.dir)


def _lr_name(lr: float) -> str:
    return f"meta-paper-lr{lr:g}"


class CodeswitchKind:
    name = "codeswitch"

    def load(self, config: Path, out) -> Setting:
        common, data = read_common(config, out, KEYS)
        where = str(config)
        target = mapping(data.get("target") or {}, f"{where}: target")
        check_keys(target, ("pair", "train_minutes"), f"{where}: target")
        if "-" not in str(target.get("pair", "")):
            raise XasrError(f"{where}: target must give a code-switched pair, e.g. {{pair: es-en}}")
        sources = mapping(data.get("sources") or {}, f"{where}: sources")
        if not sources:
            raise XasrError(f"{where}: sources must map language codes to train minutes")
        if not data.get("base"):
            raise XasrError(f"{where}: name the base every arm transfers from (base: en-small)")
        arms = tuple(data.get("arms") or ARMS)
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise XasrError(f"{where}: arms: unknown {unknown}; allowed: {', '.join(ARMS)}")
        synth = read_synth(data, where)
        meta = {**META_DEFAULTS, **mapping(data.get("meta") or {}, f"{where}: meta")}
        share = data.get("finetune_share", 0.25)
        if not isinstance(share, (int, float)) or not 0 < share < 1:
            raise XasrError(f"{where}: finetune_share must be in (0, 1), got {share!r}")
        validations = data.get("validations", 10)
        if not isinstance(validations, int) or validations < 1:
            raise XasrError(f"{where}: validations must be a positive integer")
        lrs = number_list(data.get("inner_lrs", list(DEFAULT_INNER_LRS)), f"{where}: inner_lrs",
                          positive=True)  # fmt: skip
        return Setting(
            common=common,
            pair=str(target["pair"]),
            target_minutes=float(target.get("train_minutes", 5)),
            sources={str(k): float(v) for k, v in sources.items()},
            synth=synth,
            base=str(data["base"]),
            arms=arms,
            joint=recipe_variant(
                common.recipe,
                {"mixing": "balanced", **(data.get("joint") or {})},
                f"{where}: joint",
            ),
            finetune=recipe_variant(common.recipe, data.get("finetune"), f"{where}: finetune"),
            finetune_share=float(share),
            meta=recipe_variant(common.recipe, meta, f"{where}: meta"),
            inner_lrs=tuple(float(x) for x in lrs),
            validations=validations,
        )

    def arms(self, s: Setting) -> list[Run]:
        runs = []
        for seed in s.common.seeds:
            for arm in s.arms:
                if arm == "meta-paper":
                    runs += [Run(_lr_name(lr), arm, seed, s.out / "runs" / _lr_name(lr) / f"seed{seed}", lr)
                             for lr in s.inner_lrs]  # fmt: skip
                else:
                    runs.append(Run(arm, arm, seed, s.out / "runs" / arm / f"seed{seed}"))
        return runs

    def prepare(self, s: Setting, progress: bool) -> dict:
        from xasr.data.synth import build_per_language

        minutes = {s.pair: s.target_minutes, **s.sources}
        splits = build_per_language(s.out / "data", minutes, progress, **s.synth)
        utterances = [u for lang in minutes for u in read_manifest(splits[lang]["train"])]
        splits["mean_seconds"] = statistics.mean(u.duration for u in utterances)
        return splits

    def recipe(
        self, s: Setting, run: Run, variant: str, splits: dict, budget: Budget
    ) -> TrainConfig:
        """A training stage's recipe: ``variant`` (target, joint, joint-share, finetune,
        meta-paper, meta-reference), the run's seed, ``budget`` in the variant's own steps, and
        ``s.validations`` validations spread over them."""
        per_step = 1
        if variant == "target":
            cfg = s.common.recipe
        elif variant == "joint":
            cfg = s.joint
        elif variant == "finetune":
            cfg = s.finetune
        elif variant == "joint-share":
            cfg = joint_share(s, splits["mean_seconds"])
        else:
            cfg = replace(s.meta, meta_variant=variant.removeprefix("meta-"),
                          inner_lr=run.inner_lr or s.meta.inner_lr)  # fmt: skip
            per_step = 2 * s.n_tasks
        cfg = budget.recipe(replace(cfg, seed=run.seed), passes_per_step=per_step)
        return replace(cfg, val_every=max(1, cfg.max_steps // s.validations))

    def stages(self, s: Setting, run: Run, splits: dict) -> list[tuple[str, str, TrainConfig]]:
        """(directory name, variant, recipe) of each training stage of the arm, in order; the
        last one's directory is the arm's own ("")."""
        if run.family == "joint-finetune":  # the budget split between the two stages
            first, second = self.stage_budgets(s)
            return [
                ("joint-stage", "joint", self.recipe(s, run, "joint", splits, first)),
                ("", "finetune", self.recipe(s, run, "finetune", splits, second)),
            ]
        return [("", run.family, self.recipe(s, run, run.family, splits, s.common.budget))]

    def train_sets(self, s: Setting, variant: str, splits: dict) -> list:
        target = splits[s.pair]["train"]
        if variant in ("target", "finetune"):
            return [target]
        everything = [target, *(splits[lang]["train"] for lang in s.sources)]
        if variant == "joint-share":
            return [Source(str(m), w) for m, w in zip(everything, share_weights(s), strict=True)]
        return everything

    def spec(self, s: Setting, run: Run, splits) -> dict:
        # joint-share's recipe follows the data's mean utterance length: without the data
        # (--only-report) it is left out, and a key one side lacks is not compared
        stages = (
            [] if splits is None and run.family == "joint-share" else self.stages(s, run, splits)
        )
        return {
            **{f"{name or 'arm'}_recipe": asdict(cfg) for name, _, cfg in stages},
            "base": s.base, "pair": s.pair, "synth": s.synth, "finetune_share": s.finetune_share,
            "shares": share_weights(s), "data": {s.pair: s.target_minutes, **s.sources},
        }  # fmt: skip

    def run_arm(self, s: Setting, run: Run, splits: dict, progress: bool) -> dict:
        from xasr.decode.evaluate import evaluate
        from xasr.transfer.finetune import TransferOptions, transfer

        stages = self.stages(s, run, splits)
        if run.state()[0] == "done":
            return json.loads((run.dir / "cell.json").read_text(encoding="utf-8"))
        dev = [splits[s.pair]["dev"]]
        source = s.base
        for name, variant, cfg in stages:
            stage = run.dir / name
            if not (stage / "result.json").is_file():
                transfer(stage, self.train_sets(s, variant, splits), dev,
                         TransferOptions(source=source), cfg, progress=progress)  # fmt: skip
            source = str(stage / "model")
        earlier = [
            json.loads((run.dir / name / "result.json").read_text()) for name, _, _ in stages[:-1]
        ]
        tests = {}
        for lang in (s.pair, *s.sources):
            name = "test.json" if lang == s.pair else f"test-{lang}.json"
            scored = evaluate(run.dir / "model", splits[lang]["test"], output=run.dir / name,
                              progress=False)  # fmt: skip
            tests[lang] = {k: scored[k] for k in ("mer", "cer", "wer") if k in scored}
            if "by_stretch_language" in scored:
                tests[lang]["by_stretch_language"] = scored["by_stretch_language"]
        result = json.loads((run.dir / "result.json").read_text(encoding="utf-8"))
        return save_record(run, {"train": result, "stages": earlier, "test": tests})

    def stage_budgets(self, s: Setting) -> tuple[Budget, Budget]:
        b = s.common.budget
        whole = b.amount if b.unit == "audio_seconds" else int(b.amount)
        first = whole * (1 - s.finetune_share)
        first = first if b.unit == "audio_seconds" else int(first)
        return replace(b, amount=first), replace(b, amount=whole - first)

    def row(self, s: Setting, run: Run, record: dict) -> dict:
        trained = record["train"]
        stages = [*record.get("stages", []), trained]  # the work of every stage counts
        target = record["test"][s.pair]

        def total(key: str):
            values = [st.get("work", {}).get(key) for st in stages]
            return None if None in values else sum(values)

        return {
            "group": s.pair,
            "label": run.name,
            "family": run.family,
            "seed": run.seed,
            "cell": str(run.dir.relative_to(s.out)),
            "code": record.get("code"),
            "test_mer": target.get("mer", target["wer"]),
            "test_cer": target["cer"],
            "stretch_cer": {g: v["cer"] for g, v in target.get("by_stretch_language", {}).items()},
            "source_cer": {g: record["test"][g]["cer"] for g in s.sources},
            "best_dev_cer": trained["best_dev_cer"],
            "steps": sum(st["steps"] for st in stages),
            "best_step": trained["best_step"] + sum(st["steps"] for st in stages[:-1]),
            "stopped_by": trained["stopped_by"],
            "train_seconds": sum(st["seconds"] for st in stages),
            "passes": total("passes"),
            "audio_seconds": total("audio_seconds"),
            "target_audio_seconds": total("target_audio_seconds"),
            **meta_diagnosis(run.dir),
        }

    def finish(self, s: Setting, records: dict[str, dict], data) -> dict:
        runs = self.arms(s)
        rows = [self.row(s, run, records[run.id]) for run in runs if run.id in records]
        missing = [run.id for run in runs if run.id not in records]
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            by_label.setdefault(row["label"], []).append(row)
        chosen = {}
        papers = {label: rs for label, rs in by_label.items() if label.startswith("meta-paper")}
        if papers:
            chosen["meta-paper"] = select_on_dev(papers)
        arms = {**by_label, **{f: by_label[m] for f, m in chosen.items()}}
        metas = {m: arms[m] for m in ("meta-paper", "meta-reference") if m in arms}
        if metas:
            chosen["meta"] = select_on_dev(metas)
            arms["meta"] = arms[chosen["meta"]]
        verdicts = {}
        for name, (arm, against) in COMPARISONS.items():
            if arm in arms and against in arms:
                verdicts[name] = {"arm": arm, "against": against,
                                  **primary_verdict(s.out, arms[arm], arms[against], "mer")}  # fmt: skip
        results = {
            "name": s.name,
            "kind": self.name,
            "config": str(s.common.config),
            "pair": s.pair,
            "target_minutes": s.target_minutes,
            "sources": s.sources,
            "base": s.base,
            "budget": asdict(s.common.budget),
            "chosen": chosen,
            "missing": missing,
            "rows": rows,
            "verdicts": verdicts,
        }
        plot_dev_curves(s, runs, records)
        return save_outcome(s.out, results, codeswitch_report(s, rows, chosen, verdicts, missing))

    def notes(self, s: Setting) -> list[str]:
        return []


KIND = CodeswitchKind()

# name -> (arm, against): named before any result; "meta" is the variant better on dev.
COMPARISONS = {
    "the paper's claim: meta-transfer beats joint training": ("meta", "joint"),
    "meta-reference beats its control, joint training with its target share": (
        "meta-reference",
        "joint-share",
    ),
    "meta-paper beats its control, the target alone": ("meta-paper", "target"),
}


def share_weights(s: Setting) -> list[float]:
    """Per training source (target first), its utterances in one meta-reference step, as the
    outer gradient counts them: the target's support batch (when it is a task) and its query
    batch; one support batch of each source."""
    meta = s.meta
    target = meta.k_valid + (meta.k_train if meta.meta_tasks == "all" else 0)
    return [float(target), *(float(meta.k_train) for _ in s.sources)]


def joint_share(s: Setting, mean_seconds: float) -> TrainConfig:
    """joint-share's recipe: weights mixing at meta-reference's shares, batches of its support
    batches' size (k_train utterances of the mean duration)."""
    return replace(
        s.joint, mixing="weights", max_batch_seconds=round(s.meta.k_train * mean_seconds, 2)
    )


def meta_diagnosis(run_dir: Path) -> dict:
    """Mean inner step ||theta' - theta|| and query-gradient cosine over the logged steps."""
    rows = read_curve(run_dir) if (run_dir / "logs").is_dir() else []
    out = {}
    for key in ("inner_step", "query_cosine"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = statistics.mean(values)
    return out


def plot_dev_curves(s: Setting, runs: list[Run], records: dict) -> None:
    series = {}
    for run in runs:
        if run.seed == s.common.seeds[0] and run.id in records:
            curve = [(r["step"], 100 * r["val_cer"]) for r in read_curve(run.dir) if "val_cer" in r]
            series[run.name] = curve
    if series:
        plot_lines(series, s.out / "curves.png", f"{s.name}: {s.pair} dev CER (seed {s.common.seeds[0]})",
                   "step", "dev CER (%)")  # fmt: skip


def codeswitch_report(s: Setting, rows: list[dict], chosen: dict, verdicts: dict, missing) -> str:
    pair = s.pair
    langs = pair.split("-")
    lines = [
        f"# {s.name}: {pair} code-switched target, {s.target_minutes:g} min, from {s.base}",
        "",
        (
            f"Sources: {', '.join(f'{k} {v:g} min' for k, v in s.sources.items())}; seeds "
            f"{', '.join(map(str, s.common.seeds))}. **Budget:** {s.common.budget.describe()}; "
            f"{s.validations} validations per arm, evenly spaced. Meta-transfer: {s.n_tasks} tasks, "
            f"k_train {s.meta.k_train}, k_valid {s.meta.k_valid}, inner clip {s.meta.meta_clip:g}; "
            f"meta-paper's inner learning rate chosen on dev from {', '.join(f'{x:g}' for x in s.inner_lrs)}."
        ),
        "",
        "**Comparisons** (named before any result; test MER, hierarchical bootstrap over seeds "
        "and utterances, 95%): "
        + "; ".join(f"{k} (`{a}` against `{b}`)" for k, (a, b) in COMPARISONS.items())
        + ". *held*: the first lower outside chance; *reversed*: higher; *no difference* otherwise.",
        "",
    ]
    table = []
    for label in dict.fromkeys(r["label"] for r in rows):
        group = [r for r in rows if r["label"] == label]
        stretch = [
            mean_std([r["stretch_cer"].get(g) for r in group if g in r["stretch_cer"]])
            for g in langs
        ]
        table.append([label, mean_std([r["test_mer"] for r in group]), mean_std([r["test_cer"] for r in group]),
                      *stretch,
                      *(mean_std([r["source_cer"][g] for r in group]) for g in s.sources),
                      mean_std([r["best_dev_cer"] for r in group])])  # fmt: skip
    lines += [
        markdown_table(
            [
                "arm",
                f"{pair} MER",
                f"{pair} CER",
                *(f"CER in {g} stretches" for g in langs),
                *(f"{g} test CER" for g in s.sources),
                "best dev CER",
            ],
            table,
        ),
        "",
        *[f"`{family}` is `{member}` (chosen on dev)." for family, member in chosen.items()],
        "",
        *[verdict_sentence(name, v["arm"], v["against"], v) for name, v in verdicts.items()],
        "",
    ]
    metas = [r for r in rows if "inner_step" in r]
    if metas:
        diag = []
        for label in dict.fromkeys(r["label"] for r in metas):
            group = [r for r in metas if r["label"] == label]
            diag.append([label, f"{statistics.mean(r['inner_step'] for r in group):.3g}",
                         f"{statistics.mean(r['query_cosine'] for r in group):.4f}"])  # fmt: skip
        lines += [
            "### Did the inner step do anything?",
            "",
            (
                "Mean over the validations' steps and seeds of ||θ' − θ|| (the inner SGD step) and the "
                "cosine between the query gradient at θ' and at θ: a step near zero with a cosine near "
                "1 means the meta step trained on the query batch alone."
            ),
            "",
            markdown_table(["arm", "‖θ' − θ‖", "query-gradient cosine"], diag),
            "",
        ]
    arms = [
        ([label], [r for r in rows if r["label"] == label])
        for label in dict.fromkeys(r["label"] for r in rows)
    ]
    lines += work_section(arms, ["arm"], s.common.budget)
    lines += ["", "![dev curves](curves.png)"]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"
