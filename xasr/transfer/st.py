"""Speech-translation-enhanced transfer (Wang, Gu, Pino, Interspeech 2020, "Improving
Cross-Lingual Transfer Learning for End-to-End Speech Recognition with Speech Translation").

Direct transfer gives the target recognizer a decoder that only knows source-language text.
The chain first teaches the source's attention encoder-decoder to write the *target* language
from *source* speech, then starts the recognizer from that whole model. Three stages, each in
its own directory:

1. **translate** (``ST_RUN/translations/``): the source-language speech manifests get a
   translation into the target language (``xasr.data.translate``: apertium, dictionary,
   command or hf; human translations already on every line are used as they are); the ST
   manifests are the same utterances with the translation as their text (``transcript`` keeps
   the source-language text; lines whose translation came out empty are dropped, counted);
2. **ST** (``ST_RUN``): ``transfer`` from the source AED to source speech -> target text, its
   vocabulary the target recognizer's (the characters of the target's training text and of
   the translations), its encoder, decoder and shared vocabulary rows from the source; then
   its own translation quality on held-out lines (BLEU and chrF, sacrebleu, against the MT
   text: ``ST_RUN/translation.json``);
3. **ASR** (``RUN``): ``transfer`` from the ST model to the target speech: every part copies,
   the output rows by token identity (all of the target's tokens are in the ST vocabulary).

``ST_RUN`` defaults to ``RUN/st``. ``ST_RUN/st.json`` records what the ST model was made from
(source model, speech, target language, translator); a later chain given the same ``st_run``
reuses its translations and model when those agree and refuses otherwise, so one ST model
serves several recognizers. A killed chain, run again, resumes in the stage it was in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from xasr import checks
from xasr.config import TrainConfig
from xasr.data.manifest import read_manifest, write_manifest
from xasr.data.sources import as_sources
from xasr.data.translate import BACKENDS, translate_manifest
from xasr.errors import XasrError
from xasr.io import output_dir, write_text
from xasr.models.build import read_model_config, resolve_model
from xasr.train.loop import TrainResult
from xasr.transfer.finetune import TransferOptions, transfer

log = logging.getLogger(__name__)

ST_RECORD = "st.json"  # what an ST run was made from
QUALITY = "translation.json"  # the ST model's BLEU/chrF on held-out lines


@dataclass(frozen=True)
class StOptions:
    """How the ST stage is made (README "Speech-translation-enhanced transfer")."""

    source_speech: str  # source-language speech manifest: its transcripts get translated
    translate_with: str = "apertium"  # an ``xasr.data.translate`` backend
    # held-out source speech for the ST model's validation and BLEU; None: ``heldout_utts``
    # lines of ``source_speech`` (a seeded draw), which ST training then never sees
    source_valid: str | None = None
    heldout_utts: int = 50
    lang: str | None = None  # the target language; None: the target manifest's ``lang``
    translator_command: str | None = None  # command: the program; apertium: its modes
    translator_model: str | None = None  # hf: the model directory
    st_run: str | None = None  # the ST stage's directory; None: RUN/st

    def __post_init__(self):
        checks.one_of("--translate-with", self.translate_with, BACKENDS)
        checks.integer("--st-heldout", self.heldout_utts, at_least=1)

    def check_files(self) -> None:
        for flag, path in (
            ("--source-speech", self.source_speech),
            ("--source-valid", self.source_valid),
        ):
            if path is not None and not Path(path).is_file():
                raise XasrError(f"{flag} {path} does not exist")

    def record(self, source: str, lang: str) -> dict:
        """What an ST model made with these options is made from (``ST_RUN/st.json``)."""
        return {
            "source": str(resolve_model(source)),
            "source_speech": str(Path(self.source_speech).resolve()),
            "source_valid": str(Path(self.source_valid).resolve()) if self.source_valid else None,
            "heldout_utts": None if self.source_valid else self.heldout_utts,
            "lang": lang,
            "translate_with": self.translate_with,
            "translator_command": self.translator_command,
            "translator_model": self.translator_model,
        }


def st_enhanced_transfer(
    run_dir: str | Path,
    train_manifest,
    valid_manifest,
    opts: TransferOptions,
    st: StOptions,
    cfg: TrainConfig,
    st_cfg: TrainConfig | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> TrainResult:
    """The chain: translate, train the ST model (``st_cfg``, default ``cfg``), transfer it to
    the target manifests in ``run_dir``. ``opts`` are the target stage's transfer options, its
    source the English (source-language) AED; returns the target stage's result."""
    if opts.scratch or opts.source is None:
        raise XasrError(
            "--strategy st-enhanced starts from a source model: pass --from, not --scratch"
        )
    run_dir = output_dir(run_dir)
    st.check_files()
    lang = st.lang or target_language(train_manifest)
    st_dir = Path(st.st_run) if st.st_run else run_dir / "st"
    if st_dir.resolve() == run_dir.resolve():
        raise XasrError(f"--st-run {st_dir} is --out itself: give the ST stage its own folder")
    # the layer options and the monitor are the recognizer's; the ST stage trains every layer
    # on its one held-out set
    st_cfg = dataclasses.replace(st_cfg or cfg, freeze_layers=0, freeze_steps=None, monitor="all")
    st_model = train_st(st_dir, opts.source, train_manifest, lang, st, st_cfg, skip_bad, progress)
    chain = {
        "strategy": "st-enhanced",
        "st_run": str(st_dir),
        "st": json.loads((st_dir / ST_RECORD).read_text(encoding="utf-8")),
        "translation_quality": json.loads((st_dir / QUALITY).read_text(encoding="utf-8")),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "chain.json", json.dumps(chain, indent=1, ensure_ascii=False))
    print("== target recognizer, from the ST model ==", flush=True)
    target_opts = dataclasses.replace(opts, source=str(st_model))
    return transfer(
        run_dir,
        train_manifest,
        valid_manifest,
        target_opts,
        cfg,
        skip_bad=skip_bad,
        progress=progress,
    )


def target_language(
    train_manifest, hint: str = "name the target language with --target-lang"
) -> str:
    """The ``lang`` of the first training manifest's first line, or a one-line error."""
    first = as_sources(train_manifest)[0].manifest
    utterances = read_manifest(first)
    lang = utterances[0].lang if utterances else None
    if not lang:
        raise XasrError(f"{first} has no lang field: {hint}")
    return lang


def train_st(
    st_dir: Path,
    source: str,
    target_train,
    lang: str,
    st: StOptions,
    cfg: TrainConfig,
    skip_bad: bool = False,
    progress: bool = True,
) -> Path:
    """Translate, train (or resume, or reuse) the ST model in ``st_dir``, score it; returns its
    model directory."""
    from xasr.models.pretrained.importers import foreign_kind

    st_dir = output_dir(st_dir, "--st-run")
    directory = resolve_model(source)
    source_cfg = None if foreign_kind(directory) else read_model_config(directory)[0]
    if source_cfg is None or not source_cfg.has_decoder:
        architecture = "pretrained encoder" if source_cfg is None else source_cfg.architecture
        raise XasrError(
            f"--from {source} is a {architecture} model: speech translation needs an "
            "attention encoder-decoder's decoder (e.g. --from en-small-aed)"
        )
    claim_st_run(st_dir, st.record(source, lang))
    manifests = translated_manifests(st_dir / "translations", st, lang)
    targets = [s.manifest for s in as_sources(target_train)]
    if (st_dir / "result.json").is_file():
        warn_missing_letters(st_dir, targets)
    else:
        print(f"== speech translation {manifests['train']} -> {lang} text ==", flush=True)
        transfer(
            st_dir,
            [manifests["train"]],
            [manifests["heldout"]],
            TransferOptions(source=source),
            cfg,
            skip_bad=skip_bad,
            progress=progress,
            vocab_manifests=[manifests["train"], *targets],
        )
    if not (st_dir / QUALITY).is_file():
        score_translation(st_dir, manifests["heldout"], skip_bad)
    return st_dir / "model"


def warn_missing_letters(st_dir: Path, targets: list) -> None:
    """A reused ST model's vocabulary was made with another target's text: say which of this
    target's characters it lacks (stage 3 starts them as new rows)."""
    from xasr.data.vocab import SPACE, load_vocab

    vocab = load_vocab(st_dir / "model")
    if vocab.kind != "char":
        return
    letters = {c for m in targets for u in read_manifest(m) for c in u.text.replace(" ", SPACE)}
    missing = sorted(letters - set(vocab.tokens))
    if missing:
        log.warning(
            "the ST model in %s has no row for %s of the target's characters; they start new",
            st_dir,
            " ".join(missing),
        )


def claim_st_run(st_dir: Path, record: dict) -> None:
    """Write ``ST_RUN/st.json``, or check that the one there records the same making."""
    path = st_dir / ST_RECORD
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        differs = [k for k in record if before.get(k) != record[k]]
        if differs:
            key = differs[0]
            raise XasrError(
                f"{st_dir} holds an ST model made with {key} {before.get(key)!r}, not "
                f"{record[key]!r}; give another --st-run (or the same {key})"
            )
        return
    st_dir.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=1, ensure_ascii=False))


def translated_manifests(folder: Path, st: StOptions, lang: str) -> dict[str, Path]:
    """The ST manifests ``{"train", "heldout"}`` in ``folder`` (made once): the source speech
    translated into ``lang``, split into training and held-out lines, the translation as text."""
    paths = {split: folder / f"{split}.jsonl" for split in ("train", "heldout")}
    if all(p.is_file() for p in paths.values()):
        return paths
    coverage = {}
    sources = {"train": st.source_speech, "heldout": st.source_valid}
    for split, manifest in sources.items():
        if manifest is None:
            continue
        coverage[split] = translate_manifest(
            manifest,
            folder / f"translated-{split}.jsonl",
            lang,
            st.translate_with,
            command=st.translator_command,
            model=st.translator_model,
        )
    translated = read_manifest(folder / "translated-train.jsonl")
    if st.source_valid is None:
        translated, heldout = hold_out(translated, st.heldout_utts)
    else:
        heldout = read_manifest(folder / "translated-heldout.jsonl")
    counts = {}
    for split, utterances in (("heldout", heldout), ("train", translated)):
        counts[split] = write_st_manifest(paths[split], utterances)  # train last: its presence
    write_text(
        folder / "coverage.json", json.dumps({"translate": coverage, "st_lines": counts}, indent=1)
    )
    return paths


def hold_out(utterances: list, count: int, seed: int = 0) -> tuple[list, list]:
    """(rest, held out): ``count`` lines drawn with ``seed``, both in manifest order."""
    if count >= len(utterances):
        raise XasrError(
            f"--source-speech has {len(utterances)} lines: too few to hold out {count} for the "
            "ST model's validation; give --source-valid M or a smaller --st-heldout"
        )
    held = set(random.Random(seed).sample(range(len(utterances)), count))
    rest = [u for i, u in enumerate(utterances) if i not in held]
    return rest, [u for i, u in enumerate(utterances) if i in held]


def write_st_manifest(path: Path, utterances: list) -> dict:
    """Write the ST lines of ``utterances`` (translated): text = translation, lang = its
    language, ``transcript``/``transcript_lang`` = the source-language text. Lines with an
    empty translation are dropped and counted. Returns {"lines", "dropped_empty"}."""
    out, dropped = [], 0
    for u in utterances:
        translation = u.extra.get("translation", "")
        if not translation.strip():
            dropped += 1
            continue
        extra = {k: v for k, v in u.extra.items() if k not in ("translation", "translation_lang")}
        extra.update(transcript=u.text, transcript_lang=u.lang)
        lang = u.extra.get("translation_lang")
        out.append(dataclasses.replace(u, text=translation, lang=lang, extra=extra))
    if dropped:
        log.warning("%s: %d lines dropped, their translation is empty", path, dropped)
    if not out:
        raise XasrError(f"{path}: no line has a translation to train on")
    write_manifest(path, out)
    return {"lines": len(out), "dropped_empty": dropped}


def score_translation(st_dir: Path, heldout: Path, skip_bad: bool = False) -> dict:
    """The ST model's translations of the held-out speech against their MT (or human) text:
    BLEU, chrF (sacrebleu), CER, WER; written to ``ST_RUN/translation.json``."""
    from xasr.decode.evaluate import evaluate
    from xasr.decode.metrics import translation_scores

    detail_path = st_dir / "heldout-decoded.json"
    result = evaluate(
        st_dir / "model", heldout, output=detail_path, skip_bad=skip_bad, progress=False
    )
    pairs = json.loads(detail_path.read_text(encoding="utf-8"))["hypotheses"]
    scores = translation_scores([p["ref"] for p in pairs], [p["hyp"] for p in pairs])
    quality = {**scores, "cer": result["cer"], "wer": result["wer"], "lines": len(pairs)}
    write_text(st_dir / QUALITY, json.dumps(quality, indent=1))
    log.info("ST model on %s: %s", heldout, quality)
    return quality
