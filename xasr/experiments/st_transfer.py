"""`xasr experiment` with ``kind: st-transfer``: Wang, Gu and Pino's (2020) comparison of
speech-translation-enhanced transfer with direct transfer and training from scratch.

For every target language (``targets``: its train minutes and the translators whose
pseudo-labels make its ST models), three kinds of cell, the same model and recipe:

* ``scratch``: the base's architecture from a random start;
* ``direct``: transfer from the base (the English AED recognizer), by token identity;
* ``st-<translator>``: the ST chain (``xasr.transfer.st``): the English speech (``source``)
  translated into the target language by that translator, an ST model trained from the base
  on it (``st_recipe``), the target recognizer from the whole ST model.

Every run early-stops on its dev set; the ST models on the English dev speech against its MT
text, whose BLEU/chrF they report. ``OUT/results.json``, ``OUT/report.md`` (test WER/CER,
steps to a dev CER threshold, the ST models' BLEU/chrF and the MT's coverage, the verdict) and
``OUT/curves-<lang>.png`` hold the outcome.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from xasr.config import TrainConfig, from_dict
from xasr.data.translate import BACKENDS
from xasr.errors import XasrError
from xasr.experiments.config import load_named_yaml
from xasr.experiments.results import save_outcome

KEYS = (
    "kind",
    "name",
    "out",
    "source",
    "targets",
    "synth",
    "base",
    "recipe",
    "st_recipe",
    "threshold",
)
EARLY = "early stopping"  # result.json's stopped_by
SYNTH_DEFAULTS = {"dev_utts": 60, "test_utts": 150, "conditions": "noisy", "seed": 0}


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    out: Path
    source_lang: str
    source_minutes: float
    targets: dict[str, dict]  # lang -> {"train_minutes", "translators": {name: {backend, ...}}}
    synth: dict
    base: str
    recipe: TrainConfig
    st_recipe: TrainConfig
    threshold: float

    def cells(self) -> list[tuple[str, str]]:
        """(target language, cell name) in running order."""
        return [
            (lang, cell)
            for lang, target in self.targets.items()
            for cell in ("scratch", "direct", *(f"st-{t}" for t in target["translators"]))
        ]


def read_setting(config: str | Path, out: str | Path | None = None) -> Setting:
    data = load_named_yaml(config, KEYS)
    source = data.get("source") or {}
    if not isinstance(source, dict) or not source.get("lang"):
        raise XasrError(
            f"{config}: source must give the ST models' speech: {{lang: en, train_minutes: 30}}"
        )
    targets = data.get("targets") or {}
    if not isinstance(targets, dict) or not targets:
        raise XasrError(f"{config}: targets must map languages to {{train_minutes, translators}}")
    parsed = {
        str(lang): {
            "train_minutes": float((target or {}).get("train_minutes", 10)),
            "translators": translator_list(
                (target or {}).get("translators"), f"{config}: targets: {lang}"
            ),
        }
        for lang, target in targets.items()
    }
    if not data.get("base"):
        raise XasrError(
            f"{config}: name the base model, an attention encoder-decoder (base: en-small-aed)"
        )
    recipe = from_dict(TrainConfig, data.get("recipe") or {}, f"{config}: recipe")
    st_changes = {**dataclasses.asdict(recipe), **(data.get("st_recipe") or {})}
    return Setting(
        name=data["name"],
        out=Path(out or data.get("out") or Path("runs") / "experiments" / data["name"]),
        source_lang=str(source["lang"]),
        source_minutes=float(source.get("train_minutes", 30)),
        targets=parsed,
        synth={**SYNTH_DEFAULTS, **(data.get("synth") or {})},
        base=str(data["base"]),
        recipe=recipe,
        st_recipe=from_dict(TrainConfig, st_changes, f"{config}: st_recipe"),
        threshold=float(data.get("threshold", 0.5)),
    )


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


def run_st_transfer(config: str | Path, out: str | Path | None = None, progress=True) -> dict:
    """Build the data, run every cell (reusing finished ones), evaluate, write the report."""
    from xasr.data.synth import build_per_language

    s = read_setting(config, out)
    minutes = {s.source_lang: s.source_minutes}
    minutes.update({lang: t["train_minutes"] for lang, t in s.targets.items()})
    splits = build_per_language(s.out / "data", minutes, progress, **s.synth)
    runs: dict[str, dict] = {}
    for lang, cell in s.cells():
        run_dir = run_cell(s, splits, lang, cell, progress)
        runs.setdefault(lang, {})[cell] = summarise(s, splits[lang]["test"], run_dir)
    for cells in runs.values():
        compare_with_direct(cells)
    results = {
        "name": s.name,
        "source": {"lang": s.source_lang, "train_minutes": s.source_minutes},
        "targets": s.targets,
        "base": s.base,
        "threshold": s.threshold,
        "recipe": dataclasses.asdict(s.recipe),
        "st_recipe": dataclasses.asdict(s.st_recipe),
        "runs": runs,
    }
    plot(s, runs)
    save_outcome(s.out, results, st_transfer_report(results))
    return results


def run_cell(s: Setting, splits: dict, lang: str, cell: str, progress: bool) -> Path:
    """Train one cell (or reuse its finished run); returns its run directory."""
    from xasr.models.build import read_model_config, resolve_model
    from xasr.transfer.finetune import TransferOptions, transfer
    from xasr.transfer.st import StOptions, st_enhanced_transfer

    run_dir = s.out / "runs" / lang / cell
    if (run_dir / "result.json").is_file():
        return run_dir
    target, source = splits[lang], splits[s.source_lang]
    print(f"== {lang} / {cell} ==", flush=True)
    if cell == "scratch":
        base_cfg, _ = read_model_config(resolve_model(s.base))
        opts = TransferOptions(scratch=True, expect=base_cfg)
        transfer(run_dir, [target["train"]], [target["dev"]], opts, s.recipe, progress=progress)
    elif cell == "direct":
        opts = TransferOptions(source=s.base)
        transfer(run_dir, [target["train"]], [target["dev"]], opts, s.recipe, progress=progress)
    else:
        name = cell.removeprefix("st-")
        translator = s.targets[lang]["translators"][name]
        st = StOptions(
            source_speech=str(source["train"]),
            source_valid=str(source["dev"]),
            translate_with=translator["backend"],
            translator_command=translator["command"],
            translator_model=translator["model"],
            lang=lang,
            st_run=str(s.out / "st" / f"{lang}-{name}"),
        )
        st_enhanced_transfer(
            run_dir,
            [target["train"]],
            [target["dev"]],
            TransferOptions(source=s.base),
            st,
            s.recipe,
            s.st_recipe,
            progress=progress,
        )
    return run_dir


def summarise(s: Setting, test_manifest: Path, run_dir: Path) -> dict:
    """The run's stop, test figures, steps to the threshold; for ST cells its ST model's
    BLEU/chrF, stop and the MT's coverage."""
    from xasr.decode.evaluate import evaluate
    from xasr.experiments.report import steps_to_cer

    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    path = run_dir / "test.json"
    if not path.is_file():
        evaluate(run_dir / "model", test_manifest, output=path, progress=False)
    scored = json.loads(path.read_text(encoding="utf-8"))
    summary = {
        "run_dir": str(run_dir),
        "test": {"wer": scored["wer"], "cer": scored["cer"]},
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped_by": result["stopped_by"],
        "minutes": result["seconds"] / 60,
        "steps_to_threshold": steps_to_cer(run_dir, s.threshold),
    }
    chain = run_dir / "chain.json"
    if chain.is_file():
        summary["st"] = st_summary(Path(json.loads(chain.read_text(encoding="utf-8"))["st_run"]))
    return summary


def compare_with_direct(cells: dict) -> None:
    """Each ST cell gains ``vs_direct``: the paired bootstrap of its test WER against direct
    transfer's (``xasr.decode.significance``), so that the verdict can tell a win from chance."""
    from xasr.decode.significance import compare_runs

    direct = cells.get("direct")
    if direct is None:
        return
    theirs = json.loads((Path(direct["run_dir"]) / "test.json").read_text(encoding="utf-8"))
    for run in cells.values():
        if "st" in run:
            ours = json.loads((Path(run["run_dir"]) / "test.json").read_text(encoding="utf-8"))
            run["vs_direct"] = compare_runs(ours, theirs, "wer")


def st_summary(st_dir: Path) -> dict:
    quality = json.loads((st_dir / "translation.json").read_text(encoding="utf-8"))
    result = json.loads((st_dir / "result.json").read_text(encoding="utf-8"))
    coverage = json.loads((st_dir / "translations" / "coverage.json").read_text(encoding="utf-8"))
    mt = coverage["translate"]["train"]
    return {
        "run_dir": str(st_dir),
        "bleu": quality["bleu"],
        "chrf": quality["chrf"],
        "cer": quality["cer"],
        "untranslated_words": mt.get("untranslated_words", 0) / max(mt.get("words", 0), 1),
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped_by": result["stopped_by"],
        "minutes": result["seconds"] / 60,
    }


def plot(s: Setting, runs: dict) -> None:
    from xasr.experiments.report import plot_curves

    for lang, cells in runs.items():
        dirs = {cell: Path(run["run_dir"]) for cell, run in cells.items()}
        plot_curves(dirs, s.out / f"curves-{lang}.png", f"{s.name}: {lang} dev CER")


def st_transfer_report(results: dict) -> str:
    """Markdown: per target a table of its cells, then the ST models and the verdict."""
    src = results["source"]
    head = (
        f"| target | cell | test WER | test CER | steps to dev CER ≤ {results['threshold']:.0%} "
        "| best / steps (stop) | minutes |"
    )
    lines = [
        f"# {results['name']}: speech-translation-enhanced transfer from {results['base']}",
        "",
        f"ST models trained on {src['train_minutes']:g} min of {src['lang']} speech with MT "
        "pseudo-labels; targets trained on "
        + ", ".join(f"{k} {t['train_minutes']:g} min" for k, t in results["targets"].items())
        + ".",
        "",
        head,
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for lang, cells in results["runs"].items():
        for cell, run in cells.items():
            reached = run["steps_to_threshold"]
            lines.append(
                f"| {lang} | {cell} | {run['test']['wer']:.1%} | {run['test']['cer']:.1%} | "
                f"{'never' if reached is None else reached} | "
                f"{run['best_step']} / {run['steps']} ({run['stopped_by']}) | {run['minutes']:.1f} |"
            )
    lines += [
        "",
        "ST models (held-out English speech against its MT text):",
        "",
        "| ST model | BLEU | chrF | CER | MT words left untranslated | best / steps (stop) | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, cells in results["runs"].items():
        for cell, run in cells.items():
            if "st" in run:
                st = run["st"]
                lines.append(
                    f"| {src['lang']}->{lang} ({cell.removeprefix('st-')}) | {st['bleu']:.1f} | "
                    f"{st['chrf']:.1f} | {st['cer']:.1%} | {st['untranslated_words']:.1%} | "
                    f"{st['best_step']} / {st['steps']} ({st['stopped_by']}) | {st['minutes']:.1f} |"
                )
    return "\n".join(lines + ["", *verdict(results)]) + "\n"


def verdict(results: dict) -> list[str]:
    """Per ST cell: its test WER against direct transfer's, relative change, the paired
    bootstrap's 95% interval of the difference, and whether the paper's direction
    (ST-enhanced beats direct) held: "held" only when the interval lies below zero, "reversed"
    when above, a tie otherwise; then which runs did not early-stop."""
    from xasr.decode.significance import direction, interval_text

    lines = []
    for lang, cells in results["runs"].items():
        best = min(cells, key=lambda c: cells[c]["test"]["wer"])
        lines.append(f"{lang}: lowest test WER **{best}** ({cells[best]['test']['wer']:.1%}).")
        direct = cells.get("direct")
        for cell, run in cells.items():
            if "st" not in run or direct is None:
                continue
            ours, theirs = run["test"]["wer"], direct["test"]["wer"]
            change = (ours - theirs) / theirs if theirs else 0.0
            compared = run.get("vs_direct")
            held = direction(compared, ours, theirs, "direct transfer")
            interval = (
                f", {interval_text(compared)} paired-bootstrap 95% interval" if compared else ""
            )
            lines.append(
                f"{lang}, {cell} (ST BLEU {run['st']['bleu']:.1f}): test WER {ours:.1%} against "
                f"direct transfer's {theirs:.1%} ({change:+.1%} relative{interval}): the paper's "
                f"direction (ST-enhanced beats direct transfer) {held}."
            )
    capped = not_early_stopped(results)
    lines.append(
        f"Stopped otherwise than by early stopping: {', '.join(capped)}."
        if capped
        else "Every run, ST models included, stopped by early stopping."
    )
    return lines


def not_early_stopped(results: dict) -> list[str]:
    """The runs (recognizers and ST models) that stopped otherwise than by early stopping."""
    names = []
    for lang, cells in results["runs"].items():
        for cell, run in cells.items():
            if run["stopped_by"] != EARLY:
                names.append(f"{lang}/{cell}")
            if run.get("st", {}).get("stopped_by", EARLY) != EARLY:
                names.append(f"{lang}/{cell}'s ST model")
    return names
