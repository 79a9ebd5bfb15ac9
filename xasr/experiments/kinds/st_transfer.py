"""``kind: st-transfer``: speech-translation-enhanced transfer (Wang, Gu and Pino 2020) against
direct transfer from the same base, with the same budget and seeds.

For every target language (``targets``: its train minutes and the translators whose
pseudo-labels make its ST models), arms (``arms:``):

* ``direct``: transfer from the base (the English AED recognizer), by token identity;
* ``st-<translator>``: the ST chain (``xasr.transfer.st``): the English speech (``source``)
  translated by that translator, an ST model trained from the base on it (``st_recipe``,
  ``st_budget``; the AED's CTC branch in the loss at its usual weight), then the target
  recognizer from the whole ST model;
* ``st-<translator>-attention``: the same with a pure-attention ST stage (the CTC branch's
  loss weight 0, as in the paper: a CTC branch on translated text favours word-by-word labels);
* ``scratch`` (when listed): the base's architecture from a random start.

Every recognizer trains to the experiment's ``budget`` and is scored at its best dev
checkpoint; the ST stage's own work (``st_budget``) is counted beside it in the row, with the ST
model's BLEU/chrF on held-out English speech against its MT text. Comparisons, named before any
result, per target on test WER by the hierarchical bootstrap: each ST arm against direct
transfer (the paper's claim), and each pure-attention ST arm against the ST arm with the CTC
branch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xasr.config import TrainConfig
from xasr.data.translate import BACKENDS
from xasr.errors import XasrError
from xasr.experiments.budget import Budget, parse_budget
from xasr.experiments.common import (
    KindSetting,
    check_keys,
    mapping,
    read_common,
    read_synth,
    recipe_variant,
)
from xasr.experiments.compare import primary_verdict
from xasr.experiments.engine import run_state, save_outcome, save_record
from xasr.experiments.tables import markdown_table, mean_std, verdict_sentence, work_section

KEYS = ("source", "targets", "synth", "base", "arms", "st_recipe", "st_budget")
ARMS = ("scratch", "direct", "st", "st-attention")
DEFAULT_ARMS = ("direct", "st", "st-attention")


@dataclass(frozen=True)
class Setting(KindSetting):
    source_lang: str
    source_minutes: float
    targets: dict[str, dict]  # lang -> {"train_minutes", "translators": {name: {backend, ...}}}
    synth: dict
    base: str
    arms: tuple[str, ...]
    st_recipe: TrainConfig
    st_budget: Budget


@dataclass(frozen=True)
class Run:
    lang: str
    name: str  # scratch, direct, st-<translator>, st-<translator>-attention
    seed: int
    dir: Path
    translator: str | None = None
    attention_only: bool = False

    @property
    def id(self) -> str:
        return f"{self.lang}/{self.name}/seed{self.seed}"

    def state(self) -> tuple[str, str]:
        return run_state(self.dir)


class StTransferKind:
    name = "st-transfer"

    def load(self, config: Path, out) -> Setting:
        common, data = read_common(config, out, KEYS)
        where = str(config)
        source = mapping(data.get("source") or {}, f"{where}: source")
        check_keys(source, ("lang", "train_minutes"), f"{where}: source")
        if not source.get("lang"):
            raise XasrError(
                f"{where}: source must give the ST models' speech: {{lang: en, train_minutes: 120}}"
            )
        targets = mapping(data.get("targets") or {}, f"{where}: targets")
        if not targets:
            raise XasrError(
                f"{where}: targets must map languages to {{train_minutes, translators}}"
            )
        parsed = {}
        for lang, target in targets.items():
            target = mapping(target or {}, f"{where}: targets.{lang}")
            check_keys(target, ("train_minutes", "translators"), f"{where}: targets.{lang}")
            parsed[str(lang)] = {
                "train_minutes": float(target.get("train_minutes", 10)),
                "translators": translator_list(
                    target.get("translators"), f"{where}: targets.{lang}"
                ),
            }
        if not data.get("base"):
            raise XasrError(
                f"{where}: name the base model, an attention encoder-decoder (base: en-small-aed)"
            )
        arms = tuple(data.get("arms") or DEFAULT_ARMS)
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise XasrError(f"{where}: arms: unknown {unknown}; allowed: {', '.join(ARMS)}")
        if "st_budget" not in data:
            raise XasrError(
                f"{where}: missing key 'st_budget' (the ST stage's, e.g. {{steps: 1500}})"
            )
        synth = read_synth(data, where)
        return Setting(
            common=common,
            source_lang=str(source["lang"]),
            source_minutes=float(source.get("train_minutes", 30)),
            targets=parsed,
            synth=synth,
            base=str(data["base"]),
            arms=arms,
            st_recipe=recipe_variant(common.recipe, data.get("st_recipe"), f"{where}: st_recipe"),
            st_budget=parse_budget(data["st_budget"], None, f"{where}: st_budget"),
        )

    def arms(self, s: Setting) -> list[Run]:
        runs = []
        for lang, target in s.targets.items():
            for seed in s.common.seeds:
                for arm in s.arms:
                    if arm in ("scratch", "direct"):
                        runs.append(
                            Run(lang, arm, seed, s.out / "runs" / lang / arm / f"seed{seed}")
                        )
                        continue
                    for t in target["translators"]:
                        name = f"st-{t}" + ("-attention" if arm == "st-attention" else "")
                        runs.append(Run(lang, name, seed, s.out / "runs" / lang / name / f"seed{seed}",
                                        t, arm == "st-attention"))  # fmt: skip
        return runs

    def prepare(self, s: Setting, progress: bool) -> dict:
        from xasr.data.synth import build_per_language

        minutes = {s.source_lang: s.source_minutes}
        minutes.update({lang: t["train_minutes"] for lang, t in s.targets.items()})
        return build_per_language(s.out / "data", minutes, progress, **s.synth)

    def st_cfg(self, s: Setting, run: Run) -> TrainConfig:
        cfg = s.st_budget.recipe(replace(s.st_recipe, seed=run.seed))
        return replace(cfg, ctc_loss_weight=0.0) if run.attention_only else cfg

    def spec(self, s: Setting, run: Run, splits) -> dict:
        cfg = s.common.budget.recipe(replace(s.common.recipe, seed=run.seed))
        spec = {"recipe": asdict(cfg), "base": s.base, "synth": s.synth,
                "minutes": s.targets[run.lang]["train_minutes"]}  # fmt: skip
        if run.translator is not None:
            spec.update(st_recipe=asdict(self.st_cfg(s, run)), source_minutes=s.source_minutes,
                        translator=s.targets[run.lang]["translators"][run.translator])  # fmt: skip
        return spec

    def run_arm(self, s: Setting, run: Run, splits: dict, progress: bool) -> dict:
        from xasr.decode.evaluate import evaluate
        from xasr.models.build import read_model_config, resolve_model
        from xasr.transfer.finetune import TransferOptions, transfer
        from xasr.transfer.st import StOptions, st_enhanced_transfer

        cfg = s.common.budget.recipe(replace(s.common.recipe, seed=run.seed))
        if run.state()[0] == "done":
            return json.loads((run.dir / "cell.json").read_text(encoding="utf-8"))
        target, source = splits[run.lang], splits[s.source_lang]
        if not (run.dir / "result.json").is_file():
            if run.translator is None:
                opts = TransferOptions(source=s.base)
                if run.name == "scratch":
                    opts = TransferOptions(
                        scratch=True, expect=read_model_config(resolve_model(s.base))[0]
                    )
                transfer(run.dir, [target["train"]], [target["dev"]], opts, cfg, progress=progress)
            else:
                translator = s.targets[run.lang]["translators"][run.translator]
                st = StOptions(
                    source_speech=str(source["train"]),
                    source_valid=str(source["dev"]),
                    translate_with=translator["backend"],
                    translator_command=translator["command"],
                    translator_model=translator["model"],
                    lang=run.lang,
                    st_run=str(run.dir.parent / f"st-seed{run.seed}"),
                )
                st_enhanced_transfer(run.dir, [target["train"]], [target["dev"]],
                                     TransferOptions(source=s.base), st, cfg, self.st_cfg(s, run),
                                     progress=progress)  # fmt: skip
        scored = evaluate(
            run.dir / "model", target["test"], output=run.dir / "test.json", progress=False
        )
        record = {
            "train": json.loads((run.dir / "result.json").read_text(encoding="utf-8")),
            "test": {"wer": scored["wer"], "cer": scored["cer"]},
        }
        if run.translator is not None:
            record["st"] = st_summary(run.dir.parent / f"st-seed{run.seed}")
        return save_record(run, record)

    def row(self, s: Setting, run: Run, record: dict) -> dict:
        trained, work = record["train"], record["train"].get("work", {})
        st = record.get("st", {})
        return {
            "group": run.lang,
            "label": run.name,
            "seed": run.seed,
            "cell": str(run.dir.relative_to(s.out)),
            "code": record.get("code"),
            "test_wer": record["test"]["wer"],
            "test_cer": record["test"]["cer"],
            "best_dev_cer": trained["best_dev_cer"],
            "steps": trained["steps"],
            "best_step": trained["best_step"],
            "stopped_by": trained["stopped_by"],
            "train_seconds": trained["seconds"],
            "passes": work.get("passes"),
            "audio_seconds": work.get("audio_seconds"),
            "target_audio_seconds": work.get("target_audio_seconds"),
            "st_passes": st.get("passes"),
            "st_seconds": st.get("seconds"),
            "bleu": st.get("bleu"),
            "chrf": st.get("chrf"),
        }

    def finish(self, s: Setting, records: dict[str, dict], data) -> dict:
        runs = self.arms(s)
        rows = [self.row(s, run, records[run.id]) for run in runs if run.id in records]
        missing = [run.id for run in runs if run.id not in records]
        verdicts = {}
        for lang in s.targets:
            by = {}
            for r in rows:
                if r["group"] == lang:
                    by.setdefault(r["label"], []).append(r)
            for label, group in by.items():
                against = (
                    "direct"
                    if not label.endswith("-attention")
                    else label.removesuffix("-attention")
                )
                if label.startswith("st-") and against in by:
                    verdicts.setdefault(lang, {})[label] = {
                        "against": against,
                        **primary_verdict(s.out, group, by[against], "wer"),
                    }
        results = {
            "name": s.name,
            "kind": self.name,
            "config": str(s.common.config),
            "source": {"lang": s.source_lang, "train_minutes": s.source_minutes},
            "targets": s.targets,
            "base": s.base,
            "budget": asdict(s.common.budget),
            "st_budget": asdict(s.st_budget),
            "missing": missing,
            "rows": rows,
            "verdicts": verdicts,
        }
        return save_outcome(s.out, results, st_report(s, rows, verdicts, missing))

    def notes(self, s: Setting) -> list[str]:
        return []


KIND = StTransferKind()


def translator_list(value, where: str) -> dict[str, dict]:
    """``translators``: backend names (``apertium``), or mappings ``{name, backend, command,
    model}`` for a command or hf translator; returns {name: {backend, command, model}}."""
    translators = {}
    for entry in value or []:
        entry = {"name": entry, "backend": entry} if isinstance(entry, str) else dict(entry)
        unknown = set(entry) - {"name", "backend", "command", "model"}
        backend = entry.get("backend")
        if unknown or backend not in BACKENDS:
            raise XasrError(
                f"{where}: a translator is a backend ({', '.join(BACKENDS)}) or "
                f"{{name, backend, command, model}}, got {entry}"
            )
        name = str(entry.get("name") or backend)
        translators[name] = {"backend": backend, **{k: entry.get(k) for k in ("command", "model")}}
    if not translators:
        raise XasrError(f"{where}: translators must list at least one (apertium, dictionary, ...)")
    return translators


def st_summary(st_dir: Path) -> dict:
    """The ST model's BLEU/chrF/CER on held-out source speech, the MT's coverage, its work."""
    quality = json.loads((st_dir / "translation.json").read_text(encoding="utf-8"))
    result = json.loads((st_dir / "result.json").read_text(encoding="utf-8"))
    coverage = json.loads((st_dir / "translations" / "coverage.json").read_text(encoding="utf-8"))
    mt = coverage["translate"]["train"]
    return {
        "bleu": quality["bleu"],
        "chrf": quality["chrf"],
        "cer": quality["cer"],
        "untranslated_words": mt.get("untranslated_words", 0) / max(mt.get("words", 0), 1),
        "steps": result["steps"],
        "passes": result.get("work", {}).get("passes"),
        "seconds": result["seconds"],
    }


def st_report(s: Setting, rows: list[dict], verdicts: dict, missing) -> str:
    lines = [
        f"# {s.name}: speech-translation-enhanced transfer from {s.base}",
        "",
        f"ST models trained on {s.source_minutes:g} min of {s.source_lang} speech with MT pseudo-labels "
        f"({s.st_budget.describe()}); targets "
        + ", ".join(f"{k} {t['train_minutes']:g} min" for k, t in s.targets.items())
        + f"; seeds {', '.join(map(str, s.common.seeds))}. **Budget of every recognizer:** "
        f"{s.common.budget.describe()}. An ST arm's ST stage is work beyond it, counted in its "
        "own columns.",
        "",
        (
            "**Comparisons** (named before any result; test WER, hierarchical bootstrap over seeds "
            "and utterances, 95%): each ST arm against direct transfer (the paper's claim), and each "
            "pure-attention ST arm against the ST arm with the CTC branch. *held*: the first lower "
            "outside chance; *reversed*: higher; *no difference* otherwise."
        ),
        "",
    ]
    table = []
    for lang in s.targets:
        for label in dict.fromkeys(r["label"] for r in rows if r["group"] == lang):
            group = [r for r in rows if r["group"] == lang and r["label"] == label]
            bleu = [r["bleu"] for r in group if r["bleu"] is not None]
            chrf = [r["chrf"] for r in group if r["chrf"] is not None]
            st_passes = [r["st_passes"] for r in group if r["st_passes"] is not None]
            table.append([lang, label, mean_std([r["test_wer"] for r in group]),
                          mean_std([r["test_cer"] for r in group]),
                          f"{sum(bleu) / len(bleu):.1f}" if bleu else "-",
                          f"{sum(chrf) / len(chrf):.1f}" if chrf else "-",
                          f"{sum(st_passes) / len(st_passes):,.0f}" if st_passes else "-"])  # fmt: skip
    lines += [
        markdown_table(
            ["target", "arm", "test WER", "test CER", "ST BLEU", "ST chrF", "ST passes"], table
        ),
        "",
    ]
    for lang, by in verdicts.items():
        lines += [verdict_sentence(lang, label, v["against"], v) for label, v in by.items()]
    arms = [([lang, label], [r for r in rows if r["group"] == lang and r["label"] == label])
            for lang in s.targets for label in dict.fromkeys(r["label"] for r in rows if r["group"] == lang)]  # fmt: skip
    lines += [
        "",
        *work_section(arms, ["target", "arm"], s.common.budget),
    ]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"
