"""``kind: sparse-sharing``: language-adaptive sparse sharing (Lu et al. 2022) against the dense
shared model trained on, per-language fine-tuned copies, and the controls that separate
"language-adaptive" from "pruned".

Per seed, a dense multilingual model is trained first (``OUT/runs/dense/seed<S>``, its own
``dense_budget``, the ``dense:`` recipe); every arm continues from it with the experiment's
``budget``:

* ``dense-continued``: the same further training, no masks, batches of one language;
* ``finetune``: a copy per language fine-tuned on it alone, the budget split evenly between
  the copies;
* ``sparse-<s>``: each language's mask found by adapting the dense model to it
  (``adapt:`` recipe, ``adapt_budget`` per language and round; ``rounds`` > 1: iterative
  pruning with rewinding) and keeping its largest weights, then
  training through the masks; the adaptations' work is part of the arm's budget (its training
  gets what they left). The family ``sparse`` is the sparsity with the best dev score;
* ``random-<s>``: a random mask per language at the same sparsity (no adaptation);
* ``shared-<s>``: one mask for every language, the dense model's largest weights (pruning
  without language adaptation).

Comparisons, named before any result, per language on test CER by the hierarchical bootstrap:
sparse (chosen on dev) against dense-continued (the paper's claim), against shared-mask and
against random-mask at its sparsity.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xasr.config import TrainConfig
from xasr.errors import XasrError
from xasr.experiments.budget import Budget, parse_budget
from xasr.experiments.common import (
    KindSetting,
    read_common,
    read_synth,
    recipe_variant,
)
from xasr.experiments.compare import primary_verdict, select_on_dev
from xasr.experiments.engine import run_state, save_outcome, save_record
from xasr.experiments.tables import markdown_table, mean_std, verdict_sentence, work_section
from xasr.models.build import WEIGHTS_FILE

KEYS = ("languages", "synth", "arch", "size", "dense", "dense_budget", "finetune", "adapt",
        "adapt_budget", "sparsities", "rounds", "arms")  # fmt: skip
ARMS = ("dense-continued", "finetune", "sparse", "random", "shared")
DENSE_DEFAULTS = {"mixing": "temperature", "temperature": 2.0, "monitor": "macro"}


@dataclass(frozen=True)
class Setting(KindSetting):
    languages: dict[str, float]
    synth: dict
    arch: str
    size: str
    dense: TrainConfig
    dense_budget: Budget
    finetune: TrainConfig
    adapt: TrainConfig
    adapt_budget: Budget
    sparsities: tuple[float, ...]
    rounds: int  # 1: one-shot masks; R: iterative pruning with rewinding (xasr.transfer.sparse)
    arms: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    name: str  # dense, dense-continued, finetune, sparse-0.5, random-0.5, shared-0.5
    family: str
    seed: int
    dir: Path
    sparsity: float | None = None

    @property
    def id(self) -> str:
        return f"{self.name}/seed{self.seed}"

    def state(self) -> tuple[str, str]:
        return run_state(self.dir)


class SparseSharingKind:
    name = "sparse-sharing"

    def load(self, config: Path, out) -> Setting:
        common, data = read_common(config, out, KEYS)
        where = str(config)
        languages = data.get("languages")
        if not isinstance(languages, dict) or len(languages) < 2:
            raise XasrError(f"{where}: languages must map two or more codes to train minutes")
        sparsities = tuple(float(x) for x in data.get("sparsities") or ())
        if not sparsities or not all(0.0 < x < 1.0 for x in sparsities):
            raise XasrError(f"{where}: sparsities must list values in (0, 1), e.g. [0.3, 0.5, 0.7]")
        arms = tuple(data.get("arms") or ARMS)
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise XasrError(f"{where}: arms: unknown {unknown}; allowed: {', '.join(ARMS)}")
        synth = read_synth(data, where)
        for key in ("dense_budget", "adapt_budget"):
            if key not in data:
                raise XasrError(f"{where}: missing key {key!r} (e.g. {key}: {{steps: 500}})")
        return Setting(
            common=common,
            languages={str(k): float(v) for k, v in languages.items()},
            synth=synth,
            arch=str(data.get("arch", "ctc")),
            size=str(data.get("size", "xsmall")),
            dense=recipe_variant(
                common.recipe, {**DENSE_DEFAULTS, **(data.get("dense") or {})}, f"{where}: dense"
            ),
            dense_budget=parse_budget(data["dense_budget"], None, f"{where}: dense_budget"),
            finetune=recipe_variant(common.recipe, data.get("finetune"), f"{where}: finetune"),
            adapt=recipe_variant(common.recipe, data.get("adapt"), f"{where}: adapt"),
            adapt_budget=parse_budget(data["adapt_budget"], None, f"{where}: adapt_budget"),
            sparsities=sparsities,
            rounds=_rounds(data.get("rounds", 1), where),
            arms=arms,
        )

    def arms(self, s: Setting) -> list[Run]:
        """Every seed's dense arm first (each trains its seed's start, so parallel workers
        train different starts instead of one waiting on the other's); then, per seed, the
        first sparse arm (it adapts the seed's languages) ahead of the arms that need no
        adaptation, and the other sparse arms, which reuse it, last."""
        runs = [_run(s, "dense", seed) for seed in s.common.seeds]
        for seed in s.common.seeds:
            every = [_run(s, arm, seed, x) for arm in s.arms
                     for x in (s.sparsities if arm in ("sparse", "random", "shared") else [None])]  # fmt: skip
            sparse = [r for r in every if r.family == "sparse"]
            rest = [r for r in every if r.family != "sparse"]
            runs += sparse[:1] + rest + sparse[1:]
        return runs

    def prepare(self, s: Setting, progress: bool) -> dict:
        from xasr.data.synth import build_per_language

        return build_per_language(s.out / "data", s.languages, progress, **s.synth)

    def dense_recipe(self, s: Setting, seed: int) -> TrainConfig:
        return s.dense_budget.recipe(replace(s.dense, seed=seed))

    def continued_recipe(self, s: Setting, seed: int, budget: Budget) -> TrainConfig:
        return budget.recipe(replace(s.dense, seed=seed, source_batches="language"))

    def spec(self, s: Setting, run: Run, splits) -> dict:
        return {"dense_recipe": asdict(self.dense_recipe(s, run.seed)), "budget": asdict(s.common.budget),
                "recipe": asdict(s.dense), "finetune_recipe": asdict(s.finetune),
                "adapt_recipe": asdict(s.adapt), "adapt_budget": asdict(s.adapt_budget),
                "synth": s.synth, "languages": s.languages, "model": {"size": s.size, "arch": s.arch},
                "rounds": s.rounds}  # fmt: skip

    def run_arm(self, s: Setting, run: Run, splits: dict, progress: bool) -> dict:
        if run.state()[0] == "done":
            return json.loads((run.dir / "cell.json").read_text(encoding="utf-8"))
        dense = self.ensure_dense(s, run.seed, splits, progress)
        if run.family == "dense":
            stages, tests = [_result(dense)], self.score(s, dense, splits, list(s.languages))
        elif run.family == "finetune":
            stages, tests = self.finetune(s, run, dense, splits, progress)
        else:
            stages, tests = self.continue_dense(s, run, dense, splits, progress)
        return save_record(run, {"stages": stages, "test": tests})

    def ensure_dense(self, s: Setting, seed: int, splits: dict, progress: bool) -> Path:
        """The seed's dense model, trained here (or waited for, when another worker trains
        it)."""
        from xasr.models.build import model_config
        from xasr.train.loop import train

        run = s.out / "runs" / "dense-start" / f"seed{seed}"  # no arm's directory: never moved
        with _held(run):
            if not (run / "result.json").is_file():
                train(run, [splits[g]["train"] for g in s.languages], [splits[g]["dev"] for g in s.languages],
                      self.dense_recipe(s, seed), model_config(s.size, s.arch), progress=progress)  # fmt: skip
        return run

    def finetune(self, s: Setting, run: Run, dense: Path, splits: dict, progress: bool):
        from xasr.transfer.finetune import TransferOptions, transfer

        b = s.common.budget
        share = replace(b, amount=b.amount / len(s.languages) if b.unit == "audio_seconds"
                        else int(b.amount) // len(s.languages))  # fmt: skip
        stages, tests = [], {}
        for lang in s.languages:
            copy = run.dir / lang
            if not (copy / "result.json").is_file():
                cfg = share.recipe(replace(s.finetune, seed=run.seed))
                transfer(copy, [splits[lang]["train"]], [splits[lang]["dev"]],
                         TransferOptions(source=str(dense / "model")), cfg, progress=progress)  # fmt: skip
            stages.append({**_result(copy), "lang": lang})
            tests.update(self.score(s, copy, splits, [lang]))
        return stages, tests

    def continue_dense(self, s: Setting, run: Run, dense: Path, splits: dict, progress: bool):
        """dense-continued (no masks) or a masked arm; a sparse arm's adaptations are its first
        stages and come out of its budget."""
        from xasr.transfer.finetune import TransferOptions, transfer

        masks, stages = None, []
        if run.family == "sparse":
            masks, stages = self.adapted_masks(s, run, dense, splits, progress)
        elif run.family == "random":
            from xasr.transfer.sparse import random_masks

            masks = random_masks(str(dense / "model"), list(s.languages), run.sparsity, run.seed)
        elif run.family == "shared":
            from xasr.transfer.sparse import shared_masks

            masks = shared_masks(str(dense / "model"), list(s.languages), run.sparsity)
        budget = remaining(s.common.budget, stages)
        train = run.dir / "train"
        if not (train / "result.json").is_file():
            transfer(train, [splits[g]["train"] for g in s.languages], [splits[g]["dev"] for g in s.languages],
                     TransferOptions(source=str(dense / "model")), self.continued_recipe(s, run.seed, budget),
                     progress=progress, masks=masks)  # fmt: skip
        stages.append(_result(train))
        return stages, self.score(s, train, splits, list(s.languages))

    def adapted_masks(self, s: Setting, run: Run, dense: Path, splits: dict, progress: bool):
        from xasr.transfer.sparse import find_masks

        # keyed by the dense model's weights: a dense start trained again is adapted again
        digest = hashlib.sha1((dense / "model" / WEIGHTS_FILE).read_bytes()).hexdigest()[:10]
        adapt_dir = s.out / "adapt" / f"seed{run.seed}-{digest}"
        cfg = s.adapt_budget.recipe(replace(s.adapt, seed=run.seed, monitor="all"))
        with _held(adapt_dir):  # the adaptations are shared by every sparsity of the seed
            masks = find_masks(
                run.dir / "masks", str(dense / "model"),
                {g: str(splits[g]["train"]) for g in s.languages},
                {g: str(splits[g]["dev"]) for g in s.languages},
                run.sparsity, cfg, s.rounds, progress, adapt_dir,
            )  # fmt: skip
        later = [f"s{run.sparsity:g}-of-{s.rounds}/round-{r}" for r in range(2, s.rounds + 1)]
        return masks, [_result(adapt_dir / g / r) for g in s.languages for r in ["round-1", *later]]

    def score(self, s: Setting, run_dir: Path, splits: dict, langs: list[str]) -> dict:
        from xasr.decode.evaluate import evaluate

        tests = {}
        for lang in langs:
            scored = evaluate(run_dir / "model", splits[lang]["test"],
                              output=run_dir / f"test-{lang}.json", progress=False)  # fmt: skip
            tests[lang] = {"cer": scored["cer"], "wer": scored["wer"],
                           "file": str((run_dir / f"test-{lang}.json").relative_to(s.out))}  # fmt: skip
        return tests

    def rows(self, s: Setting, run: Run, record: dict) -> list[dict]:
        """One row per language; the arm's work summed over its stages (a sparse arm's
        adaptations and training; every fine-tuned copy), its best checkpoint and stop the
        language's own run's."""
        stages = record["stages"]

        def total(key: str):
            values = [st.get("work", {}).get(key) for st in stages]
            return None if not values or None in values else sum(values)

        rows = []
        for lang, test in record["test"].items():
            own = next(
                (st for st in stages if st.get("lang") == lang), stages[-1] if stages else {}
            )
            before = 0 if "lang" in own else sum(st["steps"] for st in stages[:-1])
            rows.append({
                "group": lang,
                "label": run.name,
                "family": run.family,
                "seed": run.seed,
                "cell": str(Path(test["file"]).parent),
                "code": record.get("code"),
                "test_file": Path(test["file"]).name,
                "test_cer": test["cer"],
                "test_wer": test["wer"],
                "best_dev_cer": own.get("best_dev_cer"),
                "steps": sum(st["steps"] for st in stages),
                "best_step": own.get("best_step", 0) + before,
                "stopped_by": own.get("stopped_by", "-"),
                "train_seconds": sum(st["seconds"] for st in stages),
                "passes": total("passes"),
                "audio_seconds": total("audio_seconds"),
                "target_audio_seconds": None,
            })  # fmt: skip
        return rows

    def finish(self, s: Setting, records: dict[str, dict], data) -> dict:
        runs = self.arms(s)
        rows = [
            row for run in runs if run.id in records for row in self.rows(s, run, records[run.id])
        ]
        missing = [run.id for run in runs if run.id not in records]
        compared = [r for r in rows if r["label"] != "dense"]
        chosen = {}
        sparse = {}
        for r in compared:
            if r["family"] == "sparse" and r["best_dev_cer"] is not None:
                sparse.setdefault(r["label"], []).append(r)
        if sparse:  # one dev score per run: the rows of one language stand for it
            first = next(iter(s.languages))
            chosen["sparse"] = select_on_dev(
                {k: [r for r in v if r["group"] == first] for k, v in sparse.items()}
            )
        verdicts = {}
        if "sparse" in chosen:
            x = chosen["sparse"].removeprefix("sparse-")
            for against in ("dense-continued", f"shared-{x}", f"random-{x}"):
                for lang in s.languages:
                    a = [r for r in rows if r["label"] == chosen["sparse"] and r["group"] == lang]
                    b = [r for r in rows if r["label"] == against and r["group"] == lang]
                    if a and b:
                        verdicts.setdefault(against, {})[lang] = primary_verdict(s.out, a, b)
        results = {
            "name": s.name,
            "kind": self.name,
            "config": str(s.common.config),
            "languages": s.languages,
            "budget": asdict(s.common.budget),
            "dense_budget": asdict(s.dense_budget),
            "adapt_budget": asdict(s.adapt_budget),
            "chosen": chosen,
            "missing": missing,
            "rows": rows,
            "verdicts": verdicts,
        }
        return save_outcome(s.out, results, sparse_report(s, rows, chosen, verdicts, missing))

    def notes(self, s: Setting) -> list[str]:
        return []


KIND = SparseSharingKind()


def _run(s: Setting, arm: str, seed: int, sparsity: float | None = None) -> Run:
    name = arm if sparsity is None else f"{arm}-{sparsity:g}"
    return Run(name, arm, seed, s.out / "runs" / name / f"seed{seed}", sparsity)


def remaining(budget: Budget, stages: list[dict]) -> Budget:
    """What the budget leaves after ``stages`` (the adaptations), in its own unit."""
    unit = {"steps": "steps", "passes": "passes", "audio_seconds": "audio_seconds"}[budget.unit]
    spent = sum(st["work"][unit] for st in stages)
    left = budget.amount - spent
    if left <= 0:
        raise XasrError(
            f"the mask adaptations spent {spent:g} {budget.unit}, the whole budget "
            f"({budget.amount:g}): lower adapt_budget or raise budget"
        )
    return replace(budget, amount=left if budget.unit == "audio_seconds" else int(left))


def _rounds(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XasrError(f"{where}: rounds must be a positive integer, got {value!r}")
    return value


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))


@contextmanager
def _held(directory: Path):
    """An exclusive lock on ``<directory>.lock``, waited for: work two workers both need is
    done by the first, the second reads it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sparse_report(s: Setting, rows: list[dict], chosen: dict, verdicts: dict, missing) -> str:
    langs = list(s.languages)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    lines = [
        f"# {s.name}: language-adaptive sparse sharing",
        "",
        (
            f"Model {s.arch} {s.size}; seeds {', '.join(map(str, s.common.seeds))}. Each seed's dense "
            f"start: {s.dense_budget.describe()}. Every arm from it: **{s.common.budget.describe()}**; "
            f"a sparse arm's mask adaptations ({s.adapt_budget.amount:g} {s.adapt_budget.unit} per "
            "language) come out of that budget."
        ),
        "",
        (
            "**Comparisons** (named before any result; test CER per language, hierarchical bootstrap "
            "over seeds and utterances, 95%): sparse sharing at the sparsity chosen on dev against "
            "the dense model trained on for the same budget (the paper's claim), against one shared "
            "mask (pruning without language adaptation) and against random masks, both at that "
            "sparsity. *held*: sparse lower outside chance; *reversed*: higher; *no difference*."
        ),
        "",
        markdown_table(
            ["arm", *(f"{g} test CER" for g in langs)],
            [
                [
                    label,
                    *(
                        mean_std(
                            [r["test_cer"] for r in rows if r["label"] == label and r["group"] == g]
                        )
                        for g in langs
                    ),
                ]
                for label in labels
            ],
        ),
        "",
        *[f"`{family}` is `{member}` (chosen on dev)." for family, member in chosen.items()],
        "",
    ]
    for against, by_lang in verdicts.items():
        lines += [
            verdict_sentence(f"{lang}", chosen["sparse"], against, v) for lang, v in by_lang.items()
        ]
    # every row of an arm carries the arm's whole work (a fine-tuned copy's row: all copies');
    # the dense start has its own budget, stated above
    arms = [([label], [r for r in rows if r["label"] == label and r["group"] == langs[0]])
            for label in labels if label != "dense"]  # fmt: skip
    lines += ["", *work_section(arms, ["arm"], s.common.budget)]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"
