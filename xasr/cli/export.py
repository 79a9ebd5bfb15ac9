"""``xasr export``: a model as ONNX, checked against torch."""

from __future__ import annotations

import argparse
import json


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory, run directory or shipped name")
    p.add_argument("--onnx", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=int, help="ONNX opset (default: xasr.export.onnx.OPSET)")
    p.add_argument("--lang", help="a model with language masks: the language's sub-network")
    p.add_argument(
        "--tolerance",
        type=float,
        help="largest log-probability difference to torch the check accepts "
        "(default: xasr.export.onnx.TOLERANCE)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    from xasr.export.onnx import export_onnx

    given = {"opset": args.opset, "tolerance": args.tolerance}
    report = export_onnx(
        args.model, args.onnx, lang=args.lang, **{k: v for k, v in given.items() if v is not None}
    )
    print(json.dumps(report, indent=1))


COMMANDS = {"export": add_export}
