"""A grid's cells decoded with an n-gram LM too, its weights chosen on dev.

With ``lm:`` in a grid config, each target size gets a KenLM n-gram model trained on that
size's training transcripts only (dev and test sentences excluded), every cell's LM weight and
word bonus are tuned on the target's dev set (``xasr.decode.lm_tuning``), and the test set is
decoded once more with the chosen pair. Greedy decoding stays the grid's primary score; the
report adds a table of both. A cell finished before ``lm:`` was added is decoded, never trained
again (the key is not part of a cell's training spec)::

    lm: {order: 3}                       # defaults: the weights and bonuses of lm_tuning
    lm: {order: 3, lm_weights: [0, 0.5, 1], word_bonuses: [0, 1], beam_width: 32}
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from xasr.errors import XasrError
from xasr.experiments.common import check_keys, mapping, number_list
from xasr.experiments.tables import markdown_table

LM_KEYS = ("order", "lm_weights", "word_bonuses", "beam_width")
LM_TEST_FILE = "test-lm.json"  # a cell's hypotheses decoded with the LM


@dataclass(frozen=True)
class LmSpec:
    order: int = 3
    lm_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
    word_bonuses: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0)
    beam_width: int = 32


def read_lm_spec(value, where: str) -> LmSpec | None:
    """The ``lm:`` key of a grid config (None when absent); mistakes name the key."""
    if value is None:
        return None
    spec = mapping(value, where)
    check_keys(spec, LM_KEYS, where)
    order = spec.get("order", LmSpec.order)
    width = spec.get("beam_width", LmSpec.beam_width)
    for key, number, low in (("order", order, 2), ("beam_width", width, 1)):
        if not isinstance(number, int) or isinstance(number, bool) or number < low:
            raise XasrError(f"{where}.{key}: expected an integer of at least {low}, got {number!r}")
    weights = spec.get("lm_weights", list(LmSpec.lm_weights))
    bonuses = spec.get("word_bonuses", list(LmSpec.word_bonuses))
    return LmSpec(
        order,
        tuple(number_list(weights, f"{where}.lm_weights", positive=False)),
        tuple(number_list(bonuses, f"{where}.word_bonuses", positive=False)),
        width,
    )


def target_lm(spec: LmSpec, train: Path, exclude: list[Path], out: Path) -> Path:
    """The LM of one target size: trained on ``train``'s transcripts, without any sentence of
    ``exclude`` (dev, test); built once (workers of ``--jobs`` find it built)."""
    from xasr.decode.lm import build_lm

    if not out.is_file():
        tmp = out.with_name(f"{out.stem}.{os.getpid()}{out.suffix}")
        build_lm([train], tmp, order=spec.order, exclude=exclude)
        tmp.replace(out)
    return out


def decode_with_lm(spec: LmSpec, model_dir: Path, dev: Path, test: Path, lm: Path, out: Path):
    """The weights tuned on ``dev``, then ``test`` decoded with them (hypotheses in ``out``);
    returns the cell record's ``lm`` entry."""
    from xasr.decode.evaluate import evaluate
    from xasr.decode.lm_tuning import tune_lm_weights
    from xasr.decode.options import DecodingOptions

    tuned = tune_lm_weights(model_dir, dev, lm, spec.lm_weights, spec.word_bonuses,
                            beam_width=spec.beam_width)  # fmt: skip
    decoding = DecodingOptions(decoder="ctc", lm=str(lm), beam_width=spec.beam_width,
                               lm_weight=tuned.lm_weight, word_bonus=tuned.word_bonus)  # fmt: skip
    scored = evaluate(model_dir, test, output=out, progress=False, decoding=decoding)
    return {**tuned.to_json(), "test": {"cer": scored["cer"], "wer": scored["wer"]}}


def lm_row(record: dict) -> dict:
    """A results row's LM fields (none for a cell decoded without one)."""
    lm = record.get("lm")
    if not lm:
        return {}
    return {"test_cer_lm": lm["test"]["cer"], "test_wer_lm": lm["test"]["wer"],
            "dev_cer_lm": lm["dev_cer"], "lm_weight": lm["lm_weight"],
            "word_bonus": lm["word_bonus"]}  # fmt: skip


def lm_section(groups: dict[str, dict[float, list[dict]]], sizes: list[float]) -> list[str]:
    """Test CER and WER, greedy and with the LM (weights chosen on dev), means over seeds."""

    def cell(rows: list[dict]) -> str:
        rows = [r for r in rows if "test_cer_lm" in r]
        if not rows:
            return ""
        mean = lambda key: 100 * statistics.mean(r[key] for r in rows)
        return (f"{mean('test_cer'):.1f} → {mean('test_cer_lm'):.1f} % "
                f"(WER {mean('test_wer'):.1f} → {mean('test_wer_lm'):.1f} %)")  # fmt: skip

    table = [[label, *(cell(by.get(m, [])) for m in sizes)] for label, by in groups.items()]
    if not any(any(c for c in row[1:]) for row in table):
        return []
    return [
        "### With the n-gram LM (weights chosen on dev)",
        "",
        (
            "Test CER (WER): greedy → CTC beam search with an n-gram LM trained on the size's "
            "training transcripts only, its weight and word bonus chosen on dev per cell; means "
            "over seeds."
        ),
        "",
        markdown_table(["strategy", *(f"{m:g} min" for m in sizes)], table),
    ]
