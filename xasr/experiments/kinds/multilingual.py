"""``kind: multilingual``: one model trained on several languages at once against each language
trained alone, same model, recipe, budget and seeds.

Config keys beside the common ones (``xasr.experiments.common``): ``languages`` ({code: train
minutes}, two or more), ``synth`` (dev_utts, test_utts, conditions, seed), ``arch`` and
``size`` (a named model), ``joint`` (TrainConfig keys of the joint run only: mixing,
temperature, source_batches, monitor; never the budget's).

Arms: ``OUT/runs/alone-<lang>/seed<S>`` and ``OUT/runs/joint/seed<S>``, each trained to the
budget and scored at its best dev checkpoint, then on the test set of each language it trained
on (``test-<lang>.json``, with its hypotheses). The verdict, named before any result: per
language, the joint model against that language alone on test CER, by the hierarchical
bootstrap over seeds and utterances.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from xasr.config import TrainConfig
from xasr.errors import XasrError
from xasr.experiments.common import (
    KindSetting,
    mapping,
    read_common,
    read_synth,
    recipe_variant,
)
from xasr.experiments.compare import primary_verdict
from xasr.experiments.engine import run_state, save_outcome, save_record
from xasr.experiments.tables import markdown_table, mean_std, verdict_sentence, work_section

KEYS = ("languages", "synth", "arch", "size", "joint")
JOINT_DEFAULTS = {"mixing": "temperature", "temperature": 2.0, "monitor": "macro"}


@dataclass(frozen=True)
class Setting(KindSetting):
    languages: dict[str, float]
    synth: dict
    arch: str
    size: str
    joint: TrainConfig  # the joint run's recipe (before the budget)


@dataclass(frozen=True)
class Run:
    """One arm: ``alone-<lang>`` or ``joint``, one seed."""

    name: str
    seed: int
    langs: tuple[str, ...]  # what it trains and is tested on
    dir: Path

    @property
    def id(self) -> str:
        return f"{self.name}/seed{self.seed}"

    @property
    def label(self) -> str:
        return "joint" if self.name == "joint" else "alone"

    def state(self) -> tuple[str, str]:
        return run_state(self.dir)


class MultilingualKind:
    name = "multilingual"

    def load(self, config: Path, out) -> Setting:
        common, data = read_common(config, out, KEYS)
        where = str(config)
        languages = data.get("languages")
        if not isinstance(languages, dict) or len(languages) < 2:
            raise XasrError(f"{where}: languages must map two or more codes to train minutes")
        synth = read_synth(data, where)
        joint = {**JOINT_DEFAULTS, **mapping(data.get("joint") or {}, f"{where}: joint")}
        return Setting(
            common=common,
            languages={str(k): float(v) for k, v in languages.items()},
            synth=synth,
            arch=str(data.get("arch", "ctc")),
            size=str(data.get("size", "xsmall")),
            joint=recipe_variant(common.recipe, joint, f"{where}: joint"),
        )

    def arms(self, s: Setting) -> list[Run]:
        runs = []
        for seed in s.common.seeds:
            for lang in s.languages:
                name = f"alone-{lang}"
                runs.append(Run(name, seed, (lang,), s.out / "runs" / name / f"seed{seed}"))
            runs.append(
                Run("joint", seed, tuple(s.languages), s.out / "runs" / "joint" / f"seed{seed}")
            )
        return runs

    def prepare(self, s: Setting, progress: bool) -> dict:
        from xasr.data.synth import build_per_language

        return build_per_language(s.out / "data", s.languages, progress, **s.synth)

    def recipe(self, s: Setting, run: Run) -> TrainConfig:
        base = (
            s.joint
            if run.name == "joint"
            else TrainConfig(**{**asdict(s.common.recipe), "monitor": "all"})
        )
        return s.common.budget.recipe(TrainConfig(**{**asdict(base), "seed": run.seed}))

    def spec(self, s: Setting, run: Run, splits) -> dict:
        from xasr.models.build import model_config

        size = model_config(s.size, s.arch)
        return {"recipe": asdict(self.recipe(s, run)), "model": asdict(size),
                "langs": list(run.langs), "synth": s.synth, "minutes": s.languages}  # fmt: skip

    def run_arm(self, s: Setting, run: Run, splits: dict, progress: bool) -> dict:
        from xasr.decode.evaluate import evaluate
        from xasr.models.build import model_config
        from xasr.train.loop import train

        cfg = self.recipe(s, run)
        size = model_config(s.size, s.arch)
        if run.state()[0] == "done":
            return json.loads((run.dir / "cell.json").read_text(encoding="utf-8"))
        if not (run.dir / "result.json").is_file():
            train(run.dir, [splits[g]["train"] for g in run.langs],
                  [splits[g]["dev"] for g in run.langs], cfg, size, progress=progress)  # fmt: skip
        tests = {}
        for lang in run.langs:
            scored = evaluate(run.dir / "model", splits[lang]["test"],
                              output=run.dir / f"test-{lang}.json", progress=False)  # fmt: skip
            tests[lang] = {"cer": scored["cer"], "wer": scored["wer"]}
        result = json.loads((run.dir / "result.json").read_text(encoding="utf-8"))
        return save_record(run, {"train": result, "test": tests})

    def rows(self, s: Setting, run: Run, record: dict) -> list[dict]:
        """One row per test language of the run."""
        trained = record["train"]
        work = trained.get("work", {})
        seconds = work.get("source_audio_seconds") or []
        return [
            {
                "group": lang,
                "label": run.label,
                "run": run.name,
                "seed": run.seed,
                "cell": str(run.dir.relative_to(s.out)),
                "code": record.get("code"),
                "test_file": f"test-{lang}.json",
                "test_cer": record["test"][lang]["cer"],
                "test_wer": record["test"][lang]["wer"],
                "best_dev_cer": trained["best_dev_cer"],
                "steps": trained["steps"],
                "best_step": trained["best_step"],
                "stopped_by": trained["stopped_by"],
                "train_seconds": trained["seconds"],
                "passes": work.get("passes"),
                "audio_seconds": work.get("audio_seconds"),
                # the seconds of this language (the joint run's source of that language)
                "target_audio_seconds": seconds[i] if i < len(seconds) else None,
            }
            for i, lang in enumerate(run.langs)
        ]

    def finish(self, s: Setting, records: dict[str, dict], data) -> dict:
        runs = self.arms(s)
        rows = [
            row for run in runs if run.id in records for row in self.rows(s, run, records[run.id])
        ]
        missing = [run.id for run in runs if run.id not in records]
        verdicts = {}
        for lang in s.languages:
            by = {label: [r for r in rows if r["group"] == lang and r["label"] == label]
                  for label in ("joint", "alone")}  # fmt: skip
            if all(by.values()):
                verdicts[lang] = primary_verdict(s.out, by["joint"], by["alone"])
        results = {
            "name": s.name,
            "kind": self.name,
            "config": str(s.common.config),
            "languages": s.languages,
            "size": s.size,
            "budget": asdict(s.common.budget),
            "recipe": asdict(s.common.recipe),
            "joint_recipe": asdict(s.joint),
            "missing": missing,
            "rows": rows,
            "verdicts": verdicts,
        }
        return save_outcome(s.out, results, multilingual_report(s, rows, verdicts, missing))

    def notes(self, s: Setting) -> list[str]:
        return []


KIND = MultilingualKind()


def multilingual_report(s: Setting, rows: list[dict], verdicts: dict, missing: list[str]) -> str:
    """Markdown: the primary comparison, per language test CER alone and joint (mean ± std over
    seeds) with the verdict, then what each arm spent."""
    joint = s.joint
    lines = [
        f"# {s.name}: joint multilingual training against each language alone",
        "",
        (
            f"Model {s.arch} {s.size}; seeds {', '.join(map(str, s.common.seeds))}. "
            f"**Budget:** {s.common.budget.describe()}. Joint run: mixing {joint.mixing} "
            f"(T = {joint.temperature:g}), {joint.source_batches} batches, best checkpoint on "
            f"{joint.monitor} dev CER; each language alone on its own dev CER."
        ),
        "",
        (
            "**Primary comparison** (named before any result): per language, the joint model's "
            "test CER against that language trained alone; *held* (joint better) when the "
            "hierarchical bootstrap's 95% interval over seeds and utterances lies below zero, "
            "*reversed* above it, *no difference* otherwise."
        ),
        "",
    ]
    table = []
    for lang, minutes in s.languages.items():
        alone = [r["test_cer"] for r in rows if r["group"] == lang and r["label"] == "alone"]
        together = [r["test_cer"] for r in rows if r["group"] == lang and r["label"] == "joint"]
        v = verdicts.get(lang)
        compared = v["compared"] if v else {}
        interval = (
            f"{100 * compared['difference']:+.1f} [{100 * compared['low']:+.1f}, {100 * compared['high']:+.1f}]"
            if "difference" in compared
            else "-"
        )
        table.append(
            [
                lang,
                f"{minutes:g}",
                mean_std(alone),
                mean_std(together),
                interval,
                v["verdict"] if v else "-",
            ]
        )
    lines += [
        markdown_table(
            [
                "language",
                "train min",
                "test CER alone",
                "test CER joint",
                "joint - alone (pts, 95%)",
                "verdict",
            ],
            table,
        ),
        "",
        *[verdict_sentence(lang, "joint", "alone", v) for lang, v in verdicts.items()],
        "",
    ]
    arms = []
    for run_name in [*(f"alone-{g}" for g in s.languages), "joint"]:
        group = [r for r in rows if r["run"] == run_name]
        first = [r for r in group if r["group"] == group[0]["group"]] if group else []
        if first:
            arms.append(([run_name], first))
    lines += work_section(arms, ["run"], s.common.budget)
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"
