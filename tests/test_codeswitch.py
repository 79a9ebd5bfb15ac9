"""Code-switched sentences: stretches switched word by word, their offsets, and the SSML."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from xasr.data.synth.codeswitch import CodeSwitched, Stretch, ssml, switch_words

TABLE = {"perro": "dog", "grande": "big", "casa": "house", "mi": "my", "es": "is"}


class Lexicon:
    def segment(self, text):
        return text.split()

    def translate(self, word):
        return TABLE.get(word)


def test_stretches_cover_the_text_and_alternate():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        cs = switch_words("mi perro es grande y mi casa es roja", Lexicon(), rng, "es", "en")
        assert cs is not None and cs.switches >= 1
        assert cs.stretches[0].start == 0 and cs.stretches[-1].end == len(cs.text)
        for a, b in zip(cs.stretches, cs.stretches[1:]):
            assert a.lang != b.lang and b.start == a.end + 1  # one space between stretches
        for s in cs.stretches:
            words = cs.text[s.start : s.end].split()
            if s.lang == "en":
                assert set(words) <= set(TABLE.values()) and len(words) <= 3
        assert {"y", "roja"} <= set(cs.text.split())  # untranslatable words stay


def test_seeded_and_none_when_nothing_switches():
    a = switch_words("mi perro es grande", Lexicon(), np.random.default_rng(3), "es", "en")
    b = switch_words("mi perro es grande", Lexicon(), np.random.default_rng(3), "es", "en")
    assert a == b
    assert switch_words("y roja", Lexicon(), np.random.default_rng(0), "es", "en") is None


def test_with_debians_dictionary():
    from xasr.data.lexicon import FreeDict
    from xasr.errors import DataError

    try:
        lexicon = FreeDict.pair("es", "en")
    except DataError:
        pytest.skip("dict-freedict-spa-eng is not installed (make system installs it)")
    cs = switch_words("el perro come en la casa", lexicon, np.random.default_rng(0), "es", "en")
    english = [cs.text[s.start : s.end] for s in cs.stretches if s.lang == "en"]
    assert english and all(e.isascii() for e in english)


def test_ssml_marks_each_stretch_with_its_language_and_keeps_the_variant():
    cs = CodeSwitched("hola my friend", (Stretch(0, 4, "es"), Stretch(5, 14, "en")))
    assert ssml(cs, {"es": "es", "en": "en-us"}, "f3") == (
        '<speak><voice name="es+f3">hola</voice> <voice name="en-us+f3">my friend</voice></speak>'
    )


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_switches_language_at_the_stretches():
    """espeak-ng's phonemes of the SSML: the English stretch is spoken with English ones."""
    cs = CodeSwitched("hola good friend", (Stretch(0, 4, "es"), Stretch(5, 16, "en")))
    out = subprocess.run(
        ["espeak-ng", "-m", "-q", "-x", "-v", "es"],
        input=ssml(cs, {"es": "es", "en": "en-us"}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    plain = subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", "es"],
        input=cs.text,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'ola" in out and "g'Ud" in out  # Spanish hola, English good
    assert "g'Ud" not in plain  # spoken all in Spanish, "good" is not


PAIRS = {"es-en": ("es", "en", {"es": "es", "en": "en-us"})}
PAIRS["zh-en"] = ("zh", "en", {"zh": "cmn-latn-pinyin", "en": "en-us"})


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_synth_builds_a_code_switched_pair(tmp_path, en_model, pair):
    """xasr synth --langs es-en / zh-en: every line's stretches tile its text, alternate
    languages and are what the SSML it was spoken from says, one voice variant throughout;
    Chinese stretches are written without spaces."""
    import json
    import re

    from xasr.data.lexicon import lexicon_for
    from xasr.data.synth import build_xlt_synth
    from xasr.errors import DataError

    matrix, embedded, voices = PAIRS[pair]
    try:
        lexicon_for(matrix, embedded)
    except DataError as err:
        pytest.skip(f"{err} (make installs it)")
    out = build_xlt_synth(
        [pair], tmp_path, train_minutes=0.05, dev_utts=3, test_utts=3, progress=False
    )[pair]
    rows = [
        json.loads(line)
        for split in ("dev", "test")
        for line in out[split].read_text(encoding="utf-8").splitlines()
    ]
    assert rows and any(len(r["stretches"]) > 1 for r in rows)
    for row in rows:
        text, stretches = row["text"], row["stretches"]
        assert " ".join(text[s["start"] : s["end"]] for s in stretches) == text
        assert all(a["lang"] != b["lang"] for a, b in itertools.pairwise(stretches))
        assert {s["lang"] for s in stretches} <= {matrix, embedded}
        if matrix == "zh":
            assert all(
                " " not in text[s["start"] : s["end"]] for s in stretches if s["lang"] == "zh"
            )
            assert all(
                text[s["start"] : s["end"]].isascii() for s in stretches if s["lang"] == "en"
            )
        spoken = re.findall(r'<voice name="([^"+]+)\+([^"]+)">([^<]*)</voice>', row["ssml"])
        assert [w for _, _, w in spoken] == [text[s["start"] : s["end"]] for s in stretches]
        assert [v for v, _, _ in spoken] == [voices[s["lang"]] for s in stretches]
        assert {variant for _, variant, _ in spoken} == {row["variant"]}
        assert (tmp_path / pair / row["audio_filepath"]).is_file()
    if pair != "es-en":
        return
    from xasr.decode.evaluate import evaluate  # scored within each language's stretches

    by = evaluate(en_model, out["dev"], progress=False)["by_stretch_language"]
    assert set(by) == {"es", "en"} and all(v["chars"] > 0 for v in by.values())


def test_codeswitch_experiment_runs_every_cell_and_reports(tmp_path, en_model, make_recipe):
    """kind: codeswitch on a few synthesized utterances: every (start, strategy) cell trains
    its own way (meta runs record their variant, joint-finetune starts from the joint model),
    is scored on the target and the sources, and the report names the winner."""
    import yaml

    from xasr.experiments.codeswitch import STRATEGIES, run_codeswitch

    config = tmp_path / "cs.yaml"
    recipe = make_recipe()
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "codeswitch",
                "name": "cs-tiny",
                "target": {"pair": "es-en", "train_minutes": 0.05},
                "sources": {"en": 0.05, "es": 0.05},
                "synth": {"dev_utts": 2, "test_utts": 2},
                "size": "tiny",
                "base": str(en_model),
                "recipe": recipe,
                "meta": {"k_train": 2, "k_valid": 2},
                "finetune": {"max_steps": 2},
            }
        )
    )
    results = run_codeswitch(config, out=tmp_path / "out", progress=False)
    runs = results["runs"]
    assert list(runs) == [f"{start}/{s}" for start in ("scratch", "base") for s in STRATEGIES]
    for name, run in runs.items():
        assert set(run["test"]) == {"es-en", "en", "es"}
        assert {"mer", "cer", "wer"} <= set(run["test"]["es-en"])
        assert [step for step, _ in run["dev_mer"]] == ([2] if "finetune" in name else [2, 4])
        data = json.loads((Path(run["run_dir"]) / "data.json").read_text())
        n_sources = 1 if name.endswith(("target", "finetune")) else 3
        assert len(data["train"]) == n_sources
        assert data.get("meta_variant") == (name.split("meta-")[1] if "meta-" in name else None)
    fine = json.loads((tmp_path / "out/runs/base/joint-finetune/model/config.json").read_text())
    assert "runs/base/joint/model" in json.dumps(fine)  # its source: the joint model
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Lowest es-en test MER" in report and "the paper's direction" in report
    # meta-transfer against joint training: a paired bootstrap of the MER, not the figures
    assert {"low", "high", "verdict"} <= set(runs["base/meta-paper"]["vs_joint"])
    assert "paired-bootstrap 95% interval" in report
    assert (tmp_path / "out" / "curves.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("target: {pair: es}\n", "code-switched pair"),
        ("strategies: [maml]\n", r"strategies: unknown \['maml'\]"),
        ("starts: [base]\n", "name the base model"),
        ("starts: [scratch]\nmeta: {k_train: 0}\n", "k_train"),
    ],
)
def test_codeswitch_config_errors_name_the_key(tmp_path, extra, message):
    from xasr.errors import XasrError
    from xasr.experiments.codeswitch import read_setting

    base = {"target": "target: {pair: es-en}\n", "sources": "sources: {en: 1}\n"}
    if extra.startswith("target"):
        base["target"] = extra
        extra = ""
    config = tmp_path / "cs.yaml"
    config.write_text("kind: codeswitch\nname: c\n" + "".join(base.values()) + extra)
    with pytest.raises(XasrError, match=message):
        read_setting(config)


@pytest.mark.parametrize(
    ("verdict", "said"),
    [
        ("a", "the paper's direction (meta-transfer beats joint training) held."),
        ("b", "reversed (joint training was better)."),
        ("tie", "is not shown: a tie (the 95% interval holds zero)."),
        (None, "held."),  # results written before the bootstrap: the figures alone
    ],
)
def test_the_meta_transfer_verdict_follows_the_bootstrap(verdict, said):
    from xasr.experiments.codeswitch import verdict as codeswitch_verdict

    def run(mer, compared=None):
        return {
            "test": {"es-en": {"mer": mer, "wer": mer, "cer": mer / 2}},
            "stopped_by": "early stopping",
            **({"vs_joint": compared} if compared else {}),
        }

    compared = verdict and {"difference": -0.01, "low": -0.02, "high": 0.01, "verdict": verdict}
    results = {
        "pair": "es-en",
        "runs": {"base/joint": run(0.50), "base/meta-reference": run(0.49, compared)},
    }
    (line,) = [x for x in codeswitch_verdict(results) if x.startswith("From base")]
    assert line.endswith(said)
    assert ("paired-bootstrap 95% interval" in line) == (verdict is not None)
