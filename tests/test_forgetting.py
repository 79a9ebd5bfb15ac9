"""Adapting without forgetting: replay mixing, L2-SP, EWC, the saved Fisher, before/after, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from xasr.cli import main
from xasr.errors import XasrError
from xasr.models.build import build_model, load_model_dir
from xasr.transfer import finetune
from xasr.transfer.finetune import TransferOptions, strategy_name, transfer
from xasr.transfer.forgetting import (
    FISHER_FILE,
    FORGETTING_FILE,
    AnchorPenalty,
    check_before_after,
    compare_with_source,
    evaluate_before_after,
    normalise_fisher,
    to_target_layout,
)
from xasr.transfer.plan import TransferPlan
from xasr.transfer.vocab_map import TokenMap

# --- L2-SP and EWC on a toy model ------------------------------------------------------------


def fit(model: nn.Module, penalty: AnchorPenalty | None, steps: int = 200) -> nn.Module:
    """A least-squares fit toward a goal far from the start, with an optional penalty."""
    torch.manual_seed(1)
    x = torch.randn(64, 4)
    y = x @ torch.full((4, 3), 2.0) + 1.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = (model(x) - y).square().mean()
        if penalty is not None:
            loss = loss + penalty(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def toy_source() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def distance(model: nn.Module, source: dict) -> float:
    return (
        sum(float((p.detach() - source[n]).square().sum()) for n, p in model.named_parameters())
        ** 0.5
    )


def l2sp(source_state: dict, alpha: float) -> AnchorPenalty:
    return AnchorPenalty(
        source_state, {n: torch.full_like(t, alpha) for n, t in source_state.items()}
    )


def test_l2sp_pulls_toward_the_source_weights():
    source_state = {n: p.detach().clone() for n, p in toy_source().named_parameters()}
    free = fit(toy_source(), None)
    pulled = fit(toy_source(), l2sp(source_state, 1.0))
    assert distance(pulled, source_state) < 0.7 * distance(free, source_state)
    # zero at the source weights, with a zero gradient there; alpha * (w - w_source) elsewhere
    model = toy_source()
    penalty = l2sp(source_state, 0.5)
    value = penalty(model)
    value.backward()
    assert value.item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    with torch.no_grad():
        model.weight += 1.0
    model.zero_grad()
    penalty(model).backward()
    assert torch.allclose(model.weight.grad, torch.full_like(model.weight, 0.5))
    assert penalty(model).item() == pytest.approx(0.5 / 2 * model.weight.numel())


def test_ewc_weighs_by_fisher_and_zero_fisher_is_free():
    source_state = {n: p.detach().clone() for n, p in toy_source().named_parameters()}
    fisher = {n: torch.zeros_like(t) for n, t in source_state.items()}
    fisher["weight"][0] = 10.0  # only the first output row matters to the source task
    ewc = AnchorPenalty(source_state, fisher)
    free = fit(toy_source(), None)
    anchored = fit(toy_source(), ewc)
    # output rows are independent in a least-squares fit: zero-Fisher rows train as if free
    assert torch.allclose(anchored.weight[1:], free.weight[1:])
    assert torch.allclose(anchored.bias[1:], free.bias[1:])
    kept = (anchored.weight[0] - source_state["weight"][0]).norm()
    moved = (free.weight[0] - source_state["weight"][0]).norm()
    assert kept < 0.2 * moved
    # the gradient is F * (w - w_source): zero wherever F is zero
    model = toy_source()
    with torch.no_grad():
        model.weight += 1.0
    ewc(model).backward()
    assert torch.equal(model.weight.grad[1:], torch.zeros_like(model.weight[1:]))
    assert torch.allclose(model.weight.grad[0], torch.full_like(model.weight[0], 10.0))


def test_fisher_normalised_to_mean_one_over_anchored_weights():
    fisher = {"a": torch.tensor([1.0, 3.0, 100.0]), "b": torch.tensor([[2.0, 2.0]])}
    mask = {"a": torch.tensor([1.0, 1.0, 0.0]), "b": torch.ones(1, 2)}
    normalised = normalise_fisher(fisher, mask)
    assert torch.allclose(normalised["a"], torch.tensor([0.5, 1.5, 0.0]))  # masked out: 0
    assert torch.allclose(normalised["b"], torch.tensor([[1.0, 1.0]]))
    with pytest.raises(XasrError, match="Fisher information is zero"):
        normalise_fisher({"a": torch.zeros(3)}, {"a": torch.ones(3)})


def test_target_layout_places_shared_head_rows(en_model):
    source, cfg, _ = load_model_dir(en_model)
    target = build_model(cfg, 5)

    def plan(rows: dict) -> TransferPlan:
        token_map = TokenMap(copied=rows) if rows else None
        copied = tuple(n for n, _ in target.named_parameters() if not n.startswith("head."))
        rows = ("head.weight", "head.bias")
        return TransferPlan(token_map, copied, rows, (1,), frozenset())

    params = dict(source.named_parameters())
    laid = to_target_layout(params, target, plan({0: 0, 3: 7}))
    assert not any(n.startswith("encoder.layers.1.") for n in laid)
    assert torch.equal(
        laid["encoder.layers.0.ff1.net.1.weight"], params["encoder.layers.0.ff1.net.1.weight"]
    )
    assert laid["head.weight"].shape == (5, source.head.in_features)
    assert torch.equal(laid["head.weight"][3], params["head.weight"][7])
    assert torch.equal(laid["head.bias"][[1, 2, 4]], torch.zeros(3))
    assert "head.weight" not in to_target_layout(params, target, plan({}))  # fresh head


# --- end to end on the tiny corpus -------------------------------------------------------------


def penalty_buffers(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("penalty.")}


def _no_estimate(*args, **kwargs):
    raise AssertionError("the Fisher was estimated again on resume")


@pytest.fixture(scope="module")
def adapted(en_model, corpus, make_cfg, tmp_path_factory):
    """German from the tiny English model with replay + L2-SP + EWC: 10 steps (Lightning logs
    every 10th), then a resume to 15 steps during which estimating the Fisher fails the test."""
    run = tmp_path_factory.mktemp("adapted") / "run"
    opts = TransferOptions(
        source=str(en_model),
        replay_manifest=str(corpus.en_train),
        replay_fraction=0.3,
        l2sp_weight=1.0,
        ewc_weight=1.0,
        fisher_batches=2,
    )
    first = transfer(
        run,
        corpus.de_train,
        corpus.de_dev,
        opts,
        make_cfg(max_steps=10, val_every=5),
        progress=False,
    )
    fisher_written = (run / FISHER_FILE).stat().st_mtime_ns
    buffers = penalty_buffers(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "estimate_fisher", _no_estimate)
        resumed = transfer(
            run,
            corpus.de_train,
            corpus.de_dev,
            opts,
            make_cfg(max_steps=15, val_every=5),
            progress=False,
        )
    return SimpleNamespace(
        run=run,
        opts=opts,
        first=first,
        resumed=resumed,
        fisher_written=fisher_written,
        buffers=buffers,
        groups=ckpt["optimizer_states"][0]["param_groups"],
    )


def test_adapted_run_records_and_trains_with_replay_and_penalties(adapted, en_model):
    run = adapted.run
    assert adapted.first.steps == 10
    report = json.loads((run / "transfer.json").read_text(encoding="utf-8"))
    assert report["strategy"] == "transfer+replay0.3+l2sp+ewc"
    assert report["options"]["replay_fraction"] == 0.3 and report["options"]["ewc_weight"] == 1.0
    assert report["penalty"]["anchored_weights"] > 0
    # "y" is only in the English (replay) text: the target vocabulary includes replay text
    _, _, vocab = load_model_dir(run / "model")
    assert "y" in vocab.tokens and "ß" in vocab.tokens
    with (run / "logs" / "attempt-0" / "metrics.csv").open(newline="") as handle:
        logged = [
            row["train_penalty"] for row in csv.DictReader(handle) if row.get("train_penalty")
        ]
    assert logged and all(float(v) >= 0.0 for v in logged)
    with (run / "metrics.csv").open(newline="") as handle:  # and in the merged curve
        assert "train_penalty" in next(csv.reader(handle))
    # the exported model holds the model only, no penalty buffers
    exported = load_file(str(run / "model" / "model.safetensors"))
    assert not any("ref__" in k or "coef__" in k for k in exported)
    # every parameter is anchored here (the head by its shared rows): no weight decay, which
    # would pull toward 0 (see test_cli_writes_forgetting_json for a free head)
    assert {g["name"]: g["weight_decay"] for g in adapted.groups} == {"trainable_anchored": 0.0}


def test_penalty_references_are_the_source_weights(adapted, en_model):
    source, _, source_vocab = load_model_dir(en_model)
    _, _, vocab = load_model_dir(adapted.run / "model")
    buffers = adapted.buffers
    params = dict(source.named_parameters())
    refs = {
        k.removeprefix("penalty.ref__").replace("__", "."): v
        for k, v in buffers.items()
        if k.startswith("penalty.ref__")
    }
    body = {n: t for n, t in refs.items() if not n.startswith("head.")}
    assert body.keys() == {n for n in params if n.startswith(("frontend.", "encoder."))}
    assert all(torch.equal(t, params[n]) for n, t in body.items())
    head_coef = buffers["penalty.coef__head__weight"]
    assert bool((head_coef[vocab.index["ß"]] == 0).all())  # a new letter is free
    assert bool((head_coef[vocab.index["ä"]] == 0).all())  # a mapped one too (ä only starts as a)
    assert bool((head_coef[vocab.index["e"]] > 0).all())  # a shared letter is anchored
    head_ref = buffers["penalty.ref__head__weight"]
    assert torch.equal(head_ref[vocab.index["e"]], source.head.weight[source_vocab.index["e"]])


def test_fisher_is_saved_and_reused_on_resume(adapted, en_model):
    run = adapted.run
    assert adapted.resumed.steps == 15  # resumed, and estimate_fisher was never called
    assert (run / FISHER_FILE).stat().st_mtime_ns == adapted.fisher_written
    fisher = load_file(str(run / FISHER_FILE))
    source, _, _ = load_model_dir(en_model)
    shapes = {n: p.shape for n, p in source.named_parameters()}
    assert {n: t.shape for n, t in fisher.items()} == shapes
    assert all(bool((t >= 0).all()) for t in fisher.values())
    assert any(bool((t > 0).any()) for t in fisher.values())
    # the resumed checkpoint carries the same references and coefficients
    after = penalty_buffers(run)
    assert after.keys() == adapted.buffers.keys()
    assert all(torch.equal(after[k], adapted.buffers[k]) for k in after)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"l2sp_weight": 2.0}, "--l2sp 1.0, not 2.0"),
        ({"replay_fraction": 0.5}, "--replay-fraction 0.3, not 0.5"),
        ({"replay_manifest": "elsewhere/en.jsonl"}, "--replay .*, not elsewhere/en.jsonl"),
    ],
)
def test_resume_refuses_changed_penalty_or_replay(adapted, corpus, make_cfg, change, message):
    changed = TransferOptions(**{**vars(adapted.opts), **change})
    with pytest.raises(XasrError, match="started with " + message):
        transfer(adapted.run, corpus.de_train, corpus.de_dev, changed, make_cfg(), progress=False)


def test_evaluate_before_after(adapted, en_model, corpus):
    tests = {"source": corpus.en_dev, "target": corpus.de_dev}
    results = evaluate_before_after(str(en_model), adapted.run / "model", tests)
    assert set(results) == {"source", "target"}
    for name, result in results.items():
        assert result["before"]["model"] == str(en_model)
        assert result["after"]["model"] == str(adapted.run / "model")
        assert result["before"]["manifest"] == str(tests[name])
        for metric in ("cer", "wer"):
            change = result["after"][metric] - result["before"][metric]
            assert result[f"{metric}_change"] == pytest.approx(change)
        assert "hypotheses" not in result["before"] and "hypotheses" not in result["after"]


def test_before_after_tests_are_checked_before_training(en_model, corpus, tmp_path):
    check_before_after(str(en_model), {"source": corpus.en_dev})
    check_before_after(None, {})  # no tests: nothing to check
    with pytest.raises(XasrError, match="compare with the source model: pass --from"):
        check_before_after(None, {"source": corpus.en_dev})
    with pytest.raises(XasrError, match="--target-test .*gone.jsonl does not exist"):
        check_before_after(str(en_model), {"target": tmp_path / "gone.jsonl"})


def test_compare_with_source_on_the_main_process_only(adapted, en_model, corpus, tmp_path):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    tests = {"source": corpus.en_dev}
    assert compare_with_source(tmp_path, en_model, adapted.run / "model", {}) is None
    rank = rank_zero_only.rank
    try:
        rank_zero_only.rank = 1  # another DDP process: the main one evaluates
        assert compare_with_source(tmp_path, en_model, adapted.run / "model", tests) is None
    finally:
        rank_zero_only.rank = rank
    assert not (tmp_path / FORGETTING_FILE).exists()
    results = compare_with_source(tmp_path, en_model, adapted.run / "model", tests)
    assert set(results) == {"source"}
    saved = json.loads((tmp_path / FORGETTING_FILE).read_text(encoding="utf-8"))
    assert saved["source"]["cer_change"] == pytest.approx(results["source"]["cer_change"])


def test_strategy_name_suffixes():
    assert strategy_name(
        TransferOptions(source="x", replay_manifest="m", replay_fraction=0.25)
    ) == ("transfer+replay0.25")
    assert strategy_name(TransferOptions(source="x", l2sp_weight=0.1)) == "transfer+l2sp"
    assert strategy_name(
        TransferOptions(source="x", reinit_head=True, ewc_weight=1, fisher_manifest="m")
    ) == ("reinit-head+ewc")


# --- command line -------------------------------------------------------------------------------


def transfer_args(corpus, run: Path, *extra: str) -> list[str]:
    return [
        "transfer",
        "--train",
        str(corpus.de_train),
        "--valid",
        str(corpus.de_dev),
        "--out",
        str(run),
        "--workers",
        "0",
        "--accelerator",
        "cpu",
        "--warmup-steps",
        "1",
        "--batch-seconds",
        "30",
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replay", "{en}", "--replay-fraction", "1.5"], "--replay-fraction must be in (0, 1)"),
        (["--replay", "{en}"], "--replay-fraction must be in (0, 1)"),
        (["--replay-fraction", "0.3"], "a replay fraction needs source-language data"),
        (["--scratch", "--l2sp", "0.1"], "--scratch has none"),
        (["--scratch", "--ewc", "1", "--replay", "{en}", "--replay-fraction", "0.2"], "--scratch"),
        (["--ewc", "1"], "--ewc needs source-language data for the Fisher"),
    ],
)
def test_cli_errors(extra, message, en_model, corpus, tmp_path, capsys):
    args = [a.replace("{en}", str(corpus.en_train)) for a in extra]
    code = main(transfer_args(corpus, tmp_path / "run", "--from", str(en_model), *args))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xasr transfer: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_writes_forgetting_json(en_model, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        transfer_args(
            corpus,
            run,
            "--from",
            str(en_model),
            "--l2sp",
            "0.5",
            "--reinit-head",
            "--max-steps",
            "2",
            "--val-every",
            "2",
            "--source-test",
            str(corpus.en_dev),
            "--target-test",
            str(corpus.de_dev),
        )
    )
    assert code == 0
    out = capsys.readouterr().out
    results = json.loads((run / "forgetting.json").read_text(encoding="utf-8"))
    assert set(results) == {"source", "target"}
    assert "CER before" in out and "CER after" in out
    table = out[out.index("test  ") :].splitlines()
    assert [line.split()[0] for line in table[1:]] == ["source", "target"]
    assert json.loads((run / "transfer.json").read_text())["strategy"] == "reinit-head+l2sp"
    # a re-initialised head is not anchored and keeps its weight decay
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    decay = {g["name"]: (g["weight_decay"], len(g["params"])) for g in groups}
    assert decay == {
        "trainable": (0.001, 2),
        "trainable_anchored": (0.0, decay["trainable_anchored"][1]),
    }
    assert not any(k.startswith("penalty.ref__head") for k in ckpt["state_dict"])
