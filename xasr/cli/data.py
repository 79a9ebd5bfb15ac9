"""``xasr translate``, ``xasr synth``, ``xasr prepare``: manifests from text, from espeak-ng,
from a downloaded corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xasr.cli.options import add_run_options
from xasr.data.fillets import HeldOut
from xasr.data.transcripts import CASES, DIGITS, PUNCTUATIONS
from xasr.data.translate import BACKENDS
from xasr.errors import XasrError


def add_translate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True)
    p.add_argument("--to", required=True, help="the translation's language, e.g. es")
    p.add_argument("--from", dest="source_lang", help="the text's language (default: its lang)")
    p.add_argument("--backend", choices=BACKENDS, default="dictionary")
    p.add_argument(
        "--command",
        dest="translator_command",  # not "command": the sub-command's own name lives there
        help="command: the program; apertium: its modes (eng-spa,es-pt)",
    )
    p.add_argument("--model", help="hf: a local translation model directory (Marian and alike)")
    p.add_argument("--out", required=True, help="the translated manifest")
    p.set_defaults(func=cmd_translate)


def cmd_translate(args: argparse.Namespace) -> None:
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


def add_synth(p: argparse.ArgumentParser) -> None:
    from xasr.data.synth import CONDITIONS  # here: the synth package imports audio libraries

    p.add_argument("--langs", default="en", help="comma-separated: en,es,de,it,pt,cmn,yue,...")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--dev-utts", type=int, default=100)
    p.add_argument("--test-utts", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditions", choices=CONDITIONS, default="noisy")
    p.add_argument("--workers", type=int)
    p.add_argument("--topics", help="comma-separated fortune topics to keep, e.g. computers,linux")
    p.add_argument("--list-topics", metavar="LANG", help="print LANG's topics and sentence counts")
    p.add_argument("--out", help="output folder (required unless --list-topics)")
    add_run_options(p, skip_bad=False)
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> None:
    from xasr.data.synth import build_xlt_synth, topics_of

    if args.list_topics:
        for topic, count in topics_of(args.list_topics).items():
            print(f"{topic}\t{count}")
        return
    if not args.out:
        raise XasrError("--out is required (unless --list-topics)")
    paths = build_xlt_synth(
        langs=comma_list(args.langs),
        out=Path(args.out),
        train_minutes=args.train_minutes,
        dev_utts=args.dev_utts,
        test_utts=args.test_utts,
        seed=args.seed,
        conditions=args.conditions,
        workers=args.workers,
        progress=not args.no_progress,
        topics=None if args.topics is None else comma_list(args.topics),
    )
    for lang, splits in paths.items():
        print(lang, " ".join(str(p) for p in splits.values()))


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def add_prepare(p: argparse.ArgumentParser) -> None:
    from xasr.data.corpora import CORPORA  # here: translate and synth do without its imports

    p.add_argument("corpus", choices=tuple(CORPORA))
    p.add_argument("dir", help="the corpus folder as downloaded (README: Data, real corpora)")
    p.add_argument("--out", required=True, help="folder for SPLIT.jsonl (and audio/ if needed)")
    p.add_argument("--lang", help="the corpus's language code (es, es_419, zh-CN, ...)")
    p.add_argument("--splits", help="comma-separated splits to keep (default: all found)")
    p.add_argument("--case", choices=CASES, default="lower")
    p.add_argument("--punctuation", choices=PUNCTUATIONS, default="remove")
    p.add_argument("--digits", choices=DIGITS, default="refuse", help="refuse: drop (counted)")
    p.add_argument("--audio-column", default="audio", help="hf: the audio column")
    p.add_argument("--text-column", default="text", help="hf: the transcript column")
    held = HeldOut()
    p.add_argument("--dev-minutes", type=float, default=held.dev_minutes,
                   help="fillets: whole levels drawn for dev until it holds this much speech")  # fmt: skip
    p.add_argument("--test-minutes", type=float, default=held.test_minutes,
                   help="fillets: the same for test (drawn first)")  # fmt: skip
    p.add_argument("--dev-levels", type=int, help="fillets: exactly this many levels for dev")
    p.add_argument("--test-levels", type=int, help="fillets: exactly this many levels for test")
    p.add_argument("--seed", type=int, default=held.seed, help="fillets: the levels' draw")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> None:
    from xasr.data.corpora import prepare_corpus
    from xasr.data.transcripts import TranscriptRules

    prepared = prepare_corpus(
        args.corpus,
        args.dir,
        args.out,
        lang=args.lang,
        splits=comma_list(args.splits) if args.splits else None,
        rules=TranscriptRules(case=args.case, punctuation=args.punctuation, digits=args.digits),
        audio_column=args.audio_column,
        text_column=args.text_column,
        held_out=HeldOut(
            args.dev_minutes, args.test_minutes, args.dev_levels, args.test_levels, args.seed
        ),
    )
    for why, n in prepared.skipped.items():
        print(f"skipped\t{n} files\t{why}")
    for split, path in prepared.manifests.items():
        print(f"{split}\t{path}\t{prepared.kept[split]} utterances\t{prepared.summary[split]}")


COMMANDS = {"translate": add_translate, "synth": add_synth, "prepare": add_prepare}
