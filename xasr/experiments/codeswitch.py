"""`xasr experiment` with ``kind: codeswitch``: training strategies for a code-switched target
with a few minutes of speech and monolingual sources with more (Winata et al. 2020's
comparison), each from scratch and from a base model, same model and recipe.

Strategies (``strategies``, all by default):

* ``target``: the code-switched target alone;
* ``joint``: the target and the sources together (``joint``: TrainConfig keys, by default
  ``mixing: balanced``, one batch of each per step);
* ``joint-finetune``: the joint model fine-tuned on the target alone (``finetune``: keys);
* ``meta-paper``, ``meta-reference``: meta-transfer learning of that variant (``meta``: keys
  such as inner_lr, k_train, k_valid, meta_tasks); the target is the query set.

Starts (``starts``): ``scratch`` (the ``arch``/``size`` model) and ``base`` (transfer from
``base``, a model directory or shipped name, by token identity). Every run early-stops on the
target's dev set (pooled CER) and resumes when killed; each is evaluated on the target's test
set (WER, CER, MER and CER within each language's stretches) and on every source's test set
(what the strategy keeps of the sources). ``OUT/results.json``, ``OUT/report.md`` and
``OUT/curves.png`` (dev MER against steps) hold the outcome.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from xasr.config import TrainConfig, from_dict
from xasr.errors import XasrError
from xasr.experiments.config import load_named_yaml
from xasr.experiments.results import save_outcome

KEYS = (
    "kind",
    "name",
    "out",
    "target",
    "sources",
    "synth",
    "arch",
    "size",
    "base",
    "starts",
    "strategies",
    "recipe",
    "joint",
    "finetune",
    "meta",
    "threshold",
)
STRATEGIES = ("target", "joint", "joint-finetune", "meta-paper", "meta-reference")
STARTS = ("scratch", "base")
SYNTH_DEFAULTS = {"dev_utts": 60, "test_utts": 150, "conditions": "noisy", "seed": 0}
JOINT_DEFAULTS = {"mixing": "balanced"}
CJK_LANGS = ("zh", "cmn", "yue", "ja")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A parsed config: the target pair and its train minutes, the sources' minutes, the
    recipes of each strategy, what to run."""

    name: str
    out: Path
    pair: str
    target_minutes: float
    sources: dict[str, float]
    synth: dict
    arch: str
    size: str
    base: str | None
    starts: tuple[str, ...]
    strategies: tuple[str, ...]
    recipe: TrainConfig
    joint: TrainConfig
    finetune: TrainConfig
    meta: TrainConfig  # the meta-paper recipe; meta-reference differs in meta_variant only
    threshold: float


def read_setting(config: str | Path, out: str | Path | None = None) -> Setting:
    data = load_named_yaml(config, KEYS)
    target = data.get("target") or {}
    if not isinstance(target, dict) or "-" not in str(target.get("pair", "")):
        raise XasrError(f"{config}: target must give a code-switched pair, e.g. {{pair: es-en}}")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict) or not sources:
        raise XasrError(f"{config}: sources must map language codes to train minutes")
    starts = tuple(data.get("starts") or STARTS)
    strategies = tuple(data.get("strategies") or STRATEGIES)
    for key, values, allowed in (
        ("starts", starts, STARTS),
        ("strategies", strategies, STRATEGIES),
    ):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise XasrError(f"{config}: {key}: unknown {bad}; allowed: {', '.join(allowed)}")
    if "base" in starts and not data.get("base"):
        raise XasrError(f"{config}: starts has base: name the base model (base: en-small)")
    recipe = from_dict(TrainConfig, data.get("recipe") or {}, f"{config}: recipe")

    def variant(key: str, defaults: dict) -> TrainConfig:
        changes = {**defaults, **(data.get(key) or {})}
        return from_dict(TrainConfig, {**dataclasses.asdict(recipe), **changes}, f"{config}: {key}")

    return Setting(
        name=data["name"],
        out=Path(out or data.get("out") or Path("runs") / "experiments" / data["name"]),
        pair=str(target["pair"]),
        target_minutes=float(target.get("train_minutes", 5)),
        sources={str(k): float(v) for k, v in sources.items()},
        synth={**SYNTH_DEFAULTS, **(data.get("synth") or {})},
        arch=str(data.get("arch", "ctc")),
        size=str(data.get("size", "small")),
        base=data.get("base"),
        starts=starts,
        strategies=strategies,
        recipe=recipe,
        joint=variant("joint", JOINT_DEFAULTS),
        finetune=variant("finetune", {}),
        meta=variant("meta", {"meta_variant": "paper"}),
        threshold=float(data.get("threshold", 0.5)),
    )


def run_codeswitch(config: str | Path, out: str | Path | None = None, progress=True) -> dict:
    """Build the data, run every (start, strategy) cell, evaluate, write the report."""
    from xasr.data.synth import build_per_language

    s = read_setting(config, out)
    minutes = {s.pair: s.target_minutes, **s.sources}
    splits = build_per_language(s.out / "data", minutes, progress, **s.synth)
    runs = {}
    for start in s.starts:
        for strategy in s.strategies:
            run_dir = run_cell(s, splits, start, strategy, progress)
            runs[f"{start}/{strategy}"] = summarise(s, splits, run_dir)
    results = {
        "name": s.name,
        "pair": s.pair,
        "target_minutes": s.target_minutes,
        "sources": s.sources,
        "arch": s.arch,
        "size": s.size,
        "base": s.base,
        "threshold": s.threshold,
        "recipe": dataclasses.asdict(s.recipe),
        "runs": runs,
    }
    compare_with_joint(s.pair, runs)
    plot_dev_curves(s, runs)
    save_outcome(s.out, results, codeswitch_report(results))
    return results


def run_cell(s: Setting, splits: dict, start: str, strategy: str, progress: bool) -> Path:
    """Train one cell (or reuse its finished run); returns its run directory."""
    from xasr.models.build import model_config
    from xasr.transfer.finetune import TransferOptions, transfer

    run_dir = s.out / "runs" / start / strategy
    if (run_dir / "result.json").is_file():
        return run_dir
    target = splits[s.pair]
    everything = [target["train"], *(splits[lang]["train"] for lang in s.sources)]
    if start == "scratch":
        opts = TransferOptions(scratch=True, expect=model_config(s.size, s.arch))
    else:
        opts = TransferOptions(source=str(s.base))
    if strategy == "target":
        train, cfg = [target["train"]], s.recipe
    elif strategy == "joint":
        train, cfg = everything, s.joint
    elif strategy == "joint-finetune":
        joint = run_cell(s, splits, start, "joint", progress)
        train, cfg = [target["train"]], s.finetune
        opts = TransferOptions(source=str(joint / "model"))
    else:
        cfg = dataclasses.replace(s.meta, meta_variant=strategy.removeprefix("meta-"))
        train = everything
    print(f"== {start} / {strategy} ==", flush=True)
    transfer(run_dir, train, [target["dev"]], opts, cfg, progress=progress)
    return run_dir


def summarise(s: Setting, splits: dict, run_dir: Path) -> dict:
    """The run's stop, its test figures on the target and every source, its dev curve."""
    from xasr.decode.evaluate import evaluate
    from xasr.train.curve import read_curve

    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    tests = {}
    for lang in (s.pair, *s.sources):
        path = run_dir / f"test-{lang}.json"
        if not path.is_file():
            evaluate(run_dir / "model", splits[lang]["test"], output=path, progress=False)
        scored = json.loads(path.read_text(encoding="utf-8"))
        tests[lang] = {k: scored[k] for k in ("wer", "cer", "mer") if k in scored}
        if "by_stretch_language" in scored:
            tests[lang]["by_stretch_language"] = scored["by_stretch_language"]
    # dev MER (runs from before validation logged it: WER, the same without CJK text)
    curve = [
        (r["step"], r.get("val_mer", r["val_wer"])) for r in read_curve(run_dir) if "val_wer" in r
    ]
    return {
        "run_dir": str(run_dir),
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped_by": result["stopped_by"],
        "minutes": result["seconds"] / 60,
        "test": tests,
        "dev_mer": curve,
        "steps_to_threshold": next((st for st, w in curve if w <= s.threshold), None),
    }


def compare_with_joint(pair: str, runs: dict) -> None:
    """Each meta-transfer run gains ``vs_joint``: the paired bootstrap of its test MER on the
    code-switched set against joint training's from the same start
    (``xasr.decode.significance``), so that the verdict can tell a win from chance."""
    from xasr.decode.significance import compare_runs

    def scored(run: dict) -> dict:
        return json.loads((Path(run["run_dir"]) / f"test-{pair}.json").read_text(encoding="utf-8"))

    for name, run in runs.items():
        start, _, strategy = name.partition("/")
        joint = runs.get(f"{start}/joint")
        if strategy.startswith("meta-") and joint is not None:
            run["vs_joint"] = compare_runs(scored(run), scored(joint), "mer")


def plot_dev_curves(s: Setting, runs: dict) -> Path:
    from xasr.experiments.report import plot_lines

    cjk = any(lang in CJK_LANGS for lang in s.pair.split("-"))
    label = "dev MER (%)" if cjk else "dev MER = WER (%)"
    series = {name: [(st, 100 * w) for st, w in run["dev_mer"]] for name, run in runs.items()}
    return plot_lines(series, s.out / "curves.png", f"{s.name}: {s.pair} dev", "step", label)


def codeswitch_report(results: dict) -> str:
    """Markdown: one row per cell (target MER/CER, CER within each language's stretches, the
    sources' test CER, steps, stop), then which cell won and whether meta-transfer beat joint
    training as in the paper."""
    pair, runs = results["pair"], results["runs"]
    sources = list(results["sources"])
    stretch_langs = pair.split("-")
    head = (
        ["start / strategy", f"{pair} MER", f"{pair} CER"]
        + [f"CER in {lang} stretches" for lang in stretch_langs]
        + [f"{lang} test CER" for lang in sources]
        + [f"steps to dev MER ≤ {results['threshold']:.0%}", "best / steps (stop)", "minutes"]
    )
    lines = [
        f"# {results['name']}: {pair} code-switched target, {results['target_minutes']:g} min",
        "",
        (
            f"Sources: {', '.join(f'{k} {v:g} min' for k, v in results['sources'].items())}; "
            f"model {results['arch']} {results['size']}; base {results['base']}."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for name, run in runs.items():
        target = run["test"][pair]
        by_stretch = target.get("by_stretch_language", {})
        cells = [name, _pct(target.get("mer")), _pct(target["cer"])]
        cells += [_pct(by_stretch.get(lang, {}).get("cer")) for lang in stretch_langs]
        cells += [_pct(run["test"][lang]["cer"]) for lang in sources]
        reached = run["steps_to_threshold"]
        cells += [
            "never" if reached is None else str(reached),
            f"{run['best_step']} / {run['steps']} ({run['stopped_by']})",
            f"{run['minutes']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *verdict(results)]
    return "\n".join(lines) + "\n"


def verdict(results: dict) -> list[str]:
    """The lowest MER; per start, the best meta-transfer variant against joint training:
    "held" only when the bootstrap's interval lies below zero, "reversed" when above, a tie
    otherwise; then which runs did not early-stop."""
    from xasr.decode.significance import direction, interval_text

    pair, runs = results["pair"], results["runs"]

    def mer(name):
        test = runs[name]["test"][pair]
        return test.get("mer", test["wer"])

    best = min(runs, key=mer)
    lines = [f"Lowest {pair} test MER: **{best}** ({mer(best):.1%})."]
    for start in dict.fromkeys(name.split("/")[0] for name in runs):
        metas = [n for n in runs if n.startswith(f"{start}/meta-")]
        joint = f"{start}/joint"
        if metas and joint in runs:
            top = min(metas, key=mer)
            compared = runs[top].get("vs_joint")
            held = direction(compared, mer(top), mer(joint), "joint training")
            interval = (
                f" ({interval_text(compared)} paired-bootstrap 95% interval)" if compared else ""
            )
            lines.append(
                f"From {start}: {top} {mer(top):.1%} against joint training {mer(joint):.1%}"
                f"{interval}: the paper's direction (meta-transfer beats joint training) {held}."
            )
    capped = [n for n, r in runs.items() if r["stopped_by"] != "early stopping"]
    lines.append(
        f"Stopped otherwise than by early stopping: {', '.join(capped)}."
        if capped
        else "Every run stopped by early stopping."
    )
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"
