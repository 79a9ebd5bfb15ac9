"""Export options checked: an opset the exporter cannot write is refused in one line before any
work, the report's opset is the file's, and --quantize int8 writes an int8 graph checked
against float32."""

from __future__ import annotations

import onnx
import pytest

from xasr.cli import main
from xasr.errors import XasrError
from xasr.export.onnx import export_onnx
from xasr.export.sherpa import export_sherpa


def test_int8_export(en_model, tmp_path):
    """--quantize int8 writes the linear layers' MatMuls in int8 (the log-mel's filterbank
    stays float), with the check against float32 in the report, at the opset asked for (19
    here), which is the file's."""
    report = export_onnx(en_model, tmp_path / "m.onnx", opset=19, quantize="int8")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert report["opset"] == 19 == next(o.version for o in proto.opset_import if o.domain == "")
    quantized = [n for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert len(quantized) == 1 + 2 * 8 + 1  # proj, 2 layers x 8 linears, head
    assert report["int8"]["frame_agreement"] >= 0.9 and report["quantize"] == "int8"


@pytest.mark.parametrize("opset", [5, 17, 99])
def test_an_opset_the_exporter_cannot_write_is_refused(opset, tmp_path, capsys):
    """Before any work, in one line, and nothing is written (opset 5 used to come back as an
    opset-18 file reported as 5)."""
    out = tmp_path / "x.onnx"
    argv = ["export", "--model", "en-small", "--onnx", str(out), "--opset", str(opset)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--opset {opset}: the exporter writes opsets 18 to" in line
    with pytest.raises(XasrError, match="opsets 18 to"):
        export_sherpa("en-small", tmp_path / "sherpa", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_export_option_mistakes_are_one_line(tmp_path):
    for call, culprit in [
        (lambda: export_onnx("en-small", tmp_path / "x.onnx", quantize="int4"), "--quantize int4"),
        (lambda: export_sherpa("en-small", tmp_path / "d", quantize="fp16"), "--quantize fp16"),
        (lambda: export_sherpa("en-small", tmp_path / "d", tolerance=0), "> 0"),
        (lambda: export_sherpa("nowhere", tmp_path / "d"), "'nowhere'"),
    ]:
        with pytest.raises(XasrError, match=culprit) as err:
            call()
        assert len(str(err.value).splitlines()) == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(XasrError, match="is a file, not a folder"):
        export_sherpa("en-small", tmp_path / "file")
