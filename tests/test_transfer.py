"""Cross-lingual transfer: token maps, head/encoder surgery, freezing, scratch, mismatches."""

from __future__ import annotations

import json
import math

import pytest
import torch

from xasr.config import MODEL_SIZES
from xasr.errors import CheckpointError, XasrError
from xasr.models.build import build_model, load_model_dir
from xasr.transfer.finetune import (
    TransferOptions,
    initialise_from_source,
    strategy_name,
    target_vocab,
    transfer,
)
from xasr.transfer.plan import plan_transfer
from xasr.transfer.surgery import frozen_parameter_names, reinit_top_layers
from xasr.transfer.vocab_map import base_letter, map_tokens, read_user_map

TINY = MODEL_SIZES["tiny"]


# --- token maps -------------------------------------------------------------------------------


def test_base_letter():
    assert base_letter("ä") == "a"
    assert base_letter("Ñ") == "N"
    assert base_letter("ç") == "c"
    assert base_letter("ß") == "ß"  # no decomposition
    assert base_letter("<unk>") == "<unk>"


def test_map_tokens():
    source = ["<blank>", "<unk>", "|", "a", "n", "s", "e"]
    target = ["<blank>", "<unk>", "|", "a", "ä", "ñ", "ß", "z", "É"]
    token_map = map_tokens(target, source)
    assert token_map.copied == {0: 0, 1: 1, 2: 2, 3: 3}
    assert token_map.mapped == {4: 3, 5: 4, 8: 6}  # ä<-a, ñ<-n, É<-e (via lower case)
    assert token_map.new == [6, 7]  # ß, z
    assert token_map.pairs() == {**token_map.copied, **token_map.mapped}
    info = token_map.describe(target, source)
    assert info == {
        "copied": ["<blank>", "<unk>", "|", "a"],
        "mapped": {"ä": "a", "ñ": "n", "É": "e"},
        "new": ["ß", "z"],
    }
    summary = token_map.summary(target, source)
    assert "4 tokens copied, 3 mapped" in summary and "ä<-a" in summary
    assert "2 new (ß z)" in summary


def test_user_map_comes_first_and_must_name_a_source_token():
    source = ["<blank>", "<unk>", "a", "e", "s"]
    target = ["<blank>", "<unk>", "ä", "ß", "q"]
    token_map = map_tokens(target, source, {"ß": "s", "ä": "e", "q": "not-in-source"})
    assert token_map.mapped == {2: 3, 3: 4}  # the user's ä<-e wins over the base letter a
    assert token_map.new == [4]


def test_read_user_map(tmp_path):
    text_map = tmp_path / "map.txt"
    text_map.write_text("# German\nß s\n\nä a   # umlaut\n", encoding="utf-8")
    assert read_user_map(text_map) == {"ß": "s", "ä": "a"}
    json_map = tmp_path / "map.json"
    json_map.write_text(json.dumps({"ß": "s"}), encoding="utf-8")
    assert read_user_map(json_map) == {"ß": "s"}
    assert read_user_map(None) == {}
    text_map.write_text("ß s\nä a e\n", encoding="utf-8")
    with pytest.raises(XasrError, match=rf"{text_map}:2: expected 'TARGET SOURCE'"):
        read_user_map(text_map)
    with pytest.raises(XasrError, match="does not exist"):
        read_user_map(tmp_path / "nope.txt")


def test_strategy_names():
    assert strategy_name(TransferOptions(source="x")) == "transfer"
    assert strategy_name(TransferOptions(source="x", reinit_head=True, drop_layers=2)) == (
        "reinit-head+drop2"
    )
    assert strategy_name(TransferOptions(scratch=True)) == "scratch"


# --- surgery on the tiny English model, before training --------------------------------------


@pytest.fixture(scope="module")
def source(en_model):
    model, cfg, vocab = load_model_dir(en_model)
    return model, cfg, vocab


@pytest.fixture(scope="module")
def german_vocab(corpus, make_cfg, source):
    return target_vocab(corpus.de_train, make_cfg(), source[2])


def initialised(source, vocab, seed=0, **opts):
    src_model, src_cfg, src_vocab = source
    torch.manual_seed(seed)
    model = build_model(src_cfg, len(vocab))
    opts = TransferOptions(source="en", **opts)
    shapes = {n: tuple(p.shape) for n, p in src_model.named_parameters()}
    plan = plan_transfer(
        model,
        vocab,
        src_vocab,
        False,
        opts.reinit_head,
        opts.drop_layers,
        0,
        opts.token_map_file,
        source_shapes=shapes,
    )
    report = initialise_from_source(model, src_model, plan, (src_vocab, vocab), src_cfg, seed)
    return model, report


def state(model, prefix=""):
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def assert_all_differ(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for key, value in a.items():
        assert not torch.equal(value, b[key]), key


def test_head_transfer_copies_rows_and_encoder(source, german_vocab):
    src_model, _, src_vocab = source
    assert len(german_vocab) != len(src_vocab)  # a different head shape: no shape error
    model, report = initialised(source, german_vocab)
    assert_same(state(model, "frontend."), state(src_model, "frontend."))
    assert_same(state(model, "encoder."), state(src_model, "encoder."))
    assert report["tensors_copied"] == len(state(src_model, "frontend.")) + len(
        state(src_model, "encoder.")
    )
    tokens = report["tokens"]
    assert {"ä": "a", "ö": "o", "ü": "u"}.items() <= tokens["mapped"].items()
    assert "ß" in tokens["new"]  # no base letter and no user map
    assert {"<blank>", "<unk>", "|", "e", "s"} <= set(tokens["copied"])
    src_index, tgt_index = src_vocab.index, german_vocab.index
    for token in tokens["copied"]:
        t, s = tgt_index[token], src_index[token]
        assert torch.equal(model.head.weight[t], src_model.head.weight[s]), token
        assert torch.equal(model.head.bias[t], src_model.head.bias[s]), token
    for token, letter in tokens["mapped"].items():
        t, s = tgt_index[token], src_index[letter]
        assert torch.equal(model.head.weight[t], src_model.head.weight[s]), token
        assert model.head.bias[t].item() == pytest.approx(
            src_model.head.bias[s].item() - math.log(2), abs=1e-3
        )
    new = tgt_index["ß"]
    assert model.head.bias[new].item() == pytest.approx(src_model.head.bias.min().item())
    torch.manual_seed(0)  # a new token's weights are the fresh model's, untouched
    fresh = build_model(source[1], len(german_vocab))
    assert torch.equal(model.head.weight[new], fresh.head.weight[new])
    assert report["vocab_params"] == ["head.weight", "head.bias"]
    assert report["init_modules"] == {"copied": ["frontend", "encoder"], "vocab_rows": ["head"]}


def test_reinit_head_keeps_encoder_only(source, german_vocab):
    src_model, _, src_vocab = source
    model, report = initialised(source, german_vocab, reinit_head=True)
    assert "tokens" not in report
    assert_same(state(model, "encoder."), state(src_model, "encoder."))
    for token in ("<blank>", "e", "s", "|"):
        t, s = german_vocab.index[token], src_vocab.index[token]
        assert not torch.equal(model.head.weight[t], src_model.head.weight[s]), token


def test_drop_layers_reinitialises_the_top(source, german_vocab):
    src_model, _, _ = source
    model, report = initialised(source, german_vocab, drop_layers=1)
    top = TINY.n_layers - 1
    assert report["dropped_layers"] == [top]
    assert_same(state(model, "frontend."), state(src_model, "frontend."))
    for i in range(top):
        assert_same(state(model, f"encoder.layers.{i}."), state(src_model, f"encoder.layers.{i}."))
    top_new, top_src = (
        state(model, f"encoder.layers.{top}."),
        state(src_model, f"encoder.layers.{top}."),
    )
    weights = [k for k in top_new if k.endswith("weight") and top_new[k].dim() > 1]
    assert weights
    for key in weights:  # every matrix re-drawn (LayerNorm ones/zeros can coincide)
        assert not torch.equal(top_new[key], top_src[key]), key


def test_surgery_bounds(source):
    model = source[0]
    with pytest.raises(CheckpointError, match="--drop-layers 3: the model has 2"):
        reinit_top_layers(model, model, 3)
    with pytest.raises(CheckpointError, match="--freeze-layers 5"):
        frozen_parameter_names(model, 5)
    assert frozen_parameter_names(model, 0) == set()
    names = frozen_parameter_names(model, 1)
    assert any(n.startswith("frontend.") for n in names)
    assert any(n.startswith("encoder.layers.0.") for n in names)
    assert not any(n.startswith(("encoder.layers.1.", "head.")) for n in names)


def test_architecture_mismatch_names_the_field(en_model, corpus, make_cfg, tmp_path):
    opts = TransferOptions(source=str(en_model), expect=MODEL_SIZES["small"])
    with pytest.raises(CheckpointError) as info:
        transfer(tmp_path / "run", corpus.de_train, corpus.de_dev, opts, make_cfg(), progress=False)
    message = str(info.value)
    assert "d_model: source 64 vs requested 144" in message
    assert "n_layers" in message
    assert not (tmp_path / "run").exists()


def test_missing_source_is_a_checkpoint_error(corpus, make_cfg, tmp_path):
    opts = TransferOptions(source=str(tmp_path / "no-such-model"))
    with pytest.raises(CheckpointError, match="no model directory"):
        transfer(tmp_path / "run", corpus.de_train, corpus.de_dev, opts, make_cfg(), progress=False)


# --- end-to-end transfers (a few steps each) -------------------------------------------------

FROZEN = ("frontend.", "encoder.layers.0.")
TOP = "encoder.layers.1."


def trained_state(run):
    model, _, vocab = load_model_dir(run / "model")
    return model, vocab


def test_transfer_with_user_map_and_frozen_layers(en_model, source, corpus, make_cfg, tmp_path):
    token_map = tmp_path / "de.map"
    token_map.write_text("ß s\n", encoding="utf-8")
    run = tmp_path / "run"
    result = transfer(
        run,
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(source=str(en_model), token_map_file=str(token_map)),
        make_cfg(max_steps=6, val_every=6, freeze_layers=1),
        progress=False,
    )
    assert result.steps == 6
    report = json.loads((run / "transfer.json").read_text(encoding="utf-8"))
    assert report["strategy"] == "transfer" and report["freeze_layers"] == 1
    mapped = report["tokens"]["mapped"]
    assert mapped["ä"] == "a" and mapped["ö"] == "o" and mapped["ü"] == "u"
    assert mapped["ß"] == "s"
    assert "ß" not in report["tokens"]["new"]
    src_model = source[0]
    model, vocab = trained_state(run)
    assert "ß" in vocab.tokens and "ä" in vocab.tokens
    for prefix in FROZEN:
        assert_same(state(model, prefix), state(src_model, prefix))
    top = state(model, TOP)
    assert any(not torch.equal(v, state(src_model, TOP)[k]) for k, v in top.items())
    # the resume checkpoint holds the same frozen weights
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for key, value in state(src_model, "frontend.").items():
        assert torch.equal(ckpt["state_dict"]["model." + key], value), key


def frozen_changed(run, src_model) -> dict[str, bool]:
    model, _ = trained_state(run)
    out = {}
    for prefix in (*FROZEN, TOP):
        new, old = state(model, prefix), state(src_model, prefix)
        out[prefix] = any(not torch.equal(new[k], old[k]) for k in new)
    return out


def test_freeze_steps_longer_than_training_keeps_layers(
    en_model, source, corpus, make_cfg, tmp_path
):
    transfer(
        tmp_path / "run",
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(source=str(en_model)),
        make_cfg(max_steps=4, val_every=4, freeze_layers=1, freeze_steps=1000),
        progress=False,
    )
    changed = frozen_changed(tmp_path / "run", source[0])
    assert changed == {"frontend.": False, "encoder.layers.0.": False, TOP: True}


def test_freeze_steps_then_unfrozen(en_model, source, corpus, make_cfg, tmp_path):
    result = transfer(
        tmp_path / "run",
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(source=str(en_model)),
        make_cfg(max_steps=5, val_every=5, freeze_layers=1, freeze_steps=2),
        progress=False,
    )
    assert result.steps == 5
    changed = frozen_changed(tmp_path / "run", source[0])
    assert changed == {"frontend.": True, "encoder.layers.0.": True, TOP: True}


def test_scratch_without_source(corpus, make_cfg, tmp_path, source):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="source model is required"):
        transfer(run, corpus.de_train, corpus.de_dev, TransferOptions(scratch=True), make_cfg())
    result = transfer(
        run,
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(scratch=True, expect=TINY),
        make_cfg(max_steps=2, val_every=2),
        progress=False,
    )
    assert result.steps == 2
    report = json.loads((run / "transfer.json").read_text())
    assert report["strategy"] == "scratch" and report["source"] is None
    assert "tokens" not in report
    model, cfg, vocab = load_model_dir(run / "model")
    assert cfg == TINY and "ß" in vocab.tokens
    # a random start: nothing in common with the English model
    assert_all_differ(
        state(model, "encoder.layers.0.ff1.net.1."), state(source[0], "encoder.layers.0.ff1.net.1.")
    )
