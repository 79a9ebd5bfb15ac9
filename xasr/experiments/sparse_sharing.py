"""`xasr experiment` with ``kind: sparse-sharing``: Lu et al.'s (2022) comparison of
language-adaptive sparse sharing with a dense shared multilingual model and per-language
fine-tuned copies of it.

Runs, each resumable and reused when finished:

* ``dense`` (``OUT/runs/dense``): one model trained on every language at once (``dense``:
  TrainConfig keys over ``recipe``, e.g. temperature mixing, macro monitor);
* ``finetune-<lang>``: the dense model fine-tuned on one language (``finetune`` keys): a full
  copy per language;
* ``sparse-<s>`` (``-r<R>`` with ``rounds``: R > 1): masks at sparsity s (``OUT/masks-<s>``:
  ``xasr.transfer.sparse.find_masks`` from the dense model, ``adapt`` keys as the adaptation's
  recipe, its runs in ``OUT/adapt``, the first round's shared by every sparsity), then the dense model trained on every language through them (the ``dense`` recipe,
  batches of one language);
* ``dense-continued``: the same further training without masks, the sparse runs' control (the
  verdict compares against it, so the extra budget is not credited to sparse sharing).

Each is scored on every language's test set (sparse models through the language's mask).
``OUT/report.md``: test CER/WER per language and model; the parameters each language uses and
the total stored (a copy per language; the shared weights plus one bit per masked weight and
language); whether sparse sharing beat the dense model, as the paper reports.
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
    "kind", "name", "out", "languages", "synth", "arch", "size", "recipe", "dense", "finetune",
    "adapt", "sparsities", "rounds",
)  # fmt: skip
SYNTH_DEFAULTS = {"dev_utts": 60, "test_utts": 150, "conditions": "noisy", "seed": 0}
EARLY = "early stopping"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    out: Path
    languages: dict[str, float]
    synth: dict
    arch: str
    size: str
    dense: TrainConfig
    finetune: TrainConfig
    adapt: TrainConfig
    sparsities: tuple[float, ...]
    rounds: int


def read_setting(config: str | Path, out: str | Path | None = None) -> Setting:
    data = load_named_yaml(config, KEYS)
    languages = data.get("languages") or {}
    if not isinstance(languages, dict) or len(languages) < 2:
        raise XasrError(f"{config}: languages must map two or more codes to train minutes")
    sparsities = tuple(float(s) for s in data.get("sparsities") or ())
    if not sparsities or not all(0.0 < s < 1.0 for s in sparsities):
        raise XasrError(f"{config}: sparsities must list values in (0, 1), e.g. [0.3, 0.5, 0.7]")
    recipe = from_dict(TrainConfig, data.get("recipe") or {}, f"{config}: recipe")

    def variant(key: str, defaults: dict | None = None) -> TrainConfig:
        changes = {**(defaults or {}), **(data.get(key) or {})}
        merged = {**dataclasses.asdict(recipe), **changes}
        return from_dict(TrainConfig, merged, f"{config}: {key}")

    return Setting(
        name=data["name"],
        out=Path(out or data.get("out") or Path("runs") / "experiments" / data["name"]),
        languages={str(k): float(v) for k, v in languages.items()},
        synth={**SYNTH_DEFAULTS, **(data.get("synth") or {})},
        arch=str(data.get("arch", "ctc")),
        size=str(data.get("size", "xsmall")),
        dense=variant("dense", {"monitor": "macro"}),
        finetune=variant("finetune", {"monitor": "all"}),
        adapt=variant("adapt", {"monitor": "all"}),
        sparsities=sparsities,
        rounds=int(data.get("rounds", 1)),
    )


def run_sparse_sharing(config: str | Path, out: str | Path | None = None, progress=True) -> dict:
    """Build the data, train and score every run, write the report."""
    from xasr.data.synth import build_per_language

    s = read_setting(config, out)
    splits = build_per_language(s.out / "data", s.languages, progress, **s.synth)
    runs = {"dense": train_dense(s, splits, progress)}
    runs["dense-continued"] = train_continued(s, splits, progress)
    for lang in s.languages:
        runs[f"finetune-{lang}"] = train_finetuned(s, splits, lang, progress)
    for sparsity in s.sparsities:
        runs[sparse_name(s, sparsity)] = train_sparse(s, splits, sparsity, progress)
    summary = {name: summarise(s, splits, name, run) for name, run in runs.items()}
    for name in (n for n in summary if n.startswith("sparse-")):
        summary[name]["vs_control"] = against_control(summary, name, list(s.languages))
    results = {
        "name": s.name,
        "languages": s.languages,
        "arch": s.arch,
        "size": s.size,
        "rounds": s.rounds,
        "dense_recipe": dataclasses.asdict(s.dense),
        "runs": summary,
    }
    save_outcome(s.out, results, sparse_sharing_report(results))
    return results


def train_dense(s: Setting, splits: dict, progress: bool) -> Path:
    from xasr.models.build import model_config
    from xasr.train.loop import train

    run = s.out / "runs" / "dense"
    if not (run / "result.json").is_file():
        print("== dense ==", flush=True)
        train_manifests = [splits[lang]["train"] for lang in s.languages]
        dev = [splits[lang]["dev"] for lang in s.languages]
        size = model_config(s.size, s.arch)
        train(run, train_manifests, dev, s.dense, size, progress=progress)
    return run


def train_finetuned(s: Setting, splits: dict, lang: str, progress: bool) -> Path:
    from xasr.transfer.finetune import TransferOptions, transfer

    run = s.out / "runs" / f"finetune-{lang}"
    if not (run / "result.json").is_file():
        print(f"== finetune-{lang} ==", flush=True)
        opts = TransferOptions(source=str(s.out / "runs" / "dense" / "model"))
        transfer(
            run, [splits[lang]["train"]], [splits[lang]["dev"]], opts, s.finetune, progress=progress
        )
    return run


def sparse_name(s: Setting, sparsity: float) -> str:
    """``sparse-0.5``; ``sparse-0.5-r3`` for masks found in 3 rounds."""
    return f"sparse-{sparsity:g}" + (f"-r{s.rounds}" if s.rounds > 1 else "")


def continue_dense(s: Setting, splits: dict, run: Path, masks, progress: bool) -> Path:
    """The dense model trained further on every language, batches of one language each
    (through ``masks`` when given): the sparse runs and their dense control."""
    from xasr.transfer.finetune import TransferOptions, transfer

    if (run / "result.json").is_file():
        return run
    print(f"== {run.name} ==", flush=True)
    train = [splits[lang]["train"] for lang in s.languages]
    dev = [splits[lang]["dev"] for lang in s.languages]
    cfg = dataclasses.replace(s.dense, source_batches="language")
    opts = TransferOptions(source=str(s.out / "runs" / "dense" / "model"))
    transfer(run, train, dev, opts, cfg, progress=progress, masks=masks)
    return run


def train_continued(s: Setting, splits: dict, progress: bool) -> Path:
    """The control of the sparse runs: the same further training, no masks (so that what
    the extra budget and language batches buy is not credited to sparse sharing)."""
    return continue_dense(s, splits, s.out / "runs" / "dense-continued", None, progress)


def train_sparse(s: Setting, splits: dict, sparsity: float, progress: bool) -> Path:
    from xasr.transfer.sparse import find_masks

    run = s.out / "runs" / sparse_name(s, sparsity)
    if (run / "result.json").is_file():
        return run
    train = {lang: str(splits[lang]["train"]) for lang in s.languages}
    dev = {lang: str(splits[lang]["dev"]) for lang in s.languages}
    dense = str(s.out / "runs" / "dense" / "model")
    masks_dir = s.out / sparse_name(s, sparsity).replace("sparse-", "masks-")
    # one adaptation per language serves every sparsity (one-shot masks differ only in the
    # pruning); the later rounds of iterative schedules are kept apart by their schedule
    masks = find_masks(
        masks_dir, dense, train, dev, sparsity, s.adapt, s.rounds, progress, s.out / "adapt"
    )
    return continue_dense(s, splits, run, masks, progress)


def summarise(s: Setting, splits: dict, name: str, run: Path) -> dict:
    """Test CER/WER on the languages the run serves, its stop, the parameters it uses."""
    from xasr.decode.evaluate import evaluate
    from xasr.models.build import load_model_dir
    from xasr.models.masks import LanguageMasks, prunable_names

    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    langs = [name.removeprefix("finetune-")] if name.startswith("finetune-") else list(s.languages)
    tests = {}
    for lang in langs:
        path = run / f"test-{lang}.json"
        if not path.is_file():
            evaluate(run / "model", splits[lang]["test"], output=path, progress=False)
        scored = json.loads(path.read_text(encoding="utf-8"))
        tests[lang] = {"cer": scored["cer"], "wer": scored["wer"]}
    model, _, _ = load_model_dir(run / "model")
    total = sum(p.numel() for p in model.parameters())
    masks = LanguageMasks.load(run / "model")
    used = {lang: total for lang in langs}
    stored, extra = total, {}
    if masks is not None:
        params = dict(model.named_parameters())
        masked = sum(params[n].numel() for n in prunable_names(model))
        used = {lang: round(total - masked * (1 - masks.density(lang))) for lang in langs}
        stored = total + masked * len(masks.langs) / 32  # one bit per weight and language
        extra["mask_overlap"] = masks.overlap()
    return {
        "run_dir": str(run),
        "test": tests,
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped_by": result["stopped_by"],
        "minutes": result["seconds"] / 60,
        "parameters_used": used,
        "stored_float32_equivalent": stored,
        **extra,
    }


def against_control(summary: dict, name: str, langs: list[str]) -> dict:
    """Per language, the paired bootstrap (``xasr.decode.significance``) of run ``name``'s test
    CER against the control's (``dense-continued``): a win is told from chance."""
    from xasr.decode.significance import compare_runs

    def test(run: str, lang: str) -> dict:
        path = Path(summary[run]["run_dir"]) / f"test-{lang}.json"
        return json.loads(path.read_text(encoding="utf-8"))

    return {g: compare_runs(test(name, g), test("dense-continued", g), "cer") for g in langs}


def sparse_sharing_report(results: dict) -> str:
    runs, langs = results["runs"], list(results["languages"])
    sparse = [n for n in runs if n.startswith("sparse-")]
    head = ["language", "train min", "dense", "dense, trained on", "fine-tuned copy", *sparse]
    lines = [
        f"# {results['name']}: language-adaptive sparse sharing",
        "",
        (
            f"Model {results['arch']} {results['size']}; masks by magnitude after adapting the dense "
            f"model to each language ({results['rounds']} round(s)); test CER (WER)."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]

    def cell(name, lang):
        test = runs[name]["test"][lang]
        return f"{test['cer']:.1%} ({test['wer']:.1%})"

    for lang in langs:
        row = [lang, f"{results['languages'][lang]:g}", cell("dense", lang)]
        row += [cell("dense-continued", lang)]
        row += [cell(f"finetune-{lang}", lang), *(cell(n, lang) for n in sparse)]
        lines.append("| " + " | ".join(row) + " |")
    dense_total = runs["dense"]["stored_float32_equivalent"]
    lines += [
        "",
        (
            "Parameters (millions): used per language, and stored for all languages (masks at one bit "
            "per weight and language, in float32 equivalents)."
        ),
        "",
        "| model | per language | stored |",
        "|---|---:|---:|",
        f"| dense | {dense_total / 1e6:.2f} | {dense_total / 1e6:.2f} |",
        f"| fine-tuned copies | {dense_total / 1e6:.2f} | {dense_total * len(langs) / 1e6:.2f} |",
    ]
    for name in sparse:
        used = runs[name]["parameters_used"]
        mean = sum(used.values()) / len(used)
        lines.append(
            f"| {name} | {mean / 1e6:.2f} | {runs[name]['stored_float32_equivalent'] / 1e6:.2f} |"
        )
    lines += overlap_tables(runs, langs)
    return "\n".join(lines + ["", *verdict(results)]) + "\n"


def overlap_tables(runs: dict, langs: list[str]) -> list[str]:
    """Per sparse run, the matrix of its masks' overlap: row a, column b is the share of a's
    kept weights that b keeps too."""
    lines = []
    for name, run in runs.items():
        overlap = run.get("mask_overlap")
        if not overlap:
            continue
        lines += [
            "",
            f"{name}: share of the row language's kept weights that the column language keeps",
            "",
            "| | " + " | ".join(langs) + " |",
            "|---|" + "---:|" * len(langs),
        ]
        lines += [
            f"| {a} | " + " | ".join(f"{overlap[a][b]:.1%}" for b in langs) + " |" for a in langs
        ]
    return lines


def verdict(results: dict) -> list[str]:
    """Per sparse run: the languages whose test CER it has lower than the control's and than
    the dense start's; the paper's direction held only where every language's win is
    outside chance (the paired bootstrap's 95% interval below zero)."""
    from xasr.decode.significance import interval_text

    runs, langs = results["runs"], list(results["languages"])
    lines = []
    for name in (n for n in runs if n.startswith("sparse-")):
        fair, first = (
            beaten(runs, name, control, langs) for control in ("dense-continued", "dense")
        )
        compared = runs[name].get("vs_control")
        if compared is None:  # results written before the bootstrap: the figures alone
            held = "held" if len(fair) == len(langs) else "did not hold"
            detail = ""
        else:
            wins = [g for g in langs if compared[g]["verdict"] == "a"]
            rest = [g for g in langs if g not in wins]
            held = (
                "held"
                if not rest
                else f"held for {len(wins)} of {len(langs)} languages only (not shown for "
                f"{', '.join(rest)})"
            )
            detail = (
                f" Outside chance (paired bootstrap, 95%): {len(wins)} of {len(langs)}; CER "
                "differences: "
                + ", ".join(f"{g} {interval_text(compared[g])}" for g in langs)
                + "."
            )
        lines.append(
            f"{name}: lower test CER than the dense model trained on for the same budget for "
            f"{len(fair)} of {len(langs)} languages ({', '.join(fair) or 'none'}; than the "
            f"dense model it started from: {len(first)}): the paper's direction (sparse sharing "
            f"beats the dense model for every language) {held}.{detail}"
        )
    capped = [n for n, r in runs.items() if r["stopped_by"] != EARLY]
    lines.append(
        f"Stopped otherwise than by early stopping: {', '.join(capped)}."
        if capped
        else "Every run stopped by early stopping."
    )
    return lines


def beaten(runs: dict, name: str, control: str, langs: list[str]) -> list[str]:
    """The languages whose test CER run ``name`` has lower than ``control``."""
    return [g for g in langs if runs[name]["test"][g]["cer"] < runs[control]["test"][g]["cer"]]
