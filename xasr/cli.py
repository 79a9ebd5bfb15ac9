"""`xasr` command line: argument parsing only; every command is a library function first."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from xasr.config import (
    ACCELERATORS,
    META_TASKS,
    META_VARIANTS,
    MIXINGS,
    ON_UNKNOWN,
    PRECISIONS,
    SOURCE_BATCHES,
    TRAIN_FLAGS,
    VOCAB_KINDS,
    TrainConfig,
    from_dict,
    load_yaml,
    replace,
)
from xasr.errors import Interrupted, XasrError
from xasr.io import describe_os_error


class Parser(argparse.ArgumentParser):
    """argparse with xasr's one-line errors (``xasr CMD: error: ...``, exit 2) instead of the
    usage block; ``xasr CMD --help`` still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Help for the TrainConfig keys that have a flag; the flags themselves, their types and their
# choices come from xasr.config (TRAIN_FLAGS and the dataclass), so a new key is one entry there.
TRAIN_HELP = {
    "max_minutes": "wall-clock cap (never a comparison's budget)",
    "max_audio_seconds": "budget: audio seconds seen (all sources)",
    "max_passes": "budget: forward-backward passes (meta-transfer: 2 x tasks a step)",
    "max_batch_seconds": "audio seconds per batch and device",
    "val_every": "validate every N steps",
    "patience": "validations without improvement",
    "devices": "processes/GPUs; >1 runs DDP (gloo on CPU)",
    "precision": ", ".join(PRECISIONS),
    "num_workers": "data loader workers",
    "vocab_size": "sentencepiece vocabulary size",
    "on_unknown": "training characters outside the vocabulary",
    "spec_augment": "train without SpecAugment",
    "freeze_layers": "freeze front end + bottom K layers",
    "freeze_steps": "... for the first S steps only",
    "mixing": "how several --train manifests share the audio (README)",
    "temperature": "T of --mixing temperature: shares as seconds^(1/T)",
    "source_batches": "mixed, or batches of one source each",
    "monitor": "dev CER early stopping watches: all, macro or a language",
    "meta_variant": "meta-transfer learning (README): the first --train is the target",
    "inner_lr": "meta-transfer: the inner SGD step's learning rate",
    "meta_clip": "meta-transfer: the inner gradients' largest norm (0: none)",
    "k_train": "meta-transfer: utterances per support batch",
    "k_valid": "meta-transfer: utterances per query batch (from the target)",
    "meta_tasks": "meta-transfer: all manifests are tasks, or the sources only",
}
TRAIN_CHOICES = {
    "accelerator": ACCELERATORS,
    "vocab": VOCAB_KINDS,
    "on_unknown": ON_UNKNOWN,
    "mixing": MIXINGS,
    "source_batches": SOURCE_BATCHES,
    "meta_variant": META_VARIANTS,
    "meta_tasks": META_TASKS,
}
TRANSFER_ONLY = ("freeze_layers", "freeze_steps")  # train() starts from scratch: nothing to freeze


def add_train_options(parser: argparse.ArgumentParser, transfer: bool = False) -> None:
    """The TrainConfig flags (``xasr.config.TRAIN_FLAGS``), --config, --skip-bad, --no-progress;
    unset flags stay None, so --config and the defaults fill them (``train_config``)."""
    group = parser.add_argument_group("training recipe (defaults: TrainConfig; --config YAML)")
    group.add_argument("--config", help="YAML file of TrainConfig keys (unknown keys rejected)")
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    for key, flag in TRAIN_FLAGS.items():
        if key in TRANSFER_ONLY and not transfer:
            continue
        common = {"dest": key, "default": None, "help": TRAIN_HELP.get(key)}
        if types[key] == "bool":  # on by default: the flag turns it off
            group.add_argument(flag, action="store_false", **common)
        elif key in TRAIN_CHOICES:
            group.add_argument(flag, choices=TRAIN_CHOICES[key], **common)
        else:
            kind = int if types[key].startswith("int") else float if "float" in types[key] else str
            group.add_argument(flag, type=kind, **common)
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="drop (and count) unreadable audio and empty transcripts",
    )
    parser.add_argument("--no-progress", action="store_true")


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``xasr.decode.options.DecodingOptions`` (evaluate, transcribe)."""
    g = parser.add_argument_group("decoding (README: Decoding)")
    g.add_argument(
        "--decoder",
        choices=["default", "ctc", "attention", "joint"],
        default="default",
        help="default: the model's own (greedy CTC, or greedy attention for --arch aed)",
    )
    g.add_argument("--lm", help="KenLM n-gram model (xasr build-lm): CTC beam search with it")
    g.add_argument("--beam-width", type=int, help="default 32 with --lm, 4 for attention/joint")
    g.add_argument("--lm-weight", type=float, default=0.5, help="with --lm: alpha")
    g.add_argument("--word-bonus", type=float, default=1.0, help="with --lm: beta, per word")
    g.add_argument("--length-penalty", type=float, default=1.0, help="attention: score/len^P")
    g.add_argument("--ctc-weight", type=float, default=0.3, help="joint: the CTC score's weight")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--train (repeatable: several sources, --weights), --valid (repeatable)."""
    parser.add_argument(
        "--train",
        required=True,
        action="append",
        help="training manifest (.jsonl or .csv); repeat for several sources (--mixing)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per --train manifest (with --mixing weights)",
    )
    parser.add_argument(
        "--valid",
        required=True,
        action="append",
        help="validation manifest; repeat for several (validated per language)",
    )


def training_sources(args: argparse.Namespace) -> list:
    from xasr.data.sources import as_sources

    if args.weights is not None and (args.mixing or "weights") != "weights":
        raise XasrError(f"--weights needs --mixing weights, not {args.mixing}")
    return as_sources(args.train, args.weights)


def train_config(args: argparse.Namespace, config: str | None = None) -> TrainConfig:
    """The recipe: ``config`` (default ``--config``) with the command line's flags over it."""
    config = config or args.config
    base = from_dict(TrainConfig, load_yaml(config), config) if config else TrainConfig()
    given = {k: getattr(args, k, None) for k in TRAIN_FLAGS}
    if getattr(args, "weights", None) is not None and given["mixing"] is None:
        given["mixing"] = "weights"  # weights given: they are what mixes the sources
    return replace(base, **given)


def cmd_translate(args) -> None:
    from xasr.data.translate import translate_manifest

    figures = translate_manifest(
        args.manifest,
        args.out,
        args.to,
        args.backend,
        args.source_lang,
        args.translator_command,
        model=args.model,
    )
    print(json.dumps(figures, indent=1, ensure_ascii=False))


def cmd_synth(args) -> None:
    from xasr.data.synth import build_xlt_synth, topics_of

    if args.list_topics:
        for topic, count in topics_of(args.list_topics).items():
            print(f"{topic}\t{count}")
        return
    if not args.out:
        raise XasrError("--out is required (unless --list-topics)")
    topics = None
    if args.topics is not None:
        topics = [topic.strip() for topic in args.topics.split(",") if topic.strip()]
    paths = build_xlt_synth(
        langs=[code.strip() for code in args.langs.split(",") if code.strip()],
        out=Path(args.out),
        train_minutes=args.train_minutes,
        dev_utts=args.dev_utts,
        test_utts=args.test_utts,
        seed=args.seed,
        conditions=args.conditions,
        workers=args.workers,
        progress=not args.no_progress,
        topics=topics,
    )
    for lang, splits in paths.items():
        print(lang, " ".join(str(p) for p in splits.values()))


def cmd_prepare(args) -> None:
    from xasr.data.corpora import prepare_corpus
    from xasr.data.transcripts import TranscriptRules

    rules = TranscriptRules(case=args.case, punctuation=args.punctuation, digits=args.digits)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    prepared = prepare_corpus(
        args.corpus,
        args.dir,
        args.out,
        lang=args.lang,
        splits=splits,
        rules=rules,
        audio_column=args.audio_column,
        text_column=args.text_column,
    )
    for split, path in prepared.manifests.items():
        print(f"{split}\t{path}\t{prepared.kept[split]} utterances\t{prepared.summary[split]}")


def cmd_train(args) -> None:
    from xasr.models.build import model_config
    from xasr.train.loop import train

    result = train(
        args.out,
        training_sources(args),
        args.valid,
        train_config(args),
        model_config(args.size, args.arch),
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(json.dumps(result.to_json(), indent=1))


def cmd_transfer(args) -> None:
    from xasr.transfer.architecture import requested_architecture
    from xasr.transfer.finetune import TransferOptions, transfer
    from xasr.transfer.forgetting import before_after_table, check_before_after, compare_with_source

    if args.source is None and not args.scratch:
        raise XasrError("--from is required (a model directory or a shipped name such as en-small)")
    if args.source is None and args.size is None and args.arch is None:
        raise XasrError("--scratch without --from needs --size (or --arch)")
    opts = TransferOptions(
        source=args.source,
        scratch=args.scratch,
        reinit_head=args.reinit_head,
        drop_layers=args.drop_layers,
        token_map_file=args.token_map,
        expect=requested_architecture(args.source, args.arch, args.size),
        replay_manifest=args.replay,
        replay_fraction=args.replay_fraction or 0.0,
        l2sp_weight=args.l2sp or 0.0,
        ewc_weight=args.ewc or 0.0,
        fisher_manifest=args.fisher_manifest,
        fisher_batches=args.fisher_batches,
    )
    tests = {
        name: path
        for name, path in (("source", args.source_test), ("target", args.target_test))
        if path
    }
    check_before_after(args.source, tests)
    if args.strategy == "st-enhanced":
        if args.masks:
            raise XasrError("--masks trains a multilingual model; not with --strategy st-enhanced")
        result = st_enhanced(args, opts)
    else:
        for flag in ("source_speech", "source_valid", "st_run", "st_config"):
            if getattr(args, flag):
                raise XasrError(f"--{flag.replace('_', '-')} needs --strategy st-enhanced")
        result = transfer(
            args.out,
            training_sources(args),
            args.valid,
            opts,
            train_config(args),
            skip_bad=args.skip_bad,
            progress=not args.no_progress,
            masks=read_masks(args.masks),
        )
    print(json.dumps(result.to_json(), indent=1))
    results = compare_with_source(args.out, args.source, result.model_dir, tests)
    if results is not None:
        print(before_after_table(results))


def read_masks(directory: str | None):
    from xasr.models.masks import LanguageMasks

    if directory is None:
        return None
    masks = LanguageMasks.load(directory)
    if masks is None:
        raise XasrError(f"--masks {directory}: no masks.safetensors there (made by xasr masks)")
    return masks


def st_enhanced(args, opts):
    """``transfer --strategy st-enhanced``: the chain of ``xasr.transfer.st``."""
    from xasr.transfer.st import StOptions, st_enhanced_transfer

    if not args.source_speech:
        raise XasrError("--strategy st-enhanced needs --source-speech M (source-language speech)")
    st = StOptions(
        source_speech=args.source_speech,
        translate_with=args.translate_with,
        source_valid=args.source_valid,
        heldout_utts=args.st_heldout,
        lang=args.target_lang,
        translator_command=args.translator_command,
        translator_model=args.translator_model,
        st_run=args.st_run,
    )
    cfg = train_config(args)
    st_cfg = train_config(args, args.st_config) if args.st_config else None
    return st_enhanced_transfer(
        args.out,
        training_sources(args),
        args.valid,
        opts,
        st,
        cfg,
        st_cfg,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )


def cmd_evaluate(args) -> None:
    from xasr.decode.evaluate import evaluate

    result = evaluate(
        args.model,
        args.manifest,
        device=args.device,
        output=args.json,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        decoding=decoding_options(args),
        mask_lang=args.lang,
    )
    print(json.dumps(result, indent=1, ensure_ascii=False))


def cmd_build_lm(args) -> None:
    from xasr.decode.lm import build_lm

    summary = build_lm(
        args.text, args.out, order=args.order, lang=args.lang, exclude=args.exclude or ()
    )
    print(json.dumps(summary, indent=1, ensure_ascii=False))


def cmd_transcribe(args) -> None:
    if args.onnx:
        from xasr.export.onnx_runtime import transcribe_onnx

        texts = transcribe_onnx(args.onnx, args.files, decoding_options(args), args.device)
    else:
        from xasr.decode.transcribe import transcribe_files

        texts = transcribe_files(
            args.model, args.files, decoding_options(args), args.device, args.lang
        )
    for path, text in zip(args.files, texts):
        print(f"{path}\t{text}")


def decoding_options(args):
    from xasr.decode.options import DecodingOptions

    return DecodingOptions(
        decoder=args.decoder,
        lm=args.lm,
        beam_width=args.beam_width,
        lm_weight=args.lm_weight,
        word_bonus=args.word_bonus,
        length_penalty=args.length_penalty,
        ctc_weight=args.ctc_weight,
    )


def cmd_export(args) -> None:
    from xasr.export.onnx import export_onnx

    bound = {} if args.tolerance is None else {"tolerance": args.tolerance}
    report = export_onnx(args.model, args.onnx, opset=args.opset, lang=args.lang, **bound)
    print(json.dumps(report, indent=1))


def cmd_demo(args) -> None:
    from xasr.experiments.demo import DEMO_STEPS, run_demo

    if args.steps is not None and args.steps < 1:
        raise XasrError(f"--steps must be at least 1, got {args.steps}")
    run_demo(
        Path(args.out),
        lang=args.lang,
        train_minutes=args.train_minutes,
        source=args.source,
        steps=args.steps or DEMO_STEPS,
        progress=not args.no_progress,
    )


def cmd_base_model(args) -> None:
    from xasr.experiments.base_model import build_base_model

    figures = build_base_model(
        args.recipe,
        args.out,
        publish=not args.no_publish,
        progress=not args.no_progress,
        max_minutes=args.max_minutes,
    )
    print(json.dumps({k: figures[k] for k in ("name", "parameters", "dev", "test")}, indent=1))


def cmd_rank_sources(args) -> None:
    from xasr.experiments.rank import rank_sources

    if args.skip_bad:
        raise XasrError("rank-sources does not take --skip-bad; fix or drop the bad utterances")
    if args.max_steps is not None or args.patience is not None:
        raise XasrError("rank-sources trains each source --steps steps, without early stopping")
    rank_sources(  # prints the ranking table; OUT/ranking.{json,md,png}
        Path(args.out),
        args.train,
        args.valid,
        args.sources,
        train_config(args),
        steps=args.steps,
        progress=not args.no_progress,
    )


def cmd_masks(args) -> None:
    from xasr.transfer.sparse import by_language, find_masks

    masks = find_masks(
        args.out,
        args.source,
        by_language(args.train, "--train"),
        by_language(args.valid, "--valid"),
        args.sparsity,
        train_config(args),
        rounds=args.rounds,
        progress=not args.no_progress,
    )
    overlap = masks.overlap()
    print("share of a row language's kept weights that the column language keeps too:")
    print("\t" + "\t".join(masks.langs))
    for a in masks.langs:
        print(a + "\t" + "\t".join(f"{overlap[a][b]:.2f}" for b in masks.langs))


def cmd_pretrain(args) -> None:
    from xasr.models.ssl import SslOptions
    from xasr.train.pretrain import continue_pretraining

    result = continue_pretraining(
        args.out,
        training_sources(args),
        args.valid,
        train_config(args),
        args.source,
        SslOptions(args.mask_prob, args.mask_length, args.gumbel_temperature),
        masks=read_masks(args.masks),
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(json.dumps(result, indent=1))


def cmd_experiment(args) -> None:
    from xasr.experiments.kinds import run_experiment

    run_experiment(
        args.config,
        out=args.out,
        dry_run=args.dry_run,
        only_report=args.only_report,
        progress=not args.no_progress,
        rerun_changed=args.rerun_changed,
        jobs=args.jobs,
        worker=args.worker,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xasr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("translate", help="add a translation of every line to a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--to", required=True, help="the translation's language, e.g. es")
    p.add_argument("--from", dest="source_lang", help="the text's language (default: its lang)")
    p.add_argument(
        "--backend", choices=["dictionary", "apertium", "command", "hf"], default="dictionary"
    )
    p.add_argument(
        "--command",
        dest="translator_command",  # not "command": the sub-command's own name lives there
        help="command: the program; apertium: its modes (eng-spa,es-pt)",
    )
    p.add_argument("--model", help="hf: a local translation model directory (Marian and alike)")
    p.add_argument("--out", required=True, help="the translated manifest")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("synth", help="build XLT-Synth (espeak-ng speaking fortune sentences)")
    p.add_argument("--langs", default="en", help="comma-separated: en,es,de,it,pt,cmn,yue,...")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--dev-utts", type=int, default=100)
    p.add_argument("--test-utts", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditions", choices=["noisy", "clean"], default="noisy")
    p.add_argument("--workers", type=int)
    p.add_argument("--topics", help="comma-separated fortune topics to keep, e.g. computers,linux")
    p.add_argument("--list-topics", metavar="LANG", help="print LANG's topics and sentence counts")
    p.add_argument("--out", help="output folder (required unless --list-topics)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="a downloaded corpus (Common Voice, MLS, ...) to manifests")
    p.add_argument(
        "corpus", choices=["commonvoice", "librispeech", "mls", "fleurs", "voxpopuli", "hf"]
    )
    p.add_argument("dir", help="the corpus folder as downloaded (README: Data, real corpora)")
    p.add_argument("--out", required=True, help="folder for SPLIT.jsonl (and audio/ if needed)")
    p.add_argument("--lang", help="the corpus's language code (es, es_419, zh-CN, ...)")
    p.add_argument("--splits", help="comma-separated splits to keep (default: all found)")
    p.add_argument("--case", choices=["lower", "keep"], default="lower")
    p.add_argument("--punctuation", choices=["remove", "keep"], default="remove")
    p.add_argument(
        "--digits", choices=["keep", "refuse"], default="refuse", help="refuse: drop (counted)"
    )
    p.add_argument("--audio-column", default="audio", help="hf: the audio column")
    p.add_argument("--text-column", default="text", help="hf: the transcript column")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model from scratch")
    add_data_options(p)
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--arch", choices=["ctc", "aed"], default="ctc", help="aed: encoder-decoder")
    p.add_argument("--size", default="small", help="small, medium, xsmall, tiny")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("transfer", help="fine-tune a model into a new language or domain")
    p.add_argument("--from", dest="source", help="model directory or shipped name (en-small)")
    add_data_options(p)
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--scratch", action="store_true", help="same architecture, random start")
    p.add_argument("--reinit-head", action="store_true", help="random output layer")
    p.add_argument("--drop-layers", type=int, default=0, help="re-initialise the top N layers")
    p.add_argument("--token-map", help="file of 'TARGET SOURCE' token pairs, e.g. 'ß s'")
    p.add_argument("--size", help="require this architecture (error if the source differs)")
    p.add_argument(
        "--arch",
        choices=["ctc", "aed"],
        help="the target's family: another than the source's takes what matches (--size, "
        "default the source's size name)",
    )
    forget = p.add_argument_group("adapting without forgetting (README)")
    forget.add_argument("--replay", metavar="M", help="source-language manifest to replay")
    forget.add_argument(
        "--replay-fraction", type=float, metavar="F", help="replay share of training audio, 0<F<1"
    )
    forget.add_argument("--l2sp", type=float, metavar="W", help="L2-SP weight (alpha)")
    forget.add_argument("--ewc", type=float, metavar="W", help="EWC weight (lambda)")
    forget.add_argument("--fisher-manifest", metavar="M", help="EWC's data (default: --replay)")
    forget.add_argument("--fisher-batches", type=int, default=20, metavar="N")
    forget.add_argument("--source-test", metavar="M", help="after training: CER before/after")
    forget.add_argument("--target-test", metavar="M", help="... and on the target's test set")
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="language masks (xasr masks): each batch trains its language's sub-network",
    )
    st = p.add_argument_group("speech-translation-enhanced transfer (README)")
    st.add_argument(
        "--strategy",
        choices=["direct", "st-enhanced"],
        default="direct",
        help="st-enhanced: through a speech-translation model (source speech -> target text)",
    )
    st.add_argument("--source-speech", metavar="M", help="source-language speech to translate")
    st.add_argument("--source-valid", metavar="M", help="held-out source speech (ST dev, BLEU)")
    st.add_argument(
        "--st-heldout", type=int, default=50, metavar="N", help="without --source-valid: N lines"
    )
    st.add_argument(
        "--translate-with", choices=["dictionary", "apertium", "command", "hf"], default="apertium"
    )
    st.add_argument(
        "--translator-command", metavar="CMD", help="command: the program; apertium: its modes"
    )
    st.add_argument("--translator-model", metavar="DIR", help="hf: a local translation model")
    st.add_argument("--target-lang", help="the target language (default: the manifest's lang)")
    st.add_argument("--st-run", metavar="DIR", help="the ST stage's directory (default OUT/st)")
    st.add_argument("--st-config", metavar="YAML", help="the ST stage's recipe (default: --config)")
    add_train_options(p, transfer=True)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("evaluate", help="WER/CER of a model on a manifest")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--json", help="also write results and hypotheses here")
    p.add_argument("--device")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--lang", help="a model with language masks: decode with this one's")
    add_decoding_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build-lm", help="train a KenLM n-gram LM (lmplz) for evaluate --lm")
    p.add_argument(
        "--text",
        action="append",
        required=True,
        help="text file (a sentence a line) or manifest (its text fields); repeatable",
    )
    p.add_argument("--out", required=True, help="lm.arpa, or lm.bin for KenLM's binary format")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--lang", help="normalise plain text as the corpus does for this language")
    p.add_argument(
        "--exclude", action="append", help="drop sentences of this manifest/file (test, dev)"
    )
    p.set_defaults(func=cmd_build_lm)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory, run directory or shipped name")
    source.add_argument("--onnx", help="an `xasr export` ONNX file: onnxruntime, no torch")
    p.add_argument("--device")
    p.add_argument("--lang", help="a model with language masks: the audio's language")
    add_decoding_options(p)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("export", help="export a model as ONNX (checked against torch)")
    p.add_argument("--model", required=True, help="model directory, run directory or shipped name")
    p.add_argument("--onnx", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--lang", help="a model with language masks: the language's sub-network")
    p.add_argument(
        "--tolerance",
        type=float,
        help="largest log-probability difference to torch the check accepts "
        "(default: xasr.export.onnx.TOLERANCE, 1e-4)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="transfer vs scratch on XLT-Synth, with a report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--lang", default="es")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--from", dest="source", default="en-small")
    p.add_argument("--steps", type=int, help="the step budget of each arm (default 750)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("base-model", help="build a shipped base model from its recipe")
    p.add_argument("--recipe", required=True, help="e.g. recipes/en-small.yaml")
    p.add_argument("--out", required=True, help="work directory (data and run)")
    p.add_argument("--no-publish", action="store_true", help="do not copy into xasr/pretrained")
    p.add_argument("--max-minutes", type=float, help="cap the training's wall clock")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_base_model)

    p = sub.add_parser(
        "experiment", help="a resumable grid of transfer runs from a YAML config, with a report"
    )
    p.add_argument("config", help="experiment YAML (bases, targets, sizes, seeds, strategies)")
    p.add_argument("--out", help="output directory (default: the config's out)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the cells and their state")
    mode.add_argument(
        "--only-report", action="store_true", help="rebuild the report from finished cells"
    )
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="train again a cell whose recorded config differs (the old one is kept aside)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="cells trained at once, one thread each (one a core)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("rank-sources", help="which base model to transfer from: short probes")
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument(
        "--from", dest="sources", nargs="+", required=True, help="model directories, shipped names"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per source")
    p.add_argument("--out", default="runs/rank", help="one run per source + ranking.{json,md,png}")
    add_train_options(p)
    p.set_defaults(func=cmd_rank_sources)

    p = sub.add_parser("masks", help="each language's sparse sub-network of a shared model")
    p.add_argument("--from", dest="source", required=True, help="the shared multilingual model")
    p.add_argument("--train", required=True, action="append", help="one manifest per language")
    p.add_argument("--valid", required=True, action="append", help="its dev set, per language")
    p.add_argument("--sparsity", type=float, required=True, help="share of weights pruned, 0-1")
    p.add_argument("--rounds", type=int, default=1, help="iterative pruning with rewinding")
    p.add_argument("--out", required=True, help="masks.safetensors, masks.json, overlap.json")
    add_train_options(p)  # the adaptation's recipe (--max-steps: its budget)
    p.set_defaults(func=cmd_masks)
    p = sub.add_parser(
        "pretrain", help="continue a wav2vec2 model's self-supervised pre-training on speech"
    )
    p.add_argument(
        "--from", dest="source", required=True, help="a Hugging Face ...ForPreTraining directory"
    )
    add_data_options(p)  # the transcripts are not used
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    p.add_argument("--masks", help="language masks (xasr masks): each language's sub-network")
    p.add_argument("--mask-prob", type=float, default=0.65, help="share of frames starting a span")
    p.add_argument("--mask-length", type=int, default=10, help="masked span, in frames")
    p.add_argument("--gumbel-temperature", type=float, default=0.5, help="the quantizer's")
    add_train_options(p)
    p.set_defaults(func=cmd_pretrain)
    for command in sub.choices.values():  # so that main() can name the command in its errors
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # the command's one-line error, not the top-level parser's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("lightning").propagate = False  # it prints through its own handler
    try:
        args.func(args)
    except Interrupted as err:
        print(f"xasr {args.command}: {err}", file=sys.stderr)
        return 130  # the shell's code for a run stopped by Ctrl-C
    except KeyboardInterrupt:  # before training started (reading data, checking audio)
        print(f"xasr {args.command}: interrupted; nothing was trained yet", file=sys.stderr)
        return 130
    except XasrError as err:
        print(f"xasr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not xasr: a full disk, a read-only folder
        if args.verbose:
            raise
        print(f"xasr {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
