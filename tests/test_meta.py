"""The first-order meta-transfer step against its formulas, on a linear model by hand, and
the training step of MetaAsrTask (Lightning manual optimisation) against AdamW along it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xasr.errors import XasrError
from xasr.train.meta import MetaOptions, meta_gradient


def mse(model: nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def grad_by_hand(w: torch.Tensor, batch: dict) -> torch.Tensor:
    """d/dw mean((x w - y)^2) = 2/N x^T (x w - y), for a bias-free linear model."""
    x, y = batch["x"], batch["y"]
    return 2 / len(y) * x.T @ (x @ w - y)


def clipped(g: torch.Tensor, max_norm: float) -> torch.Tensor:
    norm = float(torch.linalg.vector_norm(g))
    return g * min(1.0, max_norm / (norm + 1e-6)) if max_norm else g


def setting(seed=0):
    generator = torch.Generator().manual_seed(seed)

    def batch(n):
        x = torch.randn(n, 3, generator=generator)
        return {
            "x": x,
            "y": x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=generator),
        }

    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, 0.2, -0.1]]))
    return model, [batch(4), batch(6)], batch(5)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_paper_step_is_the_mean_query_gradient_at_the_adapted_weights(clip):
    model, supports, query = setting()
    w = model.weight.detach()[0].clone()
    alpha = 0.1
    grads, stats = meta_gradient(model, mse, supports, query, MetaOptions(alpha, clip, "paper"))
    expected = sum(
        grad_by_hand(w - alpha * clipped(grad_by_hand(w, s), clip), query) for s in supports
    ) / len(supports)
    assert torch.allclose(grads["weight"][0], expected, atol=1e-6)
    assert torch.equal(model.weight.detach()[0], w)  # the weights are back where they were
    assert stats["query_loss"] > 0 and stats["support_loss"] > 0


def test_reference_step_adds_the_support_gradients_at_the_start():
    model, supports, query = setting(1)
    w = model.weight.detach()[0].clone()
    alpha, clip = 0.05, 1.0
    grads, _ = meta_gradient(model, mse, supports, query, MetaOptions(alpha, clip, "reference"))
    support = [clipped(grad_by_hand(w, s), clip) for s in supports]
    query_part = sum(grad_by_hand(w - alpha * g, query) for g in support) / len(supports)
    assert torch.allclose(grads["weight"][0], query_part + sum(support), atol=1e-6)


def test_an_error_mid_step_leaves_the_weights_unchanged():
    model, supports, query = setting()
    w = model.weight.detach().clone()

    def failing(model, batch):
        if batch is query:
            raise RuntimeError("out of memory")
        return mse(model, batch)

    with pytest.raises(RuntimeError):
        meta_gradient(model, failing, supports, query, MetaOptions(0.1))
    assert torch.equal(model.weight.detach(), w)


def test_options_are_checked():
    with pytest.raises(XasrError, match="--meta-transfer"):
        MetaOptions(variant="second-order")
    with pytest.raises(XasrError, match="--inner-lr"):
        MetaOptions(inner_lr=0)


@pytest.mark.parametrize("arch", ["ctc", "aed"])
def test_meta_step_through_the_model_protocol(arch):
    """Both families' ``loss`` feed the step; every trained weight gets a finite gradient."""
    from xasr.models.build import build_model, model_config

    torch.manual_seed(0)
    model = build_model(model_config("tiny", arch), 10)

    def batch(seconds):
        n = int(seconds * 16000)
        return {
            "audio": torch.randn(2, n) * 0.1,
            "audio_lengths": torch.tensor([n, n // 2]),
            "targets": torch.tensor([[3, 4, 5], [6, 0, 0]]),
            "target_lengths": torch.tensor([3, 1]),
        }

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads, _ = meta_gradient(
        model, lambda m, b: m.loss(b)[0], [batch(1.0), batch(0.8)], batch(0.6), MetaOptions()
    )
    assert set(grads) == set(before)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_training_step_moves_the_weights_by_adamw_along_the_clipped_meta_gradient(make_cfg):
    """MetaAsrTask under Lightning: one step = meta_gradient at the start weights, clipped to
    grad_clip, then the AdamW step at the schedule's first learning rate."""
    import copy
    import dataclasses

    import lightning as L

    from xasr.config import MODEL_SIZES
    from xasr.models.build import build_model
    from xasr.train.module import MetaAsrTask, lr_factor, make_adamw

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(MODEL_SIZES["tiny"], dropout=0.0), 10)
    cfg = make_cfg(spec_augment=False, meta_variant="reference", grad_clip=0.5)
    opts = MetaOptions.from_train_config(cfg)

    def batch(seconds, seed):
        n = int(seconds * 16000)
        g = torch.Generator().manual_seed(seed)
        return {
            "audio": torch.randn(2, n, generator=g) * 0.1,
            "audio_lengths": torch.tensor([n, n // 2]),
            "targets": torch.tensor([[3, 4, 5], [6, 0, 0]]),
            "target_lengths": torch.tensor([3, 1]),
            "texts": ["abc", "d"],
        }

    step = {"supports": [batch(1.0, 1), batch(0.8, 2)], "query": batch(0.6, 3)}
    expected = copy.deepcopy(model)
    grads, _ = meta_gradient(
        expected, lambda m, b: m.loss(b)[0], step["supports"], step["query"], opts
    )
    norm = float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads.values()])))
    optimizer = make_adamw(
        expected.parameters(),
        cfg.lr * lr_factor(0, cfg.warmup_steps, cfg.max_steps),
        cfg.weight_decay,
        "cpu",
    )
    for name, p in expected.named_parameters():
        p.grad = grads[name] * min(1.0, cfg.grad_clip / (norm + 1e-6))
    optimizer.step()

    assert norm > cfg.grad_clip  # the clipping is exercised
    start = copy.deepcopy(model)
    task = MetaAsrTask(model, vocab=None, cfg=cfg, meta=opts)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader([step], batch_size=None))
    assert trainer.global_step == 1
    for (name, got), want in zip(model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, msg=name)
    moved = [not torch.equal(a, b) for a, b in zip(start.parameters(), model.parameters())]
    assert sum(moved) > len(moved) // 2  # the weights moved from their start


def test_meta_tasks_sources_with_one_manifest_fails_before_any_file(corpus, tmp_path, make_cfg):
    from xasr.config import MODEL_SIZES
    from xasr.errors import DataError
    from xasr.train.loop import train

    cfg = make_cfg(meta_variant="paper", meta_tasks="sources")
    with pytest.raises(DataError, match="--meta-tasks sources needs a source"):
        train(tmp_path / "run", corpus.de_train, corpus.de_dev, cfg, MODEL_SIZES["tiny"])
    assert not (tmp_path / "run" / "vocab.json").exists()


def test_the_diagnosis_measures_the_inner_step_and_the_query_gradients_turn():
    """inner_step_diagnosis: ||theta' - theta|| is inner_lr times the clipped support
    gradient's norm; a zero-size step leaves the query gradient as it was (cosine 1: eval mode,
    no dropout), a large one turns it; the weights, the training mode and the random generator
    are as they were."""
    from xasr.config import MODEL_SIZES
    from xasr.models.build import build_model
    from xasr.train.meta import inner_step_diagnosis

    torch.manual_seed(0)
    model = build_model(MODEL_SIZES["tiny"], 10).train()

    def batch(scale, seed):
        g = torch.Generator().manual_seed(seed)
        return {
            "audio": torch.randn(2, 8000, generator=g) * scale,
            "audio_lengths": torch.tensor([8000, 6000]),
            "targets": torch.tensor([[3, 4, 5], [6, 0, 0]]),
            "target_lengths": torch.tensor([3, 1]),
        }

    def loss(m, b):
        return m.loss(b)[0]

    supports, query = [batch(1.0, 1), batch(0.8, 2)], batch(0.6, 3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    still = inner_step_diagnosis(
        model, loss, supports, query, MetaOptions(inner_lr=1e-12, clip=0.0)
    )
    assert still["inner_step"] < 1e-9 and abs(still["query_cosine"] - 1) < 1e-6
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    clipped = inner_step_diagnosis(
        model, loss, supports, query, MetaOptions(inner_lr=0.1, clip=0.05)
    )
    assert abs(clipped["inner_step"] - 0.1 * 0.05) < 1e-6  # the clip bounds the step
    big = inner_step_diagnosis(model, loss, supports, query, MetaOptions(inner_lr=1.0, clip=0.0))
    assert big["query_cosine"] < 0.99
