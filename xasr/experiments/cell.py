"""One cell of an experiment: its data (synth or manifests, cut to N minutes), its transfer run
(resumed when killed), its evaluation and forgetting figures, its results row."""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xasr.config import TrainConfig, from_dict
from xasr.data.manifest import read_manifest, take_minutes, write_manifest
from xasr.decode.evaluate import evaluate
from xasr.errors import XasrError
from xasr.experiments.compare import SOURCE_TEST_FILE, TEST_FILE
from xasr.experiments.config import (
    RUNNER_OPTIONS,
    SOURCE_DIR,
    Cell,
    Experiment,
    Target,
    manifests_to_fill,
)
from xasr.experiments.engine import save_record
from xasr.experiments.lm_decoding import LM_TEST_FILE, decode_with_lm, lm_row, target_lm
from xasr.experiments.recipe import EARLY_STEP
from xasr.experiments.report import (
    cer_at_step,
    steps_to_cer,
)
from xasr.models.build import resolve_model
from xasr.models.pretrained.importers import has_ctc_head
from xasr.transfer.finetune import TransferOptions, transfer
from xasr.transfer.forgetting import evaluate_before_after, evaluation_key


@dataclass(frozen=True)
class TargetData:
    train: dict[float, Path]  # minutes -> prefix manifest
    dev: Path | None
    test: Path
    lms: dict[float, Path] = field(default_factory=dict)  # minutes -> n-gram LM (``lm:``)


def target_splits(exp: Experiment, target: Target, progress: bool) -> dict[str, Path]:
    """A target's whole {train, dev, test} manifests: given, synthesized, prepared from a
    corpus, or another target's synthetic twin."""
    folder = exp.out / "data" / target.name
    if target.synth is not None:
        return _synth(target, folder, max(exp.minutes), progress)
    if target.corpus is not None:
        return prepared_corpus(target.corpus, folder / "corpus")
    if target.paired is not None:
        from xasr.data.synth.paired import synth_paired

        real = next(t for t in exp.targets if t.name == target.paired["paired"])
        params = {k: v for k, v in target.paired.items() if k != "paired"}
        return synth_paired(target_splits(exp, real, progress), folder / "synth",
                            progress=progress, **params)  # fmt: skip
    return dict(target.manifests)


def prepared_corpus(spec: dict, folder: Path) -> dict[str, Path]:
    """``xasr prepare``'s manifests of ``spec`` in ``folder``, prepared once (``spec`` is kept
    beside them: another spec prepares again)."""
    from xasr.data.corpora import prepare_corpus
    from xasr.data.fillets import HeldOut

    record = folder / "corpus-spec.json"
    manifests = {split: folder / f"{split}.jsonl" for split in ("train", "dev", "test")}
    recorded = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if recorded == spec and all(path.is_file() for path in manifests.values()):
        return manifests
    held = {k: v for k, v in spec.items() if k not in ("corpus", "dir", "lang")}
    prepared = prepare_corpus(spec["corpus"], spec["dir"], folder, lang=spec.get("lang"),
                              held_out=HeldOut(**held))  # fmt: skip
    record.write_text(json.dumps(spec), encoding="utf-8")
    return prepared.manifests


def prepare_data(exp: Experiment, target: Target, progress: bool) -> TargetData:
    """Build (or reuse) a target's data and write its train prefixes, one per size (a paired
    target's prefixes hold the same lines as its real target's)."""
    folder = exp.out / "data" / target.name
    splits = target_splits(exp, target, progress)
    utterances = read_manifest(splits["train"])
    if target.paired is not None:  # the real target's prefixes decide which lines
        real = next(t for t in exp.targets if t.name == target.paired["paired"])
        real_lines = read_manifest(target_splits(exp, real, progress)["train"])
    total = sum(u.duration or 0.0 for u in utterances) / 60
    train = {}
    for minutes in exp.minutes:
        if target.paired is None:
            prefix = take_minutes(utterances, minutes)
        else:
            ids = {u.id for u in take_minutes(real_lines, minutes)}
            prefix = [u for u in utterances if u.id in ids]
        if len(prefix) == len(utterances) and total < minutes and target.paired is None:
            raise XasrError(
                f"target {target.name}: the train manifest {splits['train']} holds "
                f"{total:.2f} minutes, less than train_minutes {minutes:g}"
            )
        path = folder / f"train-{minutes:g}min.jsonl"
        write_if_changed(path, prefix)
        train[minutes] = path
    lms = {}
    if exp.lm is not None and splits["dev"] is not None:  # no dev set: no weights to choose
        held_out = [splits["dev"], splits["test"]]
        lms = {m: target_lm(exp.lm, path, held_out, folder / f"lm-{m:g}min-{exp.lm.order}gram.arpa")
               for m, path in train.items()}  # fmt: skip
    return TargetData(train, splits["dev"], splits["test"], lms)


def write_if_changed(path: Path, utterances) -> None:
    """Write the manifest through a file of this process's own, and put it in place only when
    it differs from what is there: workers preparing the same data (``--jobs``) neither race
    on one temporary name nor rewrite a file another is reading."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.new")
    write_manifest(tmp, utterances)
    if path.is_file() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        os.replace(tmp, path)


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


def build_bases(exp: Experiment, progress: bool) -> None:
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
    """The recipe, the strategy's own keys, the cell's seed, and the experiment's budget."""
    cfg = from_dict(
        TrainConfig, {**asdict(exp.recipe), **cell.strategy.recipe, "seed": cell.seed}, cell.id
    )
    # a meta-transfer step makes a support and a query pass per task (here: the target, and
    # the replayed source when there is one)
    tasks = 1 + bool(cell.strategy.options.get("replay_fraction"))
    return exp.budget.recipe(cfg, passes_per_step=2 * tasks if cfg.meta_variant else 1)


def cell_spec(exp: Experiment, cell: Cell, source: TargetData | None) -> dict:
    """What a cell's result depends on: its base, transfer options and recipe (the engine
    records and compares it; ``source`` None: the replay manifest's path is not compared)."""
    opts = cell_options(cell, _source_train(source))
    return {
        "base": cell.base,
        "options": {k: v for k, v in asdict(opts).items() if k not in RUNNER_OPTIONS},
        "recipe": asdict(cell_recipe(exp, cell)),
    }


def _source_train(source: TargetData | None) -> Path | None:
    if source is not None and source.train:
        return next(iter(source.train.values()))
    return None


def run_cell(
    exp: Experiment, cell: Cell, data: TargetData, source: TargetData | None, progress: bool
) -> dict:
    """Train (or resume), evaluate and record one cell; a finished cell is only read (and
    decoded again only when it has no ``test.json``, the hypotheses the report's bootstrap
    compares)."""
    opts = cell_options(cell, _source_train(source))
    cfg = cell_recipe(exp, cell)
    record_path = cell.dir / "cell.json"
    hypotheses = cell.dir / TEST_FILE
    changed = not record_path.is_file()
    if not changed:
        record = json.loads(record_path.read_text())
        if not hypotheses.is_file():  # a cell finished before cells kept their hypotheses
            evaluate(cell.dir / "model", data.test, output=hypotheses, progress=False)
    else:
        if not (cell.dir / "result.json").is_file():
            transfer(cell.dir, data.train[cell.minutes], data.dev, opts, cfg, progress=progress)
        record = {
            "train": json.loads((cell.dir / "result.json").read_text()),
            "test": evaluate(cell.dir / "model", data.test, output=hypotheses, progress=False),
        }
    # Forgetting is measured for finished cells too when source_data was added later
    # (evaluation only, never training again); a bare pretrained encoder (no CTC head) has no
    # score before adaptation.
    adapted = source is not None and not cell.strategy.scratch
    if adapted and has_ctc_head(resolve_model(cell.source.model)):
        # the source test's hypotheses, for the forgetting verdicts' bootstrap
        hypotheses = cell.dir / SOURCE_TEST_FILE
        if not hypotheses.is_file():
            on_source = evaluate(cell.dir / "model", source.test, output=hypotheses, progress=False)
            on_source.pop("hypotheses", None)
            _EVALUATIONS[evaluation_key(cell.dir / "model", source.test)] = on_source
        if "forgetting" not in record:
            # the adapted model's scores are decoded already; the base's are shared by every
            # cell of that base: none is decoded again
            _EVALUATIONS[evaluation_key(cell.dir / "model", data.test)] = record["test"]
            record["forgetting"] = forgetting(
                cell.source.model, cell.dir / "model", {"source": source.test, "target": data.test}
            )
            changed = True
    if data.lms and "lm" not in record:  # decoding only: added to finished cells too
        record["lm"] = decode_with_lm(exp.lm, cell.dir / "model", data.dev, data.test,
                                      data.lms[cell.minutes], cell.dir / LM_TEST_FILE)  # fmt: skip
        changed = True
    if changed:
        save_record(cell, record)
    return record


# Evaluations made in this process, shared between cells (see forgetting()).


_EVALUATIONS: dict[tuple[str, str], dict] = {}


def clear_evaluations() -> None:
    """Forget the decoded test sets: model files of a re-run cell may have changed since."""
    _EVALUATIONS.clear()


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
        "test_mer": test.get("mer"),
        "best_dev_cer": trained["best_dev_cer"],
        "steps": trained["steps"],
        "best_step": trained["best_step"],
        "stopped_by": trained["stopped_by"],
        "train_seconds": trained["seconds"],
        # what the run spent (runs from before the count have only their steps)
        "passes": trained.get("work", {}).get("passes"),
        "audio_seconds": trained.get("work", {}).get("audio_seconds"),
        "target_audio_seconds": trained.get("work", {}).get("target_audio_seconds"),
        "steps_to_threshold": steps_to_cer(cell.dir, exp.threshold_cer),
        f"dev_cer_at_step_{EARLY_STEP}": cer_at_step(cell.dir, EARLY_STEP),
        "bases": " ".join(cell.bases),
        "scratch": cell.strategy.scratch,
        "cell": str(cell.dir.relative_to(exp.out)),
        "code": record.get("code"),
    }
    row.update(lm_row(record))
    if "by_stretch_language" in test:  # a code-switched test set
        row["test_stretch_cer"] = {k: v["cer"] for k, v in test["by_stretch_language"].items()}
    for name, f in (record.get("forgetting") or {}).items():
        if name in ("source", "target"):
            row.update({f"{name}_{k}": v for k, v in f.items()})
    return row
