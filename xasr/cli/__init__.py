"""`xasr` command line: argument parsing only; every command is a library function first.

One module per command group (``xasr.cli.data``, ``train``, ``pretrain``, ``transfer``,
``decode``, ``export``, ``experiments``, ``masks``), each command's flags beside its handler;
``COMMANDS`` names them. A run imports the module of its command alone, so that a quick
command (``transcribe --onnx``) does not pay for the imports of the others.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from importlib import import_module

from xasr.errors import Interrupted, XasrError
from xasr.io import describe_os_error

# command: (its module in xasr.cli, one line for `xasr --help`); each module's COMMANDS maps
# the command to the function that adds its flags and its handler
COMMANDS: dict[str, tuple[str, str]] = {
    "translate": ("data", "add a translation of every line to a manifest"),
    "synth": ("data", "build XLT-Synth (espeak-ng speaking fortune sentences)"),
    "prepare": ("data", "a downloaded corpus (Common Voice, MLS, ...) to manifests"),
    "train": ("train", "train a model from scratch"),
    "transfer": ("transfer", "fine-tune a model into a new language or domain"),
    "evaluate": ("decode", "WER/CER of a model on a manifest"),
    "build-lm": ("decode", "train a KenLM n-gram LM (lmplz) for evaluate --lm"),
    "transcribe": ("decode", "transcribe audio files"),
    "export": ("export", "export a model as ONNX (checked against torch)"),
    "demo": ("experiments", "transfer vs scratch on XLT-Synth, with a report"),
    "base-model": ("experiments", "build a shipped base model from its recipe"),
    "experiment": (
        "experiments",
        "a resumable grid of transfer runs from a YAML config, with a report",
    ),
    "rank-sources": ("experiments", "which base model to transfer from: short probes"),
    "masks": ("masks", "each language's sparse sub-network of a shared model"),
    "pretrain": (
        "pretrain",
        "continue a wav2vec2 model's self-supervised pre-training on speech",
    ),
}


class Parser(argparse.ArgumentParser):
    """argparse with xasr's one-line errors (``xasr CMD: error: ...``, exit 2) instead of the
    usage block; ``xasr CMD --help`` still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Iterable[str] | None = None) -> Parser:
    """The ``xasr`` parser: the ``commands`` named (default: every one) with their flags, the
    others by name and help line only."""
    parser = Parser(prog="xasr", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    full = set(COMMANDS if commands is None else commands)
    for name, (module, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if name in full:
            import_module(f"xasr.cli.{module}").COMMANDS[name](command)
        command.set_defaults(command_parser=command)  # so that main() can name it in errors
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = [arg for arg in argv if not arg.startswith("-")][:1]  # -v is the only option
    args, unknown = build_parser(command).parse_known_args(argv)
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
