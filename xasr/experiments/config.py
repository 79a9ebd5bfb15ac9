"""An experiment config (YAML) as frozen dataclasses: bases, targets, sizes, seeds, strategies,
the shared recipe; every key checked, errors naming the key and where."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from xasr.checks import is_number as _is_number
from xasr.config import TrainConfig, from_dict, load_yaml
from xasr.errors import XasrError
from xasr.experiments.budget import ARM_FIXED_KEYS, Budget, check_no_budget_keys
from xasr.experiments.common import (
    check_keys,
    duplicate,
    mapping,
    number_list,
    read_common,
    train_keys,
    usable_name,
)
from xasr.experiments.engine import run_state
from xasr.experiments.lm_decoding import LmSpec, read_lm_spec
from xasr.models.build import model_config, read_model_config, resolve_model
from xasr.models.pretrained.importers import foreign_kind
from xasr.transfer.finetune import TransferOptions

GRID_KEYS = (  # beside xasr.experiments.common.COMMON_KEYS
    "bases",
    "targets",
    "synth",
    "train_minutes",
    "strategies",
    "source_data",
    "threshold_cer",
    "rank_sources",
    "primary",
    "select",
    "lm",
)


SYNTH_DEFAULTS = {"dev_utts": 100, "test_utts": 200, "conditions": "noisy", "seed": 0}


SYNTH_TARGET_KEYS = ("lang", "topics", *SYNTH_DEFAULTS)


REAL_TARGET_KEYS = ("train", "dev", "test")


# a corpus read by `xasr prepare` (xasr.data.corpora) when the experiment runs: fillets
CORPUS_TARGET_KEYS = ("corpus", "dir", "lang", "dev_minutes", "test_minutes", "dev_levels",
                      "test_levels", "seed")  # fmt: skip


# the synthetic twin of another target (xasr.data.synth.paired): the same lines and splits
PAIRED_TARGET_KEYS = ("paired", "lang", "conditions", "seed")


BASE_KEYS = ("model", "recipe", "name", "max_minutes", "train")


RANK_KEYS = ("steps",)


DEFAULT_BASES = ["en-small"]


DEFAULT_STRATEGIES = {"transfer": {}, "scratch": {"scratch": True}}


DEFAULT_THRESHOLD_CER = 0.3


RUNNER_OPTIONS = ("source", "expect")  # TransferOptions fields the runner sets itself


SOURCE_DIR = "_source"  # OUT/data/_source: source_data (names of targets start alphanumeric)


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
    corpus: dict | None = None  # {corpus, dir, lang, HeldOut's keys}: prepared here
    paired: dict | None = None  # {paired: another target, lang, conditions, seed}: its twin


@dataclass(frozen=True)
class Strategy:
    name: str
    options: dict  # TransferOptions keyword arguments
    recipe: dict  # TrainConfig keys overriding the experiment's recipe for this strategy
    bases: tuple[str, ...] | None = None  # the bases it runs from (default: every one)

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
    budget: Budget
    source_data: Target | None = None
    threshold_cer: float = DEFAULT_THRESHOLD_CER
    rank_steps: int | None = None
    # the verdicts named before any result: (arm, against, on) with strategy or family names,
    # on the target's test set or the source's (forgetting)
    primary: tuple[tuple[str, str, str], ...] = ()
    # families of strategies: per target and size, the member with the best mean dev score
    # stands for the family (a choice made on dev, never on test)
    select: tuple[tuple[str, tuple[str, ...]], ...] = ()
    lm: LmSpec | None = None  # also decode with an n-gram LM, weights chosen on dev


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
        return run_state(self.dir)


def load_experiment(path: str | Path, out: str | Path | None = None) -> Experiment:
    """Read and check an experiment config; every mistake is an XasrError naming the key."""
    path = Path(path)
    common, data = read_common(path, out, GRID_KEYS)
    where = str(path)
    for key in ("targets", "train_minutes"):
        if key not in data:
            raise XasrError(f"{where}: missing key {key!r}")
    name, out, seeds, budget, recipe = (
        common.name, common.out, common.seeds, common.budget, common.recipe
    )  # fmt: skip
    minutes = number_list(data["train_minutes"], f"{where}: train_minutes", positive=True)
    synth = {**SYNTH_DEFAULTS, **mapping(data.get("synth", {}), f"{where}: synth")}
    check_keys(synth, tuple(SYNTH_DEFAULTS), f"{where}: synth")
    targets_data = mapping(data["targets"], f"{where}: targets")
    if not targets_data:
        raise XasrError(f"{where}: targets is empty")
    targets = tuple(
        _target(usable_name(tname, f"{where}: targets"), spec, synth, f"{where}: targets.{tname}")
        for tname, spec in targets_data.items()
    )
    _check_pairs(targets, where)
    source_data = None
    if data.get("source_data") is not None:
        source_data = _target(
            SOURCE_DIR, data["source_data"], synth, f"{where}: source_data", source=True
        )
    strategies_data = mapping(data.get("strategies", DEFAULT_STRATEGIES), f"{where}: strategies")
    if not strategies_data:
        raise XasrError(f"{where}: strategies is empty")
    strategies = tuple(
        _strategy(usable_name(sname, f"{where}: strategies"), spec, recipe, source_data, where)
        for sname, spec in strategies_data.items()
    )
    bases_data = data.get("bases", DEFAULT_BASES)
    if not isinstance(bases_data, list) or not bases_data:
        raise XasrError(f"{where}: bases must be a non-empty list")
    bases = tuple(_base(entry, out, f"{where}: bases[{i}]") for i, entry in enumerate(bases_data))
    twice = duplicate([b.name for b in bases])
    if twice:
        raise XasrError(
            f"{where}: two bases are called {twice!r}; name one: {{model: ..., name: ...}}"
        )
    for st in strategies:
        unknown = sorted(set(st.bases or ()) - {b.name for b in bases})
        if unknown or st.bases == ():
            raise XasrError(f"{where}: strategies.{st.name}.bases: {unknown or 'empty'}; the "
                            f"bases are {', '.join(b.name for b in bases)}")  # fmt: skip
    names = [st.name for st in strategies]
    select = _select(data.get("select") or {}, names, f"{where}: select")
    primary = _primary(data.get("primary"), [*names, *(f for f, _ in select)], where)
    if any(on == "source" for _, _, on in primary) and data.get("source_data") is None:
        raise XasrError(f"{where}: primary test: source needs a source_data (its test set)")
    threshold = data.get("threshold_cer", DEFAULT_THRESHOLD_CER)
    if not _is_number(threshold) or threshold <= 0:
        raise XasrError(f"{where}: threshold_cer must be a positive number, got {threshold!r}")
    rank_steps = None
    if data.get("rank_sources") is not None:
        rank = mapping(data["rank_sources"], f"{where}: rank_sources")
        check_keys(rank, RANK_KEYS, f"{where}: rank_sources")
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
        budget=budget,
        source_data=source_data,
        threshold_cer=float(threshold),
        lm=read_lm_spec(data.get("lm"), f"{where}: lm"),
        rank_steps=rank_steps,
        primary=primary,
        select=select,
    )


def _select(data, names: list[str], where: str) -> tuple:
    """{family: [strategy, ...]}: each a new name whose members are strategies."""
    data = mapping(data, where)
    families = []
    for family, members in data.items():
        usable_name(family, where)
        if family in names:
            raise XasrError(f"{where}.{family}: a family cannot have a strategy's name")
        if not isinstance(members, list) or len(members) < 2 or not set(members) <= set(names):
            raise XasrError(
                f"{where}.{family}: list two or more of the strategies ({', '.join(names)})"
            )
        families.append((family, tuple(members)))
    return tuple(families)


def _primary(data, labels: list[str], where: str) -> tuple[tuple[str, str, str], ...]:
    """``primary: {arm: A, against: B, test: target | source}``, or a list of them: the
    comparisons the verdicts are about (``test: source``: the source test set of
    ``source_data``, forgetting; the key is not ``on``, which YAML reads as true)."""
    if data is None:
        return ()
    entries = data if isinstance(data, list) else [data]
    comparisons = []
    for i, entry in enumerate(entries):
        at = f"{where}: primary" + (f"[{i}]" if isinstance(data, list) else "")
        entry = mapping(entry, at)
        check_keys(entry, ("arm", "against", "test"), at)
        for key in ("arm", "against"):
            if entry.get(key) not in labels:
                raise XasrError(
                    f"{at}.{key} must be a strategy or family ({', '.join(labels)}), "
                    f"got {entry.get(key)!r}"
                )
        on = entry.get("test", "target")
        if on not in ("target", "source"):
            raise XasrError(f"{at}.test must be target or source, got {on!r}")
        comparisons.append((entry["arm"], entry["against"], on))
    return tuple(comparisons)


def _target(name: str, spec, synth: dict, where: str, source: bool = False) -> Target:
    spec = mapping(spec, where)
    if not source and ("corpus" in spec or "paired" in spec):
        return _prepared_target(name, spec, where)
    if "lang" in spec:
        allowed = SYNTH_TARGET_KEYS + (("train_minutes",) if source else ())
        check_keys(spec, allowed, where)
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
    check_keys(spec, allowed, where)
    missing = [k for k in required if k not in spec]
    if missing:
        raise XasrError(
            f"{where}: give either `lang:` (an XLT-Synth target) or the manifests "
            f"{', '.join(allowed)}; missing {', '.join(missing)}"
        )
    return Target(name, manifests={k: Path(str(v)) for k, v in spec.items()})


def _prepared_target(name: str, spec: dict, where: str) -> Target:
    """A corpus prepared when the experiment runs, or another target's synthetic twin."""
    if "corpus" in spec:
        check_keys(spec, CORPUS_TARGET_KEYS, where)
        if spec["corpus"] != "fillets" or "dir" not in spec:
            raise XasrError(f"{where}: corpus: fillets with its dir (the installed game data) "
                            f"is the one corpus prepared here; got {spec['corpus']!r}")  # fmt: skip
        return Target(name, corpus=dict(spec))
    check_keys(spec, PAIRED_TARGET_KEYS, where)
    if "lang" not in spec:
        raise XasrError(f"{where}: a paired target needs lang (the XLT-Synth voice, e.g. cs)")
    return Target(name, paired=dict(spec))


def _check_pairs(targets: tuple[Target, ...], where: str) -> None:
    """Each paired target names another target of the experiment that is not itself paired."""
    by_name = {t.name: t for t in targets}
    for t in targets:
        if t.paired is None:
            continue
        other = by_name.get(t.paired["paired"])
        if other is None or other.paired is not None:
            raise XasrError(
                f"{where}: targets.{t.name}: paired must name another target that is not "
                f"itself paired ({', '.join(n for n, o in by_name.items() if o.paired is None)})"
            )


def _strategy(
    name: str, spec, recipe: TrainConfig, source_data: Target | None, where: str
) -> Strategy:
    where = f"{where}: strategies.{name}"
    spec = dict(mapping(spec or {}, where))
    only = spec.pop("bases", None)
    if only is not None and (
        not isinstance(only, list) or not all(isinstance(b, str) for b in only)
    ):
        raise XasrError(f"{where}: bases must be a list of base names, got {only!r}")
    option_keys = {f.name for f in fields(TransferOptions)} - set(RUNNER_OPTIONS)
    recipe_keys = {f.name for f in fields(TrainConfig)} - {"seed"}
    unknown = sorted(set(spec) - option_keys - recipe_keys)
    if unknown:
        raise XasrError(
            f"{where} (strategy {name!r}): unknown key(s) {', '.join(map(str, unknown))}; "
            f"TransferOptions keys: {', '.join(sorted(option_keys))}; or TrainConfig keys "
            "overriding the recipe for this strategy"
        )
    options = {k: v for k, v in spec.items() if k in option_keys}
    overrides = {k: v for k, v in spec.items() if k not in option_keys}
    check_no_budget_keys(overrides, f"{where} (strategy {name!r})", ARM_FIXED_KEYS)
    train_keys(overrides, where)
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
    return Strategy(name, options, overrides, tuple(only) if only is not None else None)


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
    entry = mapping(entry, where)
    check_keys(entry, BASE_KEYS, where)
    if ("model" in entry) == ("recipe" in entry):
        raise XasrError(f"{where}: give exactly one of model (a directory or name) and recipe")
    if "recipe" in entry:
        recipe_path = Path(str(entry["recipe"]))
        recipe = load_yaml(recipe_path)
        name = usable_name(entry.get("name") or recipe.get("name"), f"{where}: name")
        size = recipe.get("size")
        if size is None:
            raise XasrError(f"{recipe_path}: missing key 'size'")
        vocab_kind = (recipe.get("train") or {}).get("vocab", "char")
        model = out / "bases" / name / "run" / "model"
        max_minutes = entry.get("max_minutes")
        if max_minutes is not None and not isinstance(max_minutes, (int, float)):
            raise XasrError(f"{where}: max_minutes must be a number, got {max_minutes!r}")
        train = mapping(entry.get("train", {}), f"{where}: train")
        from_dict(TrainConfig, {**(recipe.get("train") or {}), **train}, f"{where}: train")
        arch = recipe_model(recipe, recipe_path).short_name(vocab_kind)
        return Base(name, str(model), recipe_path, arch, max_minutes, tuple(sorted(train.items())))
    model = str(entry["model"])
    directory = resolve_model(model)
    default_name = Path(model).name
    if default_name == "model":  # a run directory's model: name it after the run
        default_name = Path(model).resolve().parent.name
    name = usable_name(entry.get("name") or default_name, f"{where}: name")
    if foreign_kind(directory):  # a pretrained encoder's directory: tagged without loading it
        return Base(name, model, None, foreign_arch_tag(directory))
    model_cfg, _ = read_model_config(directory)
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    return Base(name, model, None, model_cfg.short_name(vocab.get("kind", "char")))


def foreign_arch_tag(directory: Path) -> str:
    """``pretrained-<model type>-<digest>`` for a Hugging Face or CTranslate2 directory
    (``xasr.models.pretrained``), without loading it: its scratch cells share this tag."""
    config = directory / "config.json"
    text = config.read_bytes() if config.is_file() else b""
    kind = foreign_kind(directory)
    if kind == "hf":
        kind = json.loads(text)["model_type"]
    else:  # CTranslate2's config.json says little of the architecture: add the weights' size
        text += str((directory / "model.bin").stat().st_size).encode()
    return f"pretrained-{kind}-{hashlib.sha1(text).hexdigest()[:6]}"


def recipe_model(recipe: dict, recipe_path):
    """A base-model recipe's architecture: ``arch`` (ctc, aed) and ``size`` name a config;
    ``model`` replaces some of its keys."""
    cfg = model_config(recipe["size"], recipe.get("arch", "ctc"))
    try:
        return dataclasses.replace(cfg, **recipe.get("model", {}))
    except TypeError as err:  # an unknown key
        raise XasrError(f"{recipe_path}: model: {err}") from None
