"""`xasr experiment CONFIG.yaml`: one resumable grid of transfer runs, its results and report.

Cells are bases x targets x train_minutes x seeds x strategies. Each cell is a run directory
``OUT/cells/<target>/<base>/<N>min/seed<S>/<strategy>/`` trained by
``xasr.transfer.finetune.transfer`` and evaluated on the target's test set into ``cell.json``.

Resumability: a cell with ``cell.json`` is finished and only re-read; a cell whose training
finished (``result.json``) is only evaluated; a cell killed mid-training resumes from its
``checkpoints/last.ckpt`` (transfer's own resume). Each cell keeps the recipe and options it
was started with (``cell-spec.json``); a config that changes them for an existing cell is an
error rather than a silent mix of old and new results.

Scratch strategies (``scratch: true``) depend on a base only through its architecture (and
vocabulary kind): they run once per target/size/seed for each distinct architecture, in
``OUT/cells/<target>/arch-<tag>/...``, and stand for every base of that architecture.

Data: a synth target is built once at the largest size; a smaller size is the prefix of its
train manifest up to N minutes (``xasr.data.manifest.take_minutes``: XLT-Synth's train split is
the shortest prefix of a fixed pool order, so this prefix equals a smaller build). Real
manifests follow the same rule, in the order of the file (no shuffling). Both write
``OUT/data/<target>/train-<N>min.jsonl``.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import re
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from xasr.config import MODEL_SIZES, ModelConfig, TrainConfig, from_dict, load_yaml
from xasr.data.manifest import read_manifest, take_minutes, write_manifest
from xasr.decode.evaluate import evaluate
from xasr.errors import XasrError
from xasr.experiments.demo import DEMO_RECIPE, EARLY_STEP
from xasr.experiments.report import (
    cer_at_step,
    markdown_table,
    plot_curves,
    plot_lines,
    steps_to_cer,
)
from xasr.io import write_text
from xasr.models.build import model_config, read_model_config, resolve_model
from xasr.transfer.finetune import TransferOptions, transfer
from xasr.transfer.forgetting import evaluate_before_after, evaluation_key

CONFIG_KEYS = (
    "name",
    "out",
    "bases",
    "targets",
    "synth",
    "train_minutes",
    "seeds",
    "strategies",
    "recipe",
    "source_data",
    "threshold_cer",
    "rank_sources",
)
SYNTH_DEFAULTS = {"dev_utts": 100, "test_utts": 200, "conditions": "noisy", "seed": 0}
SYNTH_TARGET_KEYS = ("lang", "topics", *SYNTH_DEFAULTS)
REAL_TARGET_KEYS = ("train", "dev", "test")
BASE_KEYS = ("model", "recipe", "name", "max_minutes", "train")
RANK_KEYS = ("steps",)
DEFAULT_BASES = ["en-small"]
DEFAULT_STRATEGIES = {"transfer": {}, "scratch": {"scratch": True}}
DEFAULT_THRESHOLD_CER = 0.3
RUNNER_OPTIONS = ("source", "expect")  # TransferOptions fields the runner sets itself
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
SOURCE_DIR = "_source"  # OUT/data/_source: source_data (names of targets start alphanumeric)
CSV_COLUMNS = (
    "target",
    "base",
    "minutes",
    "seed",
    "strategy",
    "test_cer",
    "test_wer",
    "best_dev_cer",
    "steps",
    "best_step",
    "stopped_by",
    "train_seconds",
    "steps_to_threshold",
    f"dev_cer_at_step_{EARLY_STEP}",
    "source_cer_before",
    "source_cer_after",
    "source_cer_change",
    "source_wer_change",
    "target_cer_before",
    "target_cer_after",
    "target_cer_change",
    "bases",
    "cell",
)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Base:
    name: str
    model: str  # what transfer() gets as its source: a model directory or a shipped name
    recipe: Path | None = None  # built with build_base_model into OUT/bases/<name> when set
    arch: str = ""  # scratch runs are shared by bases with the same tag
    max_minutes: float | None = None  # caps a recipe base's training (e.g. on a CPU)
    train: tuple = ()  # (key, value) pairs of TrainConfig replacing the recipe's for this build


@dataclass(frozen=True)
class Target:
    name: str
    synth: dict | None = None  # {lang, topics?, dev_utts, test_utts, conditions, seed}
    manifests: dict | None = None  # {train, dev, test}; source_data: {train?, test}
    train_minutes: float | None = None  # source_data only


@dataclass(frozen=True)
class Strategy:
    name: str
    options: dict  # TransferOptions keyword arguments
    recipe: dict  # TrainConfig keys overriding the experiment's recipe for this strategy

    @property
    def scratch(self) -> bool:
        return bool(self.options.get("scratch"))


@dataclass(frozen=True)
class Experiment:
    name: str
    config: Path
    out: Path
    bases: tuple[Base, ...]
    targets: tuple[Target, ...]
    minutes: tuple[float, ...]
    seeds: tuple[int, ...]
    strategies: tuple[Strategy, ...]
    recipe: TrainConfig
    source_data: Target | None = None
    threshold_cer: float = DEFAULT_THRESHOLD_CER
    rank_steps: int | None = None


@dataclass(frozen=True)
class Cell:
    target: str
    base: str  # a base's name, or arch-<tag> for a scratch cell
    minutes: float
    seed: int
    strategy: Strategy
    source: Base  # the base handed to transfer() (for scratch: the first of its architecture)
    bases: tuple[str, ...]  # the bases this cell stands for
    dir: Path = field(compare=False)

    @property
    def id(self) -> str:
        return "/".join(self.dir.parts[-5:])

    def state(self) -> tuple[str, str]:
        """("done" | "partial" | "todo", detail)."""
        if (self.dir / "cell.json").is_file():
            return "done", ""
        if (self.dir / "result.json").is_file():
            return "partial", "trained; evaluation only"
        if (self.dir / "checkpoints" / "last.ckpt").is_file():
            return "partial", "resumes from checkpoints/last.ckpt"
        return "todo", ""


def load_experiment(path: str | Path, out: str | Path | None = None) -> Experiment:
    """Read and check an experiment config; every mistake is an XasrError naming the key."""
    path = Path(path)
    data = load_yaml(path)
    where = str(path)
    _check_keys(data, CONFIG_KEYS, where)
    for key in ("name", "targets", "train_minutes"):
        if key not in data:
            raise XasrError(f"{where}: missing key {key!r}")
    name = _name(data["name"], f"{where}: name")
    out = Path(out or data.get("out") or Path("runs") / "experiments" / name)

    minutes = _number_list(data["train_minutes"], f"{where}: train_minutes", positive=True)
    seeds = _number_list(data.get("seeds", [0]), f"{where}: seeds", integer=True)
    synth = {**SYNTH_DEFAULTS, **_mapping(data.get("synth", {}), f"{where}: synth")}
    _check_keys(synth, tuple(SYNTH_DEFAULTS), f"{where}: synth")

    recipe = _recipe(data.get("recipe", {}), f"{where}: recipe")
    targets_data = _mapping(data["targets"], f"{where}: targets")
    if not targets_data:
        raise XasrError(f"{where}: targets is empty")
    targets = tuple(
        _target(_name(tname, f"{where}: targets"), spec, synth, f"{where}: targets.{tname}")
        for tname, spec in targets_data.items()
    )
    source_data = None
    if data.get("source_data") is not None:
        source_data = _target(
            SOURCE_DIR, data["source_data"], synth, f"{where}: source_data", source=True
        )
    strategies_data = _mapping(data.get("strategies", DEFAULT_STRATEGIES), f"{where}: strategies")
    if not strategies_data:
        raise XasrError(f"{where}: strategies is empty")
    strategies = tuple(
        _strategy(_name(sname, f"{where}: strategies"), spec, recipe, source_data, where)
        for sname, spec in strategies_data.items()
    )
    bases_data = data.get("bases", DEFAULT_BASES)
    if not isinstance(bases_data, list) or not bases_data:
        raise XasrError(f"{where}: bases must be a non-empty list")
    bases = tuple(_base(entry, out, f"{where}: bases[{i}]") for i, entry in enumerate(bases_data))
    duplicate = _duplicate([b.name for b in bases])
    if duplicate:
        raise XasrError(
            f"{where}: two bases are called {duplicate!r}; name one: {{model: ..., name: ...}}"
        )
    threshold = data.get("threshold_cer", DEFAULT_THRESHOLD_CER)
    if not _is_number(threshold) or threshold <= 0:
        raise XasrError(f"{where}: threshold_cer must be a positive number, got {threshold!r}")
    rank_steps = None
    if data.get("rank_sources") is not None:
        rank = _mapping(data["rank_sources"], f"{where}: rank_sources")
        _check_keys(rank, RANK_KEYS, f"{where}: rank_sources")
        rank_steps = rank.get("steps", 200)
        if not isinstance(rank_steps, int) or isinstance(rank_steps, bool) or rank_steps <= 0:
            raise XasrError(f"{where}: rank_sources.steps must be a positive integer")
    return Experiment(
        name=name,
        config=path,
        out=out,
        bases=bases,
        targets=targets,
        minutes=tuple(sorted(minutes)),
        seeds=tuple(seeds),
        strategies=strategies,
        recipe=recipe,
        source_data=source_data,
        threshold_cer=float(threshold),
        rank_steps=rank_steps,
    )


def _check_keys(data: dict, allowed, where: str) -> None:
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise XasrError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise XasrError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _name(value, where: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise XasrError(
            f"{where}: {value!r} is not a usable name (letters, digits, '.', '_', '+', '-'; "
            "it becomes a directory name)"
        )
    return value


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_list(value, where: str, positive: bool = False, integer: bool = False) -> list:
    values = value if isinstance(value, list) else [value]
    kind = "integer" if integer else "number"
    for v in values:
        if not _is_number(v) or (integer and not isinstance(v, int)) or (positive and v <= 0):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(v, str) else ""
            raise XasrError(
                f"{where}: expected a list of {'positive ' if positive else ''}{kind}s, "
                f"got {v!r}{hint}"
            )
    if not values:
        raise XasrError(f"{where}: empty list")
    duplicate = _duplicate(values)
    if duplicate is not None:
        raise XasrError(f"{where}: {duplicate!r} appears twice")
    return values


def _duplicate(values):
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _train_keys(data: dict, where: str) -> None:
    """TrainConfig values of the wrong type (YAML turns 1e-3 into a string) fail here, named."""
    defaults = TrainConfig()
    for key, value in data.items():
        default = getattr(defaults, key, None)
        if _is_number(default) and not _is_number(value):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
            raise XasrError(f"{where}.{key}: expected a number, got {value!r}{hint}")


def _recipe(data, where: str) -> TrainConfig:
    data = _mapping(data, where)
    if "seed" in data:
        raise XasrError(f"{where}: seed is set per cell; list the seeds under `seeds:`")
    _train_keys(data, where)
    return from_dict(TrainConfig, {**asdict(DEMO_RECIPE), **data}, where)


def _target(name: str, spec, synth: dict, where: str, source: bool = False) -> Target:
    spec = _mapping(spec, where)
    if "lang" in spec:
        allowed = SYNTH_TARGET_KEYS + (("train_minutes",) if source else ())
        _check_keys(spec, allowed, where)
        params = {**synth, **{k: v for k, v in spec.items() if k != "train_minutes"}}
        if params.get("topics") is not None:
            topics = params["topics"]
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise XasrError(f"{where}: topics must be a list of fortune file names")
            params["topics"] = tuple(topics)
        minutes = None
        if source:
            minutes = spec.get("train_minutes", 10)
            if not _is_number(minutes) or minutes < 0:
                raise XasrError(f"{where}: train_minutes must be a number of minutes")
        return Target(name, synth=params, train_minutes=minutes)
    required = ("test",) if source else REAL_TARGET_KEYS
    allowed = ("train", "test") if source else REAL_TARGET_KEYS
    _check_keys(spec, allowed, where)
    missing = [k for k in required if k not in spec]
    if missing:
        raise XasrError(
            f"{where}: give either `lang:` (an XLT-Synth target) or the manifests "
            f"{', '.join(allowed)}; missing {', '.join(missing)}"
        )
    return Target(name, manifests={k: Path(str(v)) for k, v in spec.items()})


def _strategy(
    name: str, spec, recipe: TrainConfig, source_data: Target | None, where: str
) -> Strategy:
    where = f"{where}: strategies.{name}"
    spec = _mapping(spec or {}, where)
    option_keys = {f.name for f in fields(TransferOptions)} - set(RUNNER_OPTIONS)
    train_keys = {f.name for f in fields(TrainConfig)} - {"seed"}
    unknown = sorted(set(spec) - option_keys - train_keys)
    if unknown:
        raise XasrError(
            f"{where} (strategy {name!r}): unknown key(s) {', '.join(map(str, unknown))}; "
            f"TransferOptions keys: {', '.join(sorted(option_keys))}; or TrainConfig keys "
            "overriding the recipe for this strategy"
        )
    options = {k: v for k, v in spec.items() if k in option_keys}
    overrides = {k: v for k, v in spec.items() if k not in option_keys}
    _train_keys(overrides, where)
    from_dict(TrainConfig, {**asdict(recipe), **overrides}, where)
    train_split = source_data is not None and (
        source_data.synth is not None or "train" in (source_data.manifests or {})
    )
    to_fill = manifests_to_fill(options)
    for manifest in to_fill:
        if not train_split:
            raise XasrError(
                f"{where} (strategy {name!r}): {manifest} is needed (replay_fraction or "
                "ewc_weight); name it, or give a `source_data:` with a train split to fill it from"
            )
    try:  # range checks, with the manifests source_data will fill
        TransferOptions(source="check", **options, **dict.fromkeys(to_fill, "source_data"))
    except (TypeError, XasrError) as err:
        raise XasrError(f"{where} (strategy {name!r}): {err}") from None
    return Strategy(name, options, overrides)


def manifests_to_fill(options: dict) -> list[str]:
    """The source manifests a strategy uses but does not name: replay_manifest for replay,
    fisher_manifest for EWC (which otherwise falls back to replay_manifest)."""
    missing = []
    if options.get("replay_fraction") and not options.get("replay_manifest"):
        missing.append("replay_manifest")
    if options.get("ewc_weight") and not (
        options.get("fisher_manifest") or options.get("replay_manifest")
    ):
        missing.append("fisher_manifest")
    return missing


def _base(entry, out: Path, where: str) -> Base:
    if isinstance(entry, str):
        entry = {"model": entry}
    entry = _mapping(entry, where)
    _check_keys(entry, BASE_KEYS, where)
    if ("model" in entry) == ("recipe" in entry):
        raise XasrError(f"{where}: give exactly one of model (a directory or name) and recipe")
    if "recipe" in entry:
        recipe_path = Path(str(entry["recipe"]))
        recipe = load_yaml(recipe_path)
        name = _name(entry.get("name") or recipe.get("name"), f"{where}: name")
        size = recipe.get("size")
        if size is None:
            raise XasrError(f"{recipe_path}: missing key 'size'")
        vocab_kind = (recipe.get("train") or {}).get("vocab", "char")
        model = out / "bases" / name / "run" / "model"
        max_minutes = entry.get("max_minutes")
        if max_minutes is not None and not isinstance(max_minutes, (int, float)):
            raise XasrError(f"{where}: max_minutes must be a number, got {max_minutes!r}")
        train = _mapping(entry.get("train", {}), f"{where}: train")
        from_dict(TrainConfig, {**(recipe.get("train") or {}), **train}, f"{where}: train")
        arch = arch_tag(model_config(size), vocab_kind)
        return Base(name, str(model), recipe_path, arch, max_minutes, tuple(sorted(train.items())))
    model = str(entry["model"])
    directory = resolve_model(model)
    default_name = Path(model).name
    if default_name == "model":  # a run directory's model: name it after the run
        default_name = Path(model).resolve().parent.name
    name = _name(entry.get("name") or default_name, f"{where}: name")
    model_cfg, _ = read_model_config(directory)
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    return Base(name, model, None, arch_tag(model_cfg, vocab.get("kind", "char")))


def arch_tag(cfg: ModelConfig, vocab_kind: str = "char") -> str:
    """A short name for an architecture + vocabulary kind: a size name where one matches."""
    names = [name for name, size in MODEL_SIZES.items() if size == cfg]
    if names:
        tag = names[0]
    else:
        digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:6]
        tag = f"d{cfg.d_model}x{cfg.n_layers}-{digest}"
    return tag + ("-sp" if vocab_kind == "sentencepiece" else "")


# --------------------------------------------------------------------------- the grid


def plan_cells(exp: Experiment) -> list[Cell]:
    """Every cell of the grid, smaller sizes first; scratch once per architecture."""
    cells = []
    for target in exp.targets:
        for minutes in exp.minutes:
            for seed in exp.seeds:
                for strategy in exp.strategies:
                    groups: dict[str, list[Base]] = {}
                    for base in exp.bases:
                        key = f"arch-{base.arch}" if strategy.scratch else base.name
                        groups.setdefault(key, []).append(base)
                    for key, bases in groups.items():
                        cells.append(
                            Cell(
                                target=target.name,
                                base=key,
                                minutes=minutes,
                                seed=seed,
                                strategy=strategy,
                                source=bases[0],
                                bases=tuple(b.name for b in bases),
                                dir=exp.out
                                / "cells"
                                / target.name
                                / key
                                / f"{minutes:g}min"
                                / f"seed{seed}"
                                / strategy.name,
                            )
                        )
    return cells


@dataclass(frozen=True)
class TargetData:
    train: dict[float, Path]  # minutes -> prefix manifest
    dev: Path | None
    test: Path


def prepare_data(exp: Experiment, target: Target, progress: bool) -> TargetData:
    """Build (or reuse) a target's data and write its train prefixes, one per size."""
    folder = exp.out / "data" / target.name
    if target.synth is not None:
        splits = _synth(target, folder, max(exp.minutes), progress)
    else:
        splits = dict(target.manifests)
    utterances = read_manifest(splits["train"])
    total = sum(u.duration or 0.0 for u in utterances) / 60
    train = {}
    for minutes in exp.minutes:
        prefix = take_minutes(utterances, minutes)
        if len(prefix) == len(utterances) and total < minutes:
            raise XasrError(
                f"target {target.name}: the train manifest {splits['train']} holds "
                f"{total:.2f} minutes, less than train_minutes {minutes:g}"
            )
        path = folder / f"train-{minutes:g}min.jsonl"
        write_manifest(path, prefix)
        train[minutes] = path
    return TargetData(train, splits["dev"], splits["test"])


def prepare_source(exp: Experiment, progress: bool) -> TargetData:
    """source_data: its train split (replay, EWC) and test split (forgetting)."""
    source = exp.source_data
    if source.synth is not None:
        splits = _synth(source, exp.out / "data" / SOURCE_DIR, source.train_minutes, progress)
    else:
        splits = dict(source.manifests)
    train = {0.0: splits["train"]} if "train" in splits else {}
    return TargetData(train, splits.get("dev"), splits["test"])


def _synth(target: Target, folder: Path, train_minutes: float, progress: bool) -> dict:
    from xasr.data.synth import build_xlt_synth

    params = dict(target.synth)
    lang = params.pop("lang")
    topics = params.pop("topics", None)
    if topics is not None:
        if "topics" not in inspect.signature(build_xlt_synth).parameters:
            raise XasrError(
                f"target {target.name}: topics needs build_xlt_synth(topics=...), "
                "which this version of xasr lacks"
            )
        params["topics"] = tuple(topics)
    return build_xlt_synth(
        [lang], folder, train_minutes=train_minutes, progress=progress, **params
    )[lang]


def _build_bases(exp: Experiment, progress: bool) -> None:
    from xasr.experiments.base_model import build_base_model

    for base in exp.bases:
        if base.recipe is None:
            continue
        work = exp.out / "bases" / base.name
        if (work / "figures.json").is_file():
            continue
        print(f"== base {base.name}: building from {base.recipe} ==", flush=True)
        build_base_model(
            base.recipe,
            work,
            publish=False,
            progress=progress,
            max_minutes=base.max_minutes,
            train_overrides=dict(base.train),
        )


def cell_options(cell: Cell, source_train: Path | None) -> TransferOptions:
    options = dict(cell.strategy.options)
    for manifest in manifests_to_fill(options):
        options[manifest] = str(source_train)
    return TransferOptions(source=cell.source.model, **options)


def cell_recipe(exp: Experiment, cell: Cell) -> TrainConfig:
    return from_dict(
        TrainConfig, {**asdict(exp.recipe), **cell.strategy.recipe, "seed": cell.seed}, cell.id
    )


def _check_spec(cell: Cell, spec: dict) -> None:
    """A cell keeps the recipe and options it started with; a changed config is an error."""
    path = cell.dir / "cell-spec.json"
    if not path.is_file():
        cell.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=1))
        return
    old = json.loads(path.read_text())
    # Keys present in both (a field added to xasr later is not a change); manifest paths and
    # loader workers do not change what a cell measures.
    changed = [
        f"{part}.{k}"
        for part in ("recipe", "options")
        for k in sorted(set(old[part]) & set(spec[part]))
        if not k.endswith("_manifest") and k != "num_workers" and old[part][k] != spec[part][k]
    ]
    if changed:
        raise XasrError(
            f"{cell.dir} was started with other settings ({', '.join(changed)}); delete that "
            "directory to run it again with the new ones, or set another `out`"
        )


def run_cell(
    exp: Experiment,
    cell: Cell,
    data: TargetData,
    source: TargetData | None,
    progress: bool,
) -> dict:
    """Train (or resume), evaluate and record one cell; a finished cell is only read."""
    source_train = None
    if source is not None and source.train:
        source_train = next(iter(source.train.values()))
    opts = cell_options(cell, source_train)
    cfg = cell_recipe(exp, cell)
    spec = {
        "base": cell.base,
        "options": {k: v for k, v in asdict(opts).items() if k not in RUNNER_OPTIONS},
        "recipe": asdict(cfg),
    }
    _check_spec(cell, spec)
    record_path = cell.dir / "cell.json"
    changed = not record_path.is_file()
    if not changed:
        record = json.loads(record_path.read_text())
    else:
        if not (cell.dir / "result.json").is_file():
            transfer(cell.dir, data.train[cell.minutes], data.dev, opts, cfg, progress=progress)
        record = {
            "train": json.loads((cell.dir / "result.json").read_text()),
            "test": evaluate(cell.dir / "model", data.test, progress=False),
        }
    # Forgetting is measured for finished cells too when source_data was added later
    # (evaluation only, never training again).
    if source is not None and not cell.strategy.scratch and "forgetting" not in record:
        # The adapted model's target score is record["test"]; the base's scores are shared by
        # every cell of that base: neither is decoded again.
        _EVALUATIONS[evaluation_key(cell.dir / "model", data.test)] = record["test"]
        record["forgetting"] = forgetting(
            cell.source.model, cell.dir / "model", {"source": source.test, "target": data.test}
        )
        changed = True
    if changed:
        write_text(record_path, json.dumps(record, indent=1, ensure_ascii=False))
    return record


# Evaluations made in this process, shared between cells (see forgetting()).
_EVALUATIONS: dict[tuple[str, str], dict] = {}


def forgetting(source_model: str, adapted: Path, tests: dict[str, Path]) -> dict:
    """CER/WER of the base and of the adapted model on each test set, and the changes."""
    results = evaluate_before_after(source_model, adapted, tests, known=_EVALUATIONS)
    return {
        name: {
            "cer_before": r["before"]["cer"],
            "cer_after": r["after"]["cer"],
            "cer_change": r["cer_change"],
            "wer_before": r["before"]["wer"],
            "wer_after": r["after"]["wer"],
            "wer_change": r["wer_change"],
        }
        for name, r in results.items()
    }


def cell_row(exp: Experiment, cell: Cell, record: dict) -> dict:
    """One results row; curve-derived fields are read from the run's metrics at report time."""
    trained, test = record["train"], record["test"]
    row = {
        "target": cell.target,
        "base": cell.base,
        "minutes": cell.minutes,
        "seed": cell.seed,
        "strategy": cell.strategy.name,
        "test_cer": test["cer"],
        "test_wer": test["wer"],
        "best_dev_cer": trained["best_dev_cer"],
        "steps": trained["steps"],
        "best_step": trained["best_step"],
        "stopped_by": trained["stopped_by"],
        "train_seconds": trained["seconds"],
        "steps_to_threshold": steps_to_cer(cell.dir, exp.threshold_cer),
        f"dev_cer_at_step_{EARLY_STEP}": cer_at_step(cell.dir, EARLY_STEP),
        "bases": " ".join(cell.bases),
        "scratch": cell.strategy.scratch,
        "cell": str(cell.dir.relative_to(exp.out)),
    }
    for name, f in (record.get("forgetting") or {}).items():
        if name in ("source", "target"):
            row.update({f"{name}_{k}": v for k, v in f.items()})
    return row


# --------------------------------------------------------------------------- the runner


def run_experiment(
    config: str | Path,
    out: str | Path | None = None,
    dry_run: bool = False,
    only_report: bool = False,
    progress: bool = True,
) -> dict:
    """Run (or resume) every cell of the experiment, then write results and the report.

    ``dry_run`` lists the cells and their state (done / partial / todo) and runs nothing;
    ``only_report`` rebuilds results and report from the finished cells' ``cell.json``.
    Returns the results (as written to ``OUT/results.json``).
    """
    exp = load_experiment(config, out)
    cells = plan_cells(exp)
    if dry_run:
        return dry_run_listing(exp, cells)
    records: dict[str, dict] = {}  # cell id -> its cell.json
    if only_report:
        for cell in cells:
            if (cell.dir / "cell.json").is_file():
                records[cell.id] = json.loads((cell.dir / "cell.json").read_text())
        rank = _read_rank(exp)
    else:
        _EVALUATIONS.clear()  # model files of a re-run cell may have changed since
        _build_bases(exp, progress)
        source = prepare_source(exp, progress) if exp.source_data else None
        data = {t.name: prepare_data(exp, t, progress) for t in exp.targets}
        for i, cell in enumerate(cells, start=1):
            state, detail = cell.state()
            what = {"done": "finished", "todo": "training"}.get(state, detail)
            print(f"== [{i}/{len(cells)}] {cell.id}: {what} ==", flush=True)
            records[cell.id] = run_cell(exp, cell, data[cell.target], source, progress)
        rank = run_rank(exp, data, progress)
    rows = [cell_row(exp, cell, records[cell.id]) for cell in cells if cell.id in records]
    missing = [cell.id for cell in cells if cell.id not in records]
    results = {
        "name": exp.name,
        "config": str(exp.config),
        "recipe": asdict(exp.recipe),
        "threshold_cer": exp.threshold_cer,
        "cells": len(cells),
        "missing": missing,
        "rows": rows,
        "rank_sources": rank,
    }
    exp.out.mkdir(parents=True, exist_ok=True)
    (exp.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    write_csv(exp.out / "results.csv", rows)
    path, headline = write_report(exp, rows, rank, missing)
    print(headline)
    print(f"report: {path}")
    return results


def dry_run_listing(exp: Experiment, cells: list[Cell]) -> dict:
    states = {}
    lines = []
    for cell in cells:
        state, detail = cell.state()
        states[cell.id] = state
        lines.append(f"  {state:8} {cell.id}" + (f"  ({detail})" if detail else ""))
    counts = {s: list(states.values()).count(s) for s in ("done", "partial", "todo")}
    print(
        f"experiment {exp.name}: {len(cells)} cells in {exp.out} "
        f"(done {counts['done']}, partial {counts['partial']}, todo {counts['todo']})"
    )
    for base in exp.bases:
        if base.recipe is not None:
            built = (exp.out / "bases" / base.name / "figures.json").is_file()
            print(f"  base {base.name}: {'built' if built else 'to build'} from {base.recipe}")
    print("\n".join(lines))
    return {"cells": states, **counts}


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- rank_sources


def _rank_path(exp: Experiment, target: str) -> Path:
    return exp.out / "rank" / target / "rank.json"


def run_rank(exp: Experiment, data: dict[str, TargetData], progress: bool) -> dict | None:
    """Quick source ranking per target (largest size, first seed); None: the hook is absent."""
    if exp.rank_steps is None or len(exp.bases) < 2:
        return {}
    try:
        from xasr.experiments.rank import rank_sources
    except ImportError:
        return None
    ranks = {}
    by_model = {base.model: base.name for base in exp.bases}
    for target in exp.targets:
        path = _rank_path(exp, target.name)
        if not path.is_file():
            print(f"== rank sources for {target.name} ({exp.rank_steps} steps) ==", flush=True)
            cfg = from_dict(TrainConfig, {**asdict(exp.recipe), "seed": exp.seeds[0]})
            ranking = rank_sources(
                path.parent,
                data[target.name].train[max(exp.minutes)],
                data[target.name].dev,
                [base.model for base in exp.bases],
                cfg,
                steps=exp.rank_steps,
                progress=progress,
            )
            ranking = [{**r, "base": by_model.get(str(r["source"]), r["source"])} for r in ranking]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ranking, indent=1))
        ranks[target.name] = json.loads(path.read_text())
    return ranks


def _read_rank(exp: Experiment) -> dict:
    return {
        t.name: json.loads(_rank_path(exp, t.name).read_text())
        for t in exp.targets
        if _rank_path(exp, t.name).is_file()
    }


# --------------------------------------------------------------------------- the report


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if len(values) > 1:
        return statistics.mean(values), statistics.stdev(values)
    return values[0], None


def _label(exp: Experiment, row: dict) -> str:
    """Row label in the tables: the strategy, prefixed by the base when there are several."""
    if len(exp.bases) == 1:
        return row["strategy"]
    if row["scratch"]:
        archs = {b.arch for b in exp.bases}
        return row["strategy"] + (f" ({row['base']})" if len(archs) > 1 else "")
    return f"{row['base']} / {row['strategy']}"


def _group(exp: Experiment, rows: list[dict]) -> dict[str, dict[float, list[dict]]]:
    """label -> minutes -> rows (over seeds), in the config's order."""
    groups: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        groups.setdefault(_label(exp, row), {}).setdefault(row["minutes"], []).append(row)
    return groups


def _error_cell(rows: list[dict]) -> str:
    cer, cer_std = _mean_std([r["test_cer"] for r in rows])
    spread = f" ± {100 * cer_std:.1f}" if cer_std is not None else ""
    return f"{_pct(cer)}{spread} (WER {_pct(statistics.mean(r['test_wer'] for r in rows))})"


def _steps_cell(rows: list[dict]) -> str:
    reached = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
    if not reached:
        return "never"
    mean, std = _mean_std(reached)
    text = f"{mean:.0f}" + (f" ± {std:.0f}" if std is not None else "")
    return text + (f" ({len(reached)}/{len(rows)} seeds)" if len(reached) < len(rows) else "")


def _describe(target: Target) -> str:
    if target.synth is not None:
        s = target.synth
        topics = f", topics {', '.join(s['topics'])}" if s.get("topics") else ""
        return (
            f"XLT-Synth `{s['lang']}`{topics} ({s['conditions']}, seed {s['seed']}); "
            f"dev {s['dev_utts']} and test {s['test_utts']} utterances in held-out voices"
        )
    m = target.manifests
    return f"manifests: train `{m['train']}`, dev `{m['dev']}`, test `{m['test']}`"


def write_report(
    exp: Experiment, rows: list[dict], rank: dict | None, missing: list[str]
) -> tuple[Path, str]:
    """OUT/report.md and its plots (OUT/plots/); returns its path and the headline tables."""
    plots = exp.out / "plots"
    sizes = list(exp.minutes)
    size_header = [f"{m:g} min" for m in sizes]
    recipe = exp.recipe
    parts = [
        f"# Experiment `{exp.name}`",
        "",
        f"Config `{exp.config}`; {len(rows)} of {len(rows) + len(missing)} cells finished"
        + (f" ({len(missing)} not run yet)" if missing else "")
        + f". Bases: {', '.join(b.name for b in exp.bases)}; seeds: "
        f"{', '.join(map(str, exp.seeds))}. One recipe for every cell: lr {recipe.lr}, "
        f"{recipe.max_batch_seconds:g} s batches, validation every {recipe.val_every} steps, "
        f"early stopping after {recipe.patience} validations without dev-CER improvement, "
        f"cap {recipe.max_steps} steps"
        + (f" / {recipe.max_minutes:g} min" if recipe.max_minutes else "")
        + ". Strategies: "
        + "; ".join(
            f"`{st.name}`"
            + (
                " (" + ", ".join(f"{k}={v}" for k, v in {**st.options, **st.recipe}.items()) + ")"
                if st.options or st.recipe
                else ""
            )
            for st in exp.strategies
        )
        + ". Scratch runs once per target, size and seed for each architecture (it does not "
        "depend on a base's weights). Test CER: mean ± standard deviation over seeds; WER: mean.",
    ]
    headline = []
    for target in exp.targets:
        target_rows = [r for r in rows if r["target"] == target.name]
        parts += ["", f"## {target.name}", "", _describe(target), ""]
        if not target_rows:
            parts.append("No finished cells yet.")
            continue
        groups = _group(exp, target_rows)
        table = markdown_table(
            ["strategy", *size_header],
            [
                [label, *(_error_cell(by[m]) if m in by else "" for m in sizes)]
                for label, by in groups.items()
            ],
        )
        headline += [f"{target.name}: test CER (WER) by training minutes", table, ""]
        error_png = plot_lines(
            {
                label: [
                    (m, 100 * mean, None if std is None else 100 * std)
                    for m in sizes
                    if m in by
                    for mean, std in [_mean_std([r["test_cer"] for r in by[m]])]
                ]
                for label, by in groups.items()
            },
            plots / f"{target.name}-error-vs-minutes.png",
            f"{target.name}: test CER vs training data",
            "training minutes (log scale)",
            "test CER (%)",
            logx=True,
        )
        largest = max(r["minutes"] for r in target_rows)
        first_seed = min(r["seed"] for r in target_rows)
        curve_png = plot_curves(
            {
                _label(exp, r): exp.out / r["cell"]
                for r in target_rows
                if r["minutes"] == largest and r["seed"] == first_seed
            },
            plots / f"{target.name}-curves-{largest:g}min.png",
            f"{target.name}: dev CER while training ({largest:g} min, seed {first_seed})",
        )
        parts += [
            "### Test CER (WER) by training minutes",
            "",
            table,
            "",
            f"![error vs data size](plots/{error_png.name})",
            "",
            f"### Learning curves ({largest:g} min, seed {first_seed})",
            "",
            f"![learning curves](plots/{curve_png.name})",
            "",
            f"### Steps to dev CER ≤ {_pct(exp.threshold_cer)}",
            "",
            "First validation step at or below the threshold (mean over the seeds that reach it).",
            "",
            markdown_table(
                ["strategy", *size_header],
                [
                    [label, *(_steps_cell(by[m]) if m in by else "" for m in sizes)]
                    for label, by in groups.items()
                ],
            ),
        ]
        forgetting_rows = [r for r in target_rows if "source_cer_before" in r]
        if forgetting_rows:
            parts += ["", *_forgetting_section(exp, forgetting_rows)]
        if exp.rank_steps is not None and len(exp.bases) > 1:
            parts += ["", *_rank_section(exp, target.name, target_rows, rank)]
    capped = [r for r in rows if r["stopped_by"] != "early stopping"]
    parts += ["", "## Convergence", ""]
    if capped:
        parts.append(
            f"**Not converged:** {len(capped)} of {len(rows)} cells stopped by the cap (max "
            "steps or minutes) rather than early stopping, so their dev CER might still have "
            "improved: " + ", ".join(f"`{r['cell']}` ({r['stopped_by']})" for r in capped) + "."
        )
    else:
        parts.append("Every finished cell stopped by early stopping.")
    if missing:
        parts += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    path = exp.out / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path, "\n".join(headline)


def _forgetting_section(exp: Experiment, rows: list[dict]) -> list[str]:
    def mean(rows: list[dict], key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    table = markdown_table(
        [
            "strategy",
            "minutes",
            "source CER before",
            "source CER after",
            "change (points)",
            "target CER before",
            "target CER after",
        ],
        [
            [
                label,
                f"{m:g}",
                _pct(mean(by[m], "source_cer_before")),
                _pct(mean(by[m], "source_cer_after")),
                f"{100 * mean(by[m], 'source_cer_change'):+.1f}",
                _pct(mean(by[m], "target_cer_before")),
                _pct(mean(by[m], "target_cer_after")),
            ]
            for label, by in _group(exp, rows).items()
            for m in exp.minutes
            if m in by
        ],
    )
    return [
        "### Forgetting: the source test set before and after adaptation",
        "",
        (
            "CER of the base (before) and of the adapted model (after) on source_data's test "
            "set, and on the target's test set for comparison; mean over seeds."
        ),
        "",
        table,
    ]


def _rank_section(exp: Experiment, target: str, rows: list[dict], rank: dict | None) -> list[str]:
    title = f"### Quick source ranking ({exp.rank_steps} steps) vs the full runs"
    if rank is None:
        return [title, "", "Skipped: `xasr.experiments.rank.rank_sources` is not available."]
    if target not in (rank or {}):
        return [title, "", "Not run yet."]
    strategies = [s.name for s in exp.strategies if not s.scratch]
    strategy = "transfer" if "transfer" in strategies else (strategies or [None])[0]
    largest = max(exp.minutes)
    full = {}
    for base in exp.bases:
        cers = [
            r["test_cer"]
            for r in rows
            if r["base"] == base.name and r["strategy"] == strategy and r["minutes"] == largest
        ]
        if cers:
            full[base.name] = statistics.mean(cers)
    full_rank = {name: i for i, name in enumerate(sorted(full, key=full.get), start=1)}
    quick = rank[target]
    table = markdown_table(
        [
            "base",
            "quick rank",
            "quick dev CER",
            "slope",
            f"full test CER ({strategy})",
            "full rank",
        ],
        [
            [
                r["base"],
                r["rank"],
                _pct(r.get("dev_cer")),
                r.get("slope"),
                _pct(full.get(r["base"])),
                full_rank.get(r["base"]),
            ]
            for r in sorted(quick, key=lambda r: r["rank"])
        ],
    )
    lines = [
        title,
        "",
        (
            f"`rank_sources` at {largest:g} min, seed {exp.seeds[0]}; full runs: test CER of "
            f"`{strategy}` at {largest:g} min (mean over seeds)."
        ),
        "",
        table,
    ]
    both = [r for r in quick if r["base"] in full_rank]
    if len(both) >= 2:
        from scipy.stats import kendalltau, spearmanr

        quick_ranks = [r["rank"] for r in both]
        full_ranks = [full_rank[r["base"]] for r in both]
        rho = spearmanr(quick_ranks, full_ranks).statistic
        tau = kendalltau(quick_ranks, full_ranks).statistic
        lines += [
            "",
            f"Agreement over {len(both)} bases: Spearman ρ {rho:.2f}, Kendall τ {tau:.2f}.",
        ]
    return lines
