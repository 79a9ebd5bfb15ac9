"""n-gram LM decoding: label mapping, lmplz through `xasr build-lm`, beam search that the LM steers
away from the greedy reading, and `xasr evaluate --lm`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from xasr.cli import main
from xasr.data.vocab import CharVocab, SentencePieceVocab
from xasr.decode.greedy import greedy_texts
from xasr.decode.lm import LmDecoder, build_lm, ctc_labels, kenlm_tool, load_unigrams
from xasr.errors import XasrError

# "the" is frequent and "teh" never occurs.
LM_TEXT = [
    "the cat sat on the mat",
    "the dog saw the cat",
    "the cat ate the fish",
    "a cat and the dog",
    "the hat is on the cat",
    "the end",
]


@pytest.fixture(scope="module")
def lmplz():
    try:
        return kenlm_tool("lmplz")
    except XasrError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def the_lm(lmplz, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    text = root / "text.txt"
    text.write_text("\n".join(s.upper() for s in LM_TEXT) + "\n", encoding="utf-8")
    summary = build_lm([text], root / "the.arpa", order=3)
    assert summary["sentences"] == len(LM_TEXT)
    return root / "the.arpa"


def frames(vocab: CharVocab, *rows: dict) -> np.ndarray:
    """(frames, vocab) log-probs; each row gives probabilities of a few tokens, the rest share
    a small floor."""
    out = np.full((len(rows), len(vocab)), 1e-3)
    for t, row in enumerate(rows):
        for token, p in row.items():
            out[t, vocab.index[token]] = p
    return np.log(out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def test_char_labels():
    vocab = CharVocab.from_texts(["the cat", "ñu"])
    labels = ctc_labels(vocab)
    assert vocab.tokens[:2] == ["<blank>", "<unk>"]
    assert labels[0] == "" and labels[1] == "⁇"
    assert labels[vocab.index["|"]] == " "
    assert labels[vocab.index["ñ"]] == "ñ"
    assert len(labels) == len(vocab) and "|" not in labels


def test_sentencepiece_labels():
    vocab = SentencePieceVocab.train(LM_TEXT * 10, vocab_size=24)
    labels = ctc_labels(vocab)
    assert labels[:2] == ["", "▁⁇▁"]
    assert labels[2:] == vocab.tokens[2:]
    assert any(label.startswith("▁") for label in labels)


def test_lm_turns_teh_into_the(the_lm):
    vocab = CharVocab.from_texts(["the cat"])
    # The acoustics lean to "teh" (0.55 vs 0.45 on the two ambiguous frames).
    log_probs = frames(
        vocab,
        {"t": 0.9},
        {"e": 0.55, "h": 0.45},
        {"h": 0.55, "e": 0.45},
        {"|": 0.9},
        {"c": 0.9},
        {"<blank>": 0.9},
        {"a": 0.9},
        {"t": 0.9},
    )
    greedy = greedy_texts(torch.from_numpy(log_probs)[None], torch.tensor([len(log_probs)]), vocab)
    assert greedy == ["teh cat"]
    decoder = LmDecoder(vocab, the_lm, beam_width=16, lm_weight=0.5, word_bonus=1.0)
    assert decoder.decode_one(log_probs) == "the cat"
    batch = decoder.decode_log_probs(
        torch.from_numpy(log_probs)[None], torch.tensor([len(log_probs)])
    )
    assert batch == ["the cat"]
    assert decoder.info()["name"] == "ctc-beam-lm"


def test_unk_is_never_emitted(the_lm):
    vocab = CharVocab.from_texts(["the cat"])
    log_probs = frames(vocab, {"t": 0.9}, {"<unk>": 0.9}, {"h": 0.5, "e": 0.4}, {"e": 0.9})
    text = LmDecoder(vocab, the_lm).decode_one(log_probs)
    assert "⁇" not in text and "<unk>" not in text


def test_build_lm_cli_from_manifest(lmplz, tmp_path, capsys):
    import kenlm

    rows = [{"audio_filepath": f"{i}.wav", "text": s} for i, s in enumerate(LM_TEXT)]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    held_out = tmp_path / "test.txt"
    held_out.write_text("THE END\nsaw the cat\n", encoding="utf-8")  # and what holds them
    out = tmp_path / "lm" / "lm.arpa"
    code = main(
        ["build-lm", "--text", str(manifest), "--order", "3", "--out", str(out)]
        + ["--exclude", str(held_out)]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sentences"] == len(LM_TEXT) - 2 and summary["excluded_sentences"] == 2
    assert out.read_text(encoding="utf-8").lstrip().startswith("\\data\\")
    model = kenlm.Model(str(out))
    assert model.order == 3
    assert "cat" in model and "end" not in model and "saw" not in model
    assert {"the", "cat", "fish"} <= load_unigrams(out)
    assert model.score("the cat", bos=True, eos=False) > model.score("cat the", bos=True, eos=False)


def test_build_lm_binary(lmplz, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(LM_TEXT), encoding="utf-8")
    out = tmp_path / "lm.bin"
    build_lm([text], out, order=2)
    assert {"the", "cat"} <= load_unigrams(out)  # from the word list beside it
    vocab = CharVocab.from_texts(["the cat"])
    assert LmDecoder(vocab, out).info()["lm"] == str(out)


def test_missing_lm_is_a_user_error(tmp_path):
    with pytest.raises(XasrError, match="does not exist"):
        LmDecoder(CharVocab.from_texts(["a b"]), tmp_path / "none.arpa")


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A random tiny model and a manifest of two noise clips: evaluate's plumbing, not accuracy."""
    from xasr.config import MODEL_SIZES
    from xasr.models.build import build_model, save_model_dir

    root = tmp_path_factory.mktemp("untrained")
    vocab = CharVocab.from_texts(LM_TEXT)
    torch.manual_seed(0)
    model_dir = save_model_dir(
        root / "model", build_model(MODEL_SIZES["tiny"], len(vocab)), MODEL_SIZES["tiny"], vocab
    )
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(LM_TEXT[:2]):
        sf.write(str(root / f"{i}.wav"), 0.1 * rng.standard_normal(16_000), 16_000)
        rows.append({"audio_filepath": f"{i}.wav", "duration": 1.0, "text": text})
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return model_dir, manifest


def test_evaluate_with_lm(untrained_model, the_lm, tmp_path, capsys):
    model_dir, manifest = untrained_model
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(model_dir), "--manifest", str(manifest)]
    args += ["--device", "cpu", "--no-progress", "--json", str(out)]
    assert main([*args, "--lm", str(the_lm), "--beam-width", "8", "--lm-weight", "0.7"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decoder"] == {
        "name": "ctc-beam-lm",
        "lm": str(the_lm),
        "beam_width": 8,
        "lm_weight": 0.7,
        "word_bonus": 1.0,
    }
    assert result["decode_rtf"] > 0 and result["utterances"] == 2
    assert result["audio_seconds"] == pytest.approx(2.0)
    assert len(json.loads(out.read_text(encoding="utf-8"))["hypotheses"]) == 2
    assert main(args) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert greedy["decoder"] == {"name": "greedy"} and greedy["decode_rtf"] > 0


def test_lm_weights_are_chosen_on_dev(the_lm, untrained_model, monkeypatch):
    """The dev set's log-probabilities lean to "teh cat": greedy and weight 0 keep the error,
    a positive weight fixes it; the lowest dev CER wins (ties: the smaller weight and bonus),
    and the table holds every pair beside greedy decoding's scores."""
    from xasr.decode import lm_tuning

    model_dir, manifest = untrained_model
    vocab = CharVocab.from_texts(LM_TEXT)
    teh = frames(vocab, {"t": 0.9}, {"e": 0.55, "h": 0.45}, {"h": 0.55, "e": 0.45}, {"|": 0.9},
                 {"c": 0.9}, {"<blank>": 0.9}, {"a": 0.9}, {"t": 0.9})  # fmt: skip
    monkeypatch.setattr(lm_tuning, "load_model_dir", lambda d: (torch.nn.Linear(1, 1), None, vocab))
    monkeypatch.setattr(lm_tuning, "dev_log_probs", lambda *a, **k: ([teh], ["the cat"]))
    monkeypatch.setattr(torch.nn.Linear, "ctc_log_probs", lambda self: None, raising=False)
    tuned = lm_tuning.tune_lm_weights(model_dir, manifest, the_lm, lm_weights=(0.0, 0.5, 1.0),
                                      word_bonuses=(0.0, 1.0), beam_width=16)  # fmt: skip
    assert tuned.greedy["cer"] > 0 and len(tuned.table) == 6
    assert tuned.dev_cer == 0.0 and tuned.lm_weight == 0.5
    assert tuned.word_bonus == min(r["word_bonus"] for r in tuned.table if r["lm_weight"] == 0.5
                                   and r["cer"] == 0.0)  # fmt: skip
    assert all(r["cer"] > 0 for r in tuned.table if r["lm_weight"] == 0.0)


def test_lm_tuning_runs_on_a_model_and_refuses_a_bad_metric(the_lm, untrained_model):
    from xasr.decode.lm_tuning import tune_lm_weights

    model_dir, manifest = untrained_model
    tuned = tune_lm_weights(model_dir, manifest, the_lm, lm_weights=(0.5,), word_bonuses=(1.0,))
    assert len(tuned.table) == 1 and set(tuned.greedy) == {"cer", "wer"}
    with pytest.raises(XasrError, match="metric 'bleu'"):
        tune_lm_weights(model_dir, manifest, the_lm, metric="bleu")
