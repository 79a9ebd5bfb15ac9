"""What every experiment kind's YAML reads alike: ``name``, ``out``, ``seeds``, ``budget``,
``early_stopping`` and ``recipe`` (``read_common``), and the checks that name a bad key and its
file in one line."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from xasr.checks import is_number
from xasr.config import TrainConfig, from_dict, load_yaml
from xasr.errors import XasrError
from xasr.experiments.budget import (
    ARM_FIXED_KEYS,
    Budget,
    check_no_budget_keys,
    parse_budget,
)
from xasr.experiments.recipe import DEFAULT_RECIPE

COMMON_KEYS = ("kind", "name", "out", "seeds", "budget", "early_stopping", "recipe")
DEFAULT_SEEDS = [0, 1, 2]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Common:
    """The keys every kind reads alike; ``recipe``: DEFAULT_RECIPE with the config's keys (the
    budget is applied per arm, ``budget.recipe``)."""

    name: str
    config: Path
    out: Path
    seeds: tuple[int, ...]
    budget: Budget
    recipe: TrainConfig


def read_common(path: Path, out, kind_keys: tuple[str, ...]) -> tuple[Common, dict]:
    """(the common settings, the whole YAML mapping), every top-level key checked against the
    common ones and ``kind_keys``."""
    data = load_yaml(path)
    where = str(path)
    check_keys(data, (*COMMON_KEYS, *kind_keys), where)
    for key in ("name", "budget"):
        if key not in data:
            raise XasrError(f"{where}: missing key {key!r}")
    name = usable_name(data["name"], f"{where}: name")
    common = Common(
        name=name,
        config=path,
        out=Path(out or data.get("out") or Path("runs") / "experiments" / name),
        seeds=tuple(number_list(data.get("seeds", DEFAULT_SEEDS), f"{where}: seeds", integer=True)),
        budget=parse_budget(data["budget"], data.get("early_stopping"), where),
        recipe=read_recipe(data.get("recipe", {}), f"{where}: recipe"),
    )
    return common, data


SYNTH_DEFAULTS = {"dev_utts": 60, "test_utts": 150, "conditions": "noisy", "seed": 0}


@dataclass(frozen=True)
class KindSetting:
    """What every kind's setting has: its ``common`` keys, and their name and out."""

    common: Common

    @property
    def name(self) -> str:
        return self.common.name

    @property
    def out(self) -> Path:
        return self.common.out


def read_synth(data: dict, where: str, defaults: dict = SYNTH_DEFAULTS) -> dict:
    """A config's ``synth:`` mapping over ``defaults``, its keys checked."""
    synth = {**defaults, **mapping(data.get("synth") or {}, f"{where}: synth")}
    check_keys(synth, tuple(defaults), f"{where}: synth")
    return synth


def recipe_variant(recipe: TrainConfig, changes, where: str) -> TrainConfig:
    """``recipe`` with one arm's own TrainConfig keys (never what the budget owns)."""
    changes = mapping(changes or {}, where)
    check_no_budget_keys(changes, where, ARM_FIXED_KEYS)
    train_keys(changes, where)
    return from_dict(TrainConfig, {**asdict(recipe), **changes}, where)


def check_keys(data: dict, allowed, where: str) -> None:
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise XasrError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise XasrError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def usable_name(value, where: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise XasrError(
            f"{where}: {value!r} is not a usable name (letters, digits, '.', '_', '+', '-'; "
            "it becomes a directory name)"
        )
    return value


def number_list(value, where: str, positive: bool = False, integer: bool = False) -> list:
    values = value if isinstance(value, list) else [value]
    kind = "integer" if integer else "number"
    for v in values:
        if not is_number(v) or (integer and not isinstance(v, int)) or (positive and v <= 0):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(v, str) else ""
            raise XasrError(
                f"{where}: expected a list of {'positive ' if positive else ''}{kind}s, "
                f"got {v!r}{hint}"
            )
    if not values:
        raise XasrError(f"{where}: empty list")
    twice = duplicate(values)
    if twice is not None:
        raise XasrError(f"{where}: {twice!r} appears twice")
    return values


def duplicate(values):
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def train_keys(data: dict, where: str) -> None:
    """TrainConfig values of the wrong type (YAML turns 1e-3 into a string) fail here, named."""
    defaults = TrainConfig()
    for key, value in data.items():
        default = getattr(defaults, key, None)
        if is_number(default) and not is_number(value):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
            raise XasrError(f"{where}.{key}: expected a number, got {value!r}{hint}")


def read_recipe(data, where: str) -> TrainConfig:
    data = mapping(data, where)
    if "seed" in data:
        raise XasrError(f"{where}: seed is set per cell; list the seeds under `seeds:`")
    check_no_budget_keys(data, where)
    train_keys(data, where)
    return from_dict(TrainConfig, {**asdict(DEFAULT_RECIPE), **data}, where)
