"""The paired bootstrap that tells a win from chance in the experiments' verdicts."""

from __future__ import annotations

import pytest

from xasr.decode.significance import compare_runs, interval_text, paired_bootstrap

REFS = [f"the cat sat on mat {i}" for i in range(40)]


def test_a_clear_win_is_a_win_and_its_interval_excludes_zero():
    good = list(REFS)
    bad = [r.replace("cat", "dog").replace("mat", "hat") for r in REFS]
    compared = paired_bootstrap(REFS, good, bad, "wer")
    assert compared["verdict"] == "a" and compared["high"] < 0 < compared["a_better"]
    assert compared["difference"] == pytest.approx(-2 / 6)
    assert paired_bootstrap(REFS, bad, good, "wer")["verdict"] == "b"


def test_one_error_apart_is_a_tie():
    """A single differing word in 240 is within chance."""
    other = list(REFS)
    other[0] = other[0].replace("cat", "dog")
    compared = paired_bootstrap(REFS, other, REFS, "wer")
    assert compared["verdict"] == "tie" and compared["low"] <= 0 <= compared["high"]
    assert compared["difference"] == pytest.approx(1 / 240)


def test_same_seed_same_interval_and_character_rates():
    hyps = [r[:-1] for r in REFS]
    first = paired_bootstrap(REFS, hyps, REFS, "cer", seed=3)
    assert first == paired_bootstrap(REFS, hyps, REFS, "cer", seed=3)
    assert first["difference"] > 0 and first["verdict"] == "b"
    assert interval_text({"difference": -0.031, "low": -0.05, "high": -0.012}) == (
        "-3.1 pts [-5.0, -1.2]"
    )
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(REFS, hyps, REFS, "bleu")


def test_evaluations_of_other_utterances_are_refused():
    a = {"hypotheses": [{"id": "u1", "ref": "a b", "hyp": "a b"}]}
    b = {"hypotheses": [{"id": "u2", "ref": "a b", "hyp": "a"}]}
    with pytest.raises(ValueError, match="same utterances"):
        compare_runs(a, b)
