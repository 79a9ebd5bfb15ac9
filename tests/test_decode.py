"""Decoding and scoring: greedy CTC, WER/CER counts, evaluate(), duration batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab
from xasr.decode.batches import duration_batches
from xasr.decode.evaluate import evaluate, transcribe_paths
from xasr.decode.greedy import greedy_ids, greedy_texts
from xasr.decode.metrics import ErrorCounts, error_counts, error_counts_by_language, mixed_tokens
from xasr.models.build import build_model, load_model_dir

DATA = Path(__file__).parent / "data"


def one_hot_log_probs(paths: list[list[int]], vocab_size: int) -> torch.Tensor:
    """(batch, frames, vocab) log-probs whose argmax per frame is ``paths``."""
    probs = torch.full((len(paths), len(paths[0]), vocab_size), 0.1 / (vocab_size - 1))
    for b, path in enumerate(paths):
        for t, token in enumerate(path):
            probs[b, t, token] = 0.9
    return probs.log()


def test_greedy_ids_merges_repeats_drops_blanks_and_respects_lengths():
    log_probs = one_hot_log_probs(
        [
            [1, 1, 0, 1, 2, 2, 0, 3],  # 1 1 | blank | 1 | 2 2 | blank | 3 -> 1 1 2 3
            [3, 0, 0, 3, 3, 2, 2, 1],  # length 5: 3 . . 3 3 -> 3 3 (the rest is padding)
            [0, 0, 0, 0, 0, 0, 0, 0],  # all blank
        ],
        vocab_size=4,
    )
    lengths = torch.tensor([8, 5, 8])
    assert greedy_ids(log_probs, lengths) == [[1, 1, 2, 3], [3, 3], []]
    # a repeat straddling the length boundary is not merged with padding frames
    assert greedy_ids(log_probs, torch.tensor([1, 1, 1])) == [[1], [3], []]
    assert greedy_ids(log_probs, torch.tensor([0, 0, 0])) == [[], [], []]


def test_greedy_ids_with_another_blank_id():
    log_probs = one_hot_log_probs([[2, 2, 0, 0, 2, 1]], vocab_size=3)
    assert greedy_ids(log_probs, torch.tensor([6]), blank_id=2) == [[0, 1]]


def test_greedy_texts_decodes_spaces():
    vocab = CharVocab.from_texts(["ab ba"])  # <blank> <unk> a b |
    a, b, space = vocab.index["a"], vocab.index["b"], vocab.index["|"]
    log_probs = one_hot_log_probs([[a, a, 0, b, space, space, b, 0, a, 0]], len(vocab))
    assert greedy_texts(log_probs, torch.tensor([10]), vocab) == ["ab ba"]


def test_mixed_error_rate_on_code_switched_text():
    assert mixed_tokens("我喜欢 jazz音乐") == "我 喜 欢 jazz 音 乐"
    assert mixed_tokens("カタカナ ok") == "カ タ カ ナ ok"
    # zh-en: one Han character and one English word wrong of 3 + 2 + 2 tokens
    zh = error_counts(["我们 去 shopping mall 吧吧"], ["我门 去 shopping hall 吧吧"])
    assert (zh.mixed_errors, zh.mixed_ref) == (2, 7) and zh.mer == pytest.approx(2 / 7)
    assert zh.wer == pytest.approx(2 / 5)  # by words, "我们" is one token and one error
    # es-en (Latin script only): MER is WER
    es = error_counts(["vamos al mall mañana"], ["vamos a mall mañana"])
    assert es.mer == es.wer == 0.25
    # CJK alone: MER is the character error rate without spaces
    assert error_counts(["今天天气好"], ["今天天器好"]).mer == pytest.approx(1 / 5)
    total = zh + es
    assert total.mer == pytest.approx(3 / 11)  # counts add before dividing


def test_error_counts_known_values():
    one_sub = error_counts(["the cat sat down"], ["the cat sat town"])
    assert one_sub.wer == 0.25
    assert one_sub.cer == pytest.approx(1 / 16)  # spaces count as characters
    assert (one_sub.word_errors, one_sub.word_ref, one_sub.word_hits) == (1, 4, 3)
    assert one_sub.utterances == 1

    deletion = error_counts(["a b c d"], ["a b c"])
    assert deletion.wer == 0.25
    insertion = error_counts(["a b c d"], ["a b c d e"])
    assert insertion.wer == 0.25 and insertion.word_insertions == 1
    assert insertion.mer == insertion.wer  # no CJK characters: MER is WER

    assert error_counts(["hello world"], ["hello world"]).wer == 0.0
    assert error_counts(["hello world"], [""]).wer == 1.0  # empty hypothesis: all deleted
    assert error_counts(["hello world"], ["  hello world "]).cer == 0.0  # stripped


def test_error_counts_sum_before_dividing():
    a = error_counts(["one two three four"], ["one two three four"])  # 0 / 4
    b = error_counts(["five"], ["six"])  # 1 / 1
    total = a + b
    assert total.wer == pytest.approx(1 / 5)  # not the mean of rates (0.5)
    assert total == error_counts(["one two three four", "five"], ["one two three four", "six"])
    assert total.utterances == 2
    assert ErrorCounts().wer == 0.0 and ErrorCounts().cer == 0.0
    assert error_counts([""], ["anything"]) == ErrorCounts()  # empty references are skipped
    with pytest.raises(ValueError):
        error_counts(["a", "b"], ["a"])
    json_form = total.to_json()
    assert json_form["wer"] == total.wer and json_form["words"] == 5


def test_error_counts_by_language():
    refs = ["the cat", "der hund", "die katze", "no lang"]
    hyps = ["the cat", "der hunt", "di katze", "no lang"]
    langs = ["en", "de", "de", ""]
    by_lang = error_counts_by_language(refs, hyps, langs)
    assert list(by_lang) == ["de", "en", "unknown"]
    assert by_lang["en"].wer == 0.0
    assert by_lang["de"].wer == 0.5 and by_lang["de"].word_ref == 4
    assert by_lang["de"].char_errors == 2
    assert by_lang["unknown"].utterances == 1
    assert sum(by_lang.values(), ErrorCounts()) == error_counts(refs, hyps)


@pytest.mark.parametrize("budget", [1.0, 3.0, 5.5, 100.0])
def test_duration_batches_respect_the_budget(budget):
    durations = [1.0, 2.5, 0.5, 3.0, 1.2, 2.0, 0.7, 4.9]
    batches = duration_batches(durations, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
    for batch in batches:
        padded = max(durations[i] for i in batch) * len(batch)
        assert padded <= budget or len(batch) == 1  # a single long one still gets a batch
    flat = [durations[i] for batch in batches for i in batch]
    assert flat == sorted(flat)  # grouped by length: little padding
    if budget >= sum(durations):
        assert len(batches) == 1
    assert duration_batches([], budget) == []


# --- the tiny English model ----------------------------------------------------------------


def test_evaluate_writes_hypotheses(en_model, corpus, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate(en_model, corpus.mixed, output=out, progress=False)
    for key in ("wer", "cer", "mer", "utterances", "words", "chars", "model", "manifest"):
        assert key in result
    assert result["utterances"] == 6
    assert 0.0 <= result["cer"] and 0.0 <= result["wer"]
    assert set(result["by_language"]) == {"en", "de"}
    assert result["by_language"]["en"]["utterances"] == 3
    assert "6 utterances" in result["data"]
    detail = json.loads(out.read_text(encoding="utf-8"))
    assert [u["id"] for u in detail["hypotheses"]] == [
        "en-0",
        "en-1",
        "en-2",
        "de-0",
        "de-1",
        "de-2",
    ]
    assert detail["hypotheses"][3]["ref"] == "grüße aus köln"
    _, _, vocab = load_model_dir(en_model)
    for utt in detail["hypotheses"]:
        assert isinstance(utt["hyp"], str)
        assert set(utt["hyp"].replace(" ", "")) <= set(vocab.tokens)
    # the rates are those of the written hypotheses
    recount = error_counts(
        [u["ref"] for u in detail["hypotheses"]], [u["hyp"] for u in detail["hypotheses"]]
    )
    assert recount.wer == pytest.approx(result["wer"])
    assert recount.cer == pytest.approx(result["cer"])
    assert len(detail["hypotheses"]) == result["utterances"]
    assert {k: detail[k] for k in result} == result


def test_evaluate_single_language_has_no_breakdown(en_model, corpus):
    result = evaluate(en_model, corpus.en_dev, progress=False)
    assert "by_language" not in result and result["utterances"] == 3


def test_transcripts_do_not_depend_on_batching(en_model, corpus):
    # an untrained model: its transcripts are long random strings, so any change shows
    _, cfg, vocab = load_model_dir(en_model)
    torch.manual_seed(3)
    model = build_model(cfg, len(vocab)).eval()
    utts = read_manifest(corpus.en_train)
    paths = [u.audio_filepath for u in utts]
    durations = [u.duration for u in utts]
    one_by_one = transcribe_paths(
        model, vocab, paths, durations, device="cpu", max_batch_seconds=0.1
    )
    together = transcribe_paths(
        model, vocab, paths, durations, device="cpu", max_batch_seconds=1000.0
    )
    assert all(len(text) > 3 for text in together)
    assert one_by_one == together
    with torch.inference_mode():
        audio, lengths = torch.zeros(1, 16000), torch.tensor([16000])
        log_probs, frames = model(audio, lengths)
    assert log_probs.shape[:2] == (1, int(frames[0]))


def test_shipped_en_small_decodes_as_before(corpus):
    """en-small's greedy transcripts of the suite's utterances, recorded with the code before
    decoding went through the model protocol (tests/data/en_small_greedy.json)."""
    recorded = json.loads((DATA / "en_small_greedy.json").read_text(encoding="utf-8"))
    rows = corpus.en_rows + corpus.de_rows
    model, _, vocab = load_model_dir("en-small")
    texts = transcribe_paths(
        model,
        vocab,
        [corpus.root / r["audio_filepath"] for r in rows],
        [r["duration"] for r in rows],
        device="cpu",
    )
    assert {r["id"]: t for r, t in zip(rows, texts)} == recorded["texts"]


def test_errors_within_each_languages_stretches():
    from xasr.decode.metrics import errors_by_stretch

    # es-en: "the" -> "de" is an English word error (t->d, h deleted: 2 characters)
    ref = "quien the reality dice ni peca"
    spans = [
        {"start": 0, "end": 5, "lang": "es"},
        {"start": 6, "end": 17, "lang": "en"},
        {"start": 18, "end": 30, "lang": "es"},
    ]
    by = errors_by_stretch([ref], ["quien de reality dice ni peca"], [spans])
    assert (by["en"]["word_errors"], by["en"]["words"], by["en"]["char_errors"]) == (1, 2, 2)
    assert by["es"]["word_errors"] == 0 and by["es"]["words"] == 4
    assert by["en"]["chars"] + by["es"]["chars"] == len(ref)
    # an insertion counts for the language before it; a deletion for its own
    by = errors_by_stretch([ref], ["quien the reality ok dice peca"], [spans])
    assert by["en"]["word_errors"] == 1 and by["es"]["word_errors"] == 1
    # zh-en: a Han character wrong in the Chinese stretch, the English word right
    zh = "我们去 shopping"
    zh_spans = [{"start": 0, "end": 3, "lang": "zh"}, {"start": 4, "end": 12, "lang": "en"}]
    by = errors_by_stretch([zh], ["我门去 shopping"], [zh_spans])
    assert by["zh"]["char_errors"] == 1 and by["en"]["char_errors"] == 0
    assert by["zh"]["chars"] == 4 and by["en"]["chars"] == 8  # the space goes with 我们去


def test_transcribe_files_loads_the_model_and_decodes_as_transcribe_paths(en_model, corpus):
    from xasr.data.audio import audio_duration
    from xasr.decode.transcribe import Recognizer, transcribe_files

    paths = [str(corpus.root / row["audio_filepath"]) for row in corpus.en_rows[:3]]
    model, _, vocab = load_model_dir(en_model)
    durations = [audio_duration(p) for p in paths]
    expected = transcribe_paths(model, vocab, paths, durations, device="cpu")
    assert transcribe_files(en_model, paths, device="cpu") == expected
    recognizer = Recognizer.load(en_model)
    assert recognizer.masks is None and recognizer.network("de") is recognizer.model
    assert transcribe_files(recognizer, paths, device="cpu") == expected


def test_transcribe_files_refuses_missing_audio_before_loading_the_model(tmp_path):
    from xasr.decode.transcribe import transcribe_files
    from xasr.errors import DataError

    with pytest.raises(DataError, match=r"gone\.wav does not exist or is not a file"):
        transcribe_files("nowhere", [tmp_path / "gone.wav"])
