"""Code-switched sentences: stretches switched word by word, their offsets, and the SSML."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess

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


def _codeswitch_config(tmp_path, en_model, make_recipe, **changes):
    import yaml

    recipe = {k: v for k, v in make_recipe().items() if k not in ("max_steps", "patience")}
    config = tmp_path / "cs.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "codeswitch",
                "name": "cs-tiny",
                "out": str(tmp_path / "out"),
                "target": {"pair": "es-en", "train_minutes": 0.05},
                "sources": {"en": 0.05, "es": 0.05},
                "synth": {"dev_utts": 2, "test_utts": 2},
                "base": str(en_model),
                "seeds": [0],
                "budget": {"passes": 24},
                "recipe": recipe,
                "meta": {"k_train": 2, "k_valid": 2},
                "inner_lrs": [0.01, 0.1],
                "validations": 2,
                **changes,
            }
        )
    )
    return config


def test_codeswitch_experiment_gives_every_arm_the_same_passes(tmp_path, en_model, make_recipe):
    """kind: codeswitch on a few synthesized utterances: every arm spends the same forward-
    backward passes (a meta step six: a support and a query pass for each of 3 tasks),
    joint-finetune counts both its stages, meta arms log their inner step, meta-paper's inner
    learning rate is chosen on dev, and the report names each comparison's verdict."""
    from xasr.experiments.kinds import run_experiment

    config = _codeswitch_config(tmp_path, en_model, make_recipe)
    results = run_experiment(config, progress=False)
    rows = {r["label"]: r for r in results["rows"]}
    assert set(rows) == {"target", "joint", "joint-share", "joint-finetune", "meta-paper-lr0.01",
                         "meta-paper-lr0.1", "meta-reference"}  # fmt: skip
    assert {r["passes"] for r in rows.values()} == {24}
    assert rows["meta-reference"]["steps"] == 4 and rows["joint"]["steps"] == 24
    assert rows["joint-finetune"]["steps"] == 24  # 18 joint + 6 fine-tuning
    assert rows["meta-reference"]["inner_step"] > 0 and "query_cosine" in rows["meta-reference"]
    assert results["chosen"]["meta-paper"] in ("meta-paper-lr0.01", "meta-paper-lr0.1")
    out = tmp_path / "out"
    finetuned = json.loads((out / "runs/joint-finetune/seed0/data.json").read_text())
    assert len(finetuned["train"]) == 1  # the second stage: the target alone
    joint_stage = json.loads((out / "runs/joint-finetune/seed0/joint-stage/data.json").read_text())
    assert len(joint_stage["train"]) == 3
    share = json.loads((out / "runs/joint-share/seed0/data.json").read_text())
    assert share["mixing"] == "weights" and [w for _, w in share["train"]] == [4.0, 2.0, 2.0]
    for row in rows.values():
        assert {"es", "en"} <= set(row["stretch_cer"]) and set(row["source_cer"]) == {"en", "es"}
    assert len(results["verdicts"]) == 3
    for verdict in results["verdicts"].values():
        assert verdict["verdict"] in ("held", "reversed", "no difference")
        assert verdict["compared"]["metric"] == "mer"
    report = (out / "report.md").read_text()
    assert "the paper's claim: meta-transfer beats joint training" in report
    assert "### Did the inner step do anything?" in report and "(chosen on dev)" in report
    assert "24 forward-backward passes for every arm" in report


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": {"pair": "es"}}, "code-switched pair"),
        ({"arms": ["maml"]}, r"arms: unknown \['maml'\]"),
        ({"base": None}, "name the base"),
        ({"meta": {"k_train": 0}}, "k_train"),
        ({"meta": {"max_passes": 3}}, "meta: max_passes cannot be set here"),
        ({"finetune_share": 1.5}, "finetune_share must be in"),
        ({"strategies": ["joint"]}, "unknown key"),
    ],
)
def test_codeswitch_config_errors_name_the_key(tmp_path, en_model, make_recipe, changes, message):
    from xasr.errors import XasrError
    from xasr.experiments.kinds.codeswitch import KIND

    config = _codeswitch_config(tmp_path, en_model, make_recipe, **changes)
    with pytest.raises(XasrError, match=message):
        KIND.load(config, None)
