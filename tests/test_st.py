"""Speech-translation-enhanced transfer (xasr.transfer.st): the chain on a handful of
utterances, each stage loading what the previous one saved, reuse and refusal of an ST run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from xasr.config import AED_SIZES
from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab, load_vocab
from xasr.decode.metrics import translation_scores
from xasr.errors import XasrError
from xasr.models.build import build_model, save_model_dir
from xasr.transfer import finetune
from xasr.transfer.finetune import TransferOptions
from xasr.transfer.st import StOptions, hold_out, st_enhanced_transfer

# English -> "German": a shell one-liner as the translator (the command backend)
TRANSLATOR = "sed -e s/the/die/g -e s/cat/katze/g"


@pytest.fixture(scope="module")
def en_aed_dir(corpus, tmp_path_factory):
    """A tiny random English AED saved as a model directory: the chain's source."""
    texts = [json.loads(line)["text"] for line in corpus.en_train.read_text().splitlines()]
    vocab = CharVocab.from_texts(texts)
    torch.manual_seed(5)
    model = build_model(AED_SIZES["tiny"], len(vocab))
    return save_model_dir(tmp_path_factory.mktemp("en-aed"), model, AED_SIZES["tiny"], vocab)


def st_options(corpus, **changes) -> StOptions:
    return dataclasses.replace(
        StOptions(
            source_speech=str(corpus.en_train),
            source_valid=str(corpus.en_dev),
            translate_with="command",
            translator_command=TRANSLATOR,
        ),
        **changes,
    )


def chain(corpus, run, source_dir, st: StOptions, cfg):
    """The chain on the test corpus: English speech -> "German" text -> German recognizer."""
    options = TransferOptions(source=str(source_dir))
    return st_enhanced_transfer(
        run, corpus.de_train, corpus.de_dev, options, st, cfg, progress=False
    )


def test_chain_stages_load_what_the_previous_saved(
    corpus, en_aed_dir, make_cfg, tmp_path, monkeypatch
):
    loaded = []  # (model directory, its weights as loaded) for every transfer's source
    real_load = finetune.load_model_dir

    def recording_load(directory, *args, **kwargs):
        model, cfg, vocab = real_load(directory, *args, **kwargs)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        loaded.append((directory.resolve(), state))
        return model, cfg, vocab

    monkeypatch.setattr(finetune, "load_model_dir", recording_load)
    run = tmp_path / "de"
    cfg = make_cfg(max_steps=4, val_every=2)
    result = chain(corpus, run, en_aed_dir, st_options(corpus), cfg)
    st_dir = run / "st"
    # stage 1: the ST manifests are the English speech with the translation as text
    st_train = read_manifest(st_dir / "translations" / "train.jsonl")
    english = read_manifest(corpus.en_train)
    assert [u.audio_filepath for u in st_train] == [u.audio_filepath for u in english]
    for st_line, en_line in zip(st_train, english):
        assert st_line.extra["transcript"] == en_line.text
        assert st_line.text == en_line.text.replace("the", "die").replace("cat", "katze")
        assert st_line.lang == "de" and st_line.extra["translation_kind"] == "command"
    # stage 2: the ST model starts from the English AED, its vocabulary the target's letters
    assert loaded[0][0] == en_aed_dir.resolve()
    st_vocab = load_vocab(st_dir / "model")
    target_letters = {c for u in read_manifest(corpus.de_train) for c in u.text.replace(" ", "")}
    assert target_letters <= set(st_vocab.tokens) and "z" in st_vocab.tokens
    st_report = json.loads((st_dir / "transfer.json").read_text())
    assert st_report["init_modules"]["copied"] == ["frontend", "encoder", "decoder"]
    quality = json.loads((st_dir / "translation.json").read_text())
    assert set(quality) >= {"bleu", "chrf", "cer", "lines"} and quality["lines"] == 3
    # stage 3: the recognizer loads the ST model as saved, and every row copies
    assert loaded[1][0] == (st_dir / "model").resolve()
    saved = load_file(str(st_dir / "model" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in loaded[1][1].items())
    report = json.loads((run / "transfer.json").read_text())
    assert report["source"] == str(st_dir / "model")
    assert report["init_modules"]["copied"] == ["frontend", "encoder", "decoder"]
    assert not report["tokens"]["mapped"] and not report["tokens"]["new"]
    record = json.loads((run / "chain.json").read_text())
    assert record["st"]["translate_with"] == "command" and record["translation_quality"] == quality
    assert result.model_dir == run / "model" and result.steps == 4

    # run again: nothing is translated or trained again; the finished ST run is reused
    before = (st_dir / "model" / "model.safetensors").stat().st_mtime_ns
    loaded.clear()
    chain(corpus, run, en_aed_dir, st_options(corpus), cfg)
    assert (st_dir / "model" / "model.safetensors").stat().st_mtime_ns == before

    # another recognizer reuses the ST run; one with another translator is refused
    other = tmp_path / "de-again"
    chain(corpus, other, en_aed_dir, st_options(corpus, st_run=str(st_dir)), cfg)
    assert json.loads((other / "transfer.json").read_text())["source"] == str(st_dir / "model")
    assert (st_dir / "model" / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(XasrError, match="translator_command"):
        chain(
            corpus,
            tmp_path / "de-sed",
            en_aed_dir,
            st_options(corpus, st_run=str(st_dir), translator_command="sed -e s/a/e/g"),
            cfg,
        )


def test_a_ctc_source_is_refused_before_any_work(corpus, en_model, make_cfg, tmp_path):
    with pytest.raises(XasrError, match="attention encoder-decoder"):
        chain(corpus, tmp_path / "run", en_model, st_options(corpus), make_cfg())
    assert not (tmp_path / "run" / "st" / "translations").exists()


def test_held_out_lines_are_drawn_once_and_kept_out(corpus):
    lines = read_manifest(corpus.en_train)
    rest, held = hold_out(lines, 3)
    assert len(held) == 3 and len(rest) == len(lines) - 3
    assert not {u.id for u in rest} & {u.id for u in held}
    assert [u.id for u in hold_out(lines, 3)[1]] == [u.id for u in held]
    with pytest.raises(XasrError, match="--st-heldout"):
        hold_out(lines, len(lines))


def test_translation_scores():
    perfect = translation_scores(["el gato negro come pescado"], ["el gato negro come pescado"])
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    worse = translation_scores(["el gato negro come pescado"], ["el perro negro come carne"])
    assert worse["bleu"] < 50 and worse["chrf"] < perfect["chrf"]


def _st_config(tmp_path, en_aed_dir, make_recipe, **changes):
    import yaml

    recipe = {k: v for k, v in make_recipe().items() if k not in ("max_steps", "patience")}
    sed = {"name": "sed", "backend": "command", "command": "sed -e s/the/el/g"}
    config = tmp_path / "st.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "st-transfer",
                "name": "st-tiny",
                "out": str(tmp_path / "out"),
                "source": {"lang": "en", "train_minutes": 0.1},
                "targets": {"es": {"train_minutes": 0.05, "translators": [sed]}},
                "synth": {"dev_utts": 2, "test_utts": 2},
                "base": str(en_aed_dir),
                "seeds": [0],
                "budget": {"steps": 4},
                "st_budget": {"steps": 2},
                "recipe": recipe,
                **changes,
            }
        )
    )
    return config


def test_st_transfer_experiment_gives_every_recognizer_the_same_budget(
    tmp_path, en_aed_dir, make_recipe
):
    """kind: st-transfer on a few synthesized utterances: direct, an ST arm and a pure-attention
    ST arm per translator; each recognizer trains the same 4 steps, its ST stage's 2 counted
    beside them; the ST arm's recognizer starts from its ST model; the pure-attention ST stage
    leaves the CTC branch untrained; verdicts named."""
    from safetensors.torch import load_file

    from xasr.experiments.kinds import run_experiment

    results = run_experiment(_st_config(tmp_path, en_aed_dir, make_recipe), progress=False)
    rows = {r["label"]: r for r in results["rows"]}
    assert list(rows) == ["direct", "st-sed", "st-sed-attention"]
    assert {r["steps"] for r in rows.values()} == {4}
    assert rows["st-sed"]["st_passes"] == 2 and rows["direct"]["st_passes"] is None
    assert rows["st-sed"]["bleu"] is not None
    out = tmp_path / "out" / "runs" / "es"
    transfer = json.loads((out / "st-sed/seed0/transfer.json").read_text())
    assert transfer["source"] == str(out / "st-sed" / "st-seed0" / "model")
    # the pure-attention ST stage: its CTC head is the base's, remapped, never trained
    with_ctc = load_file(str(out / "st-sed/st-seed0/model/model.safetensors"))
    without = load_file(str(out / "st-sed-attention/st-seed0/model/model.safetensors"))
    assert not torch.equal(with_ctc["head.weight"], without["head.weight"])
    assert set(results["verdicts"]["es"]) == {"st-sed", "st-sed-attention"}
    assert results["verdicts"]["es"]["st-sed-attention"]["against"] == "st-sed"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "4 optimizer steps for every arm" in report and "| es | st-sed |" in report


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"source": {"train_minutes": 3}}, "source must give"),
        ({"targets": {"es": {"translators": ["babelfish"]}}}, "a translator is a backend"),
        ({"targets": {"es": {"translators": []}}}, "at least one"),
        ({"targets": {"es": {"translator": ["dictionary"]}}}, "unknown key"),
        ({"st_recipe": {"patience": 3}}, "st_recipe: patience cannot be set here"),
        ({"arms": ["st-ctc"]}, "arms: unknown"),
    ],
)
def test_st_transfer_config_errors_name_the_key(
    tmp_path, en_aed_dir, make_recipe, changes, message
):
    from xasr.experiments.kinds.st_transfer import KIND

    with pytest.raises(XasrError, match=message):
        KIND.load(_st_config(tmp_path, en_aed_dir, make_recipe, **changes), None)


def test_a_ctc_loss_weight_is_refused_for_a_ctc_model(corpus, en_model, make_cfg, tmp_path):
    from xasr.transfer.finetune import TransferOptions, transfer

    with pytest.raises(XasrError, match="ctc_loss_weight: only an attention encoder-decoder"):
        transfer(tmp_path / "run", corpus.de_train, corpus.de_dev, TransferOptions(source=str(en_model)),
                 make_cfg(ctc_loss_weight=0.0), progress=False)  # fmt: skip


def test_command_line_names_what_the_chain_misses(xasr, corpus, en_aed_dir, tmp_path):
    import subprocess

    common = [xasr, "transfer", "--from", str(en_aed_dir), "--train", str(corpus.de_train)]
    common += ["--valid", str(corpus.de_dev), "--out", str(tmp_path / "run")]
    for extra, message in (
        (["--source-speech", str(corpus.en_train)], "--source-speech needs --strategy st-enhanced"),
        (["--strategy", "st-enhanced"], "needs --source-speech M"),
        (
            ["--strategy", "st-enhanced", "--source-speech", str(tmp_path / "gone.jsonl")],
            "--source-speech",
        ),
    ):
        done = subprocess.run(common + extra, check=False, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0]


def test_the_st_stage_needs_its_own_folder(corpus, en_aed_dir, make_cfg, tmp_path):
    with pytest.raises(XasrError, match="--out itself"):
        chain(
            corpus,
            tmp_path / "run",
            en_aed_dir,
            st_options(corpus, st_run=str(tmp_path / "run")),
            make_cfg(),
        )
