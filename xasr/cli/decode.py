"""``xasr evaluate``, ``xasr transcribe``, ``xasr build-lm``: decoding with a model (and an
n-gram LM). Nothing at import needs torch: ``transcribe --onnx`` runs without it."""

from __future__ import annotations

import argparse
import json

from xasr.cli.options import add_run_options
from xasr.data.vad import DETECTORS
from xasr.decode.long_audio import LongAudioOptions
from xasr.decode.options import ATTENTION_BEAM_WIDTH, DECODERS, LM_BEAM_WIDTH, DecodingOptions
from xasr.decode.subtitles import write_transcripts


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``xasr.decode.options.DecodingOptions``, its defaults theirs."""
    default = DecodingOptions()
    g = parser.add_argument_group("decoding (README: Decoding)")
    g.add_argument(
        "--decoder",
        choices=DECODERS,
        default=default.decoder,
        help="default: the model's own (greedy CTC, or greedy attention for --arch aed)",
    )
    g.add_argument("--lm", help="KenLM n-gram model (xasr build-lm): CTC beam search with it")
    g.add_argument(
        "--beam-width",
        type=int,
        help=f"default {LM_BEAM_WIDTH} with --lm, {ATTENTION_BEAM_WIDTH} for attention/joint",
    )
    g.add_argument("--lm-weight", type=float, default=default.lm_weight, help="with --lm: alpha")
    g.add_argument(
        "--word-bonus", type=float, default=default.word_bonus, help="with --lm: beta, per word"
    )
    g.add_argument(
        "--length-penalty",
        type=float,
        default=default.length_penalty,
        help="attention: score/len^P",
    )
    g.add_argument(
        "--ctc-weight", type=float, default=default.ctc_weight, help="joint: the CTC score's weight"
    )


def decoding_options(args: argparse.Namespace) -> DecodingOptions:
    return DecodingOptions(
        decoder=args.decoder,
        lm=args.lm,
        beam_width=args.beam_width,
        lm_weight=args.lm_weight,
        word_bonus=args.word_bonus,
        length_penalty=args.length_penalty,
        ctc_weight=args.ctc_weight,
    )


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--json", help="also write results and hypotheses here")
    p.add_argument("--device")
    add_run_options(p)
    p.add_argument("--lang", help="a model with language masks: decode with this one's")
    add_decoding_options(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
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


def add_build_lm(p: argparse.ArgumentParser) -> None:
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


def cmd_build_lm(args: argparse.Namespace) -> None:
    from xasr.decode.lm import build_lm

    summary = build_lm(
        args.text, args.out, order=args.order, lang=args.lang, exclude=args.exclude or ()
    )
    print(json.dumps(summary, indent=1, ensure_ascii=False))


def add_transcribe(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory, run directory or shipped name")
    source.add_argument("--onnx", help="an `xasr export` ONNX file: onnxruntime, no torch")
    p.add_argument("--device")
    p.add_argument("--lang", help="a model with language masks: the audio's language")
    add_decoding_options(p)
    out = p.add_argument_group("outputs and long files (docs/deployment.md)")
    out.add_argument("--json", help="write each file's text, words with start/end seconds and "
                     "the pieces it was decoded in to this JSON file")  # fmt: skip
    out.add_argument("--srt", metavar="DIR", help="write NAME.srt subtitles per audio file")
    out.add_argument("--vtt", metavar="DIR", help="write NAME.vtt (WebVTT) subtitles per file")
    pieces = LongAudioOptions()
    out.add_argument("--max-piece-seconds", type=float, default=pieces.max_seconds,
                     help="split longer files at pauses into pieces of at most this many "
                     "seconds (lowered to the model's own limit, e.g. Whisper's 30)")  # fmt: skip
    out.add_argument("--vad", choices=DETECTORS, default=pieces.vad,
                     help="how pauses are found: Silero VAD, or frame energy (clean audio only)")  # fmt: skip
    out.add_argument("--vad-threshold", type=float, default=pieces.threshold,
                     help="speech probability above which a frame is speech")  # fmt: skip
    out.add_argument("--batch-seconds", type=float, default=pieces.batch_seconds,
                     help="padded audio per decoding batch; lower uses less memory")  # fmt: skip
    add_run_options(p, skip_bad=False)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args: argparse.Namespace) -> None:
    pieces = LongAudioOptions(args.max_piece_seconds, args.vad, args.vad_threshold,
                              args.batch_seconds)  # fmt: skip
    progress = not args.no_progress
    if args.onnx:
        from xasr.export.onnx_runtime import onnx_transcripts

        found = onnx_transcripts(args.onnx, args.files, decoding_options(args), args.device,
                                 pieces, progress)  # fmt: skip
    else:
        from xasr.decode.transcribe import Recognizer

        recognizer = Recognizer.load(args.model)
        found = recognizer.transcripts(args.files, decoding_options(args), args.device,
                                       args.lang, pieces, progress)  # fmt: skip
    write_transcripts(found, args.json, args.srt, args.vtt)
    for transcript in found:
        print(f"{transcript.path}\t{transcript.text}")


COMMANDS = {"evaluate": add_evaluate, "build-lm": add_build_lm, "transcribe": add_transcribe}
