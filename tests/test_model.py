"""The model: sizes, shapes, padding invariance, and the self-describing model directory."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from xasr.config import MODEL_SIZES, ModelConfig
from xasr.data.features import frame_lengths
from xasr.data.vocab import CharVocab
from xasr.errors import CheckpointError, XasrError
from xasr.models.build import (
    build_model,
    count_parameters,
    load_model_dir,
    model_config,
    save_model_dir,
)
from xasr.models.dropout import Dropout, dropout
from xasr.models.frontends import Conv2dSubsampling

TINY = MODEL_SIZES["tiny"]


@pytest.fixture(scope="module")
def vocab() -> CharVocab:
    return CharVocab.from_texts(["the quick brown fox jumps over the lazy dog"])


@pytest.fixture(scope="module")
def tiny_model(vocab):
    torch.manual_seed(0)
    return build_model(TINY, len(vocab)).eval()


@pytest.mark.parametrize(("size", "low", "high"), [("small", 3.5e6, 6e6), ("medium", 15e6, 25e6)])
def test_parameter_counts(size, low, high):
    n = count_parameters(build_model(model_config(size), vocab_size=40))
    assert low <= n <= high, f"{size}: {n / 1e6:.2f}M parameters"


def test_tiny_is_much_smaller_than_small():
    assert count_parameters(build_model(TINY, 40)) < 0.2 * count_parameters(
        build_model(MODEL_SIZES["small"], 40)
    )


def test_unknown_size_and_bad_configs():
    with pytest.raises(XasrError, match="unknown model size 'huge'.*small"):
        model_config("huge")
    with pytest.raises(XasrError, match="divisible"):
        ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(XasrError, match="odd"):
        ModelConfig(conv_kernel=4)


def test_forward_shapes(tiny_model, vocab):
    lengths = torch.tensor([16000, 9600, 4000])
    audio = torch.randn(3, 16000) * (torch.arange(16000)[None, :] < lengths[:, None])
    with torch.no_grad():
        log_probs, out_lengths = tiny_model(audio, lengths)
    expected = Conv2dSubsampling.output_lengths(frame_lengths(lengths))
    assert out_lengths.tolist() == expected.tolist()
    assert out_lengths.tolist() == [26, 16, 7]  # 101, 61, 26 feature frames -> /4
    assert log_probs.shape == (3, 26, len(vocab))
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 26))


def test_frame_lengths():
    assert frame_lengths(torch.tensor([0, 159, 160, 16000])).tolist() == [1, 1, 2, 101]
    assert Conv2dSubsampling.output_lengths(torch.tensor([1, 2, 3, 4, 5, 101])).tolist() == [
        1,
        1,
        1,
        1,
        2,
        26,
    ]


@pytest.mark.parametrize("short", [16100, 16337, 7999, 12345])
def test_padding_invariance(tiny_model, short):
    """An utterance's output does not depend on what it is batched with (masking works)."""
    generator = torch.Generator().manual_seed(short)
    a = torch.randn(short, generator=generator) * 0.1
    b = torch.randn(2 * 16000 + 91, generator=generator) * 0.1
    batch = torch.zeros(2, len(b))
    batch[0, :short] = a
    batch[1] = b
    with torch.no_grad():
        alone, alone_len = tiny_model(a[None], torch.tensor([short]))
        together, together_len = tiny_model(batch, torch.tensor([short, len(b)]))
        longer_alone, _ = tiny_model(b[None], torch.tensor([len(b)]))
    n = int(alone_len[0])
    assert int(together_len[0]) == n
    torch.testing.assert_close(together[0, :n], alone[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(together[1], longer_alone[0], atol=1e-4, rtol=0)


def test_training_mode_differs_from_eval(vocab):
    """Dropout is active in training mode and off in eval mode (a sanity check for the above)."""
    torch.manual_seed(1)
    model = build_model(dataclasses.replace(TINY, dropout=0.3), len(vocab))
    audio, lengths = torch.randn(1, 8000) * 0.1, torch.tensor([8000])
    model.eval()
    with torch.no_grad():
        first, _ = model(audio, lengths)
        second, _ = model(audio, lengths)
        model.train()
        noisy, _ = model(audio, lengths)
    assert torch.equal(first, second)
    assert not torch.allclose(first, noisy)


def test_save_load_round_trip(tmp_path, tiny_model, vocab):
    directory = save_model_dir(tmp_path / "m", tiny_model, TINY, vocab, extra={"note": "x"})
    assert {p.name for p in directory.iterdir()} == {
        "config.json",
        "vocab.json",
        "model.safetensors",
    }
    meta = json.loads((directory / "config.json").read_text())
    assert meta["model"] == dataclasses.asdict(TINY) and meta["note"] == "x"
    loaded, cfg, loaded_vocab = load_model_dir(directory)
    assert cfg == TINY
    assert loaded_vocab.tokens == vocab.tokens
    assert not loaded.training
    audio = torch.randn(2, 12000) * 0.1
    lengths = torch.tensor([12000, 7000])
    with torch.no_grad():
        want, _ = tiny_model(audio, lengths)
        got, _ = loaded(audio, lengths)
    assert torch.equal(want, got)
    for (name, p), (name2, q) in zip(
        tiny_model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == name2 and torch.equal(p, q)


def test_wrong_architecture_weights_raise_checkpoint_error(tmp_path, tiny_model, vocab):
    directory = save_model_dir(tmp_path / "m", tiny_model, TINY, vocab)
    small = build_model(MODEL_SIZES["small"], len(vocab))
    save_file(
        {k: v.contiguous() for k, v in small.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_model_dir(directory)


def test_weights_of_a_deeper_model_raise_checkpoint_error(tmp_path, tiny_model, vocab):
    directory = save_model_dir(tmp_path / "m", tiny_model, TINY, vocab)
    deeper = build_model(dataclasses.replace(TINY, n_layers=3), len(vocab))
    save_file(
        {k: v.contiguous() for k, v in deeper.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="unexpected.*encoder.layers.2"):
        load_model_dir(directory)


def test_weights_of_another_vocabulary_raise_checkpoint_error(tmp_path, tiny_model, vocab):
    directory = save_model_dir(tmp_path / "m", tiny_model, TINY, vocab)
    other = build_model(TINY, len(vocab) + 3)
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="head.weight"):
        load_model_dir(directory)


def test_corrupt_or_missing_weights(tmp_path, tiny_model, vocab):
    directory = save_model_dir(tmp_path / "m", tiny_model, TINY, vocab)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model_dir(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model_dir(directory)


def test_non_xasr_directory(tmp_path):
    other = tmp_path / "hf_model"
    other.mkdir()
    (other / "pytorch_model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="not an xasr model directory"):
        load_model_dir(other)
    with pytest.raises(CheckpointError, match="no model directory"):
        load_model_dir(tmp_path / "does-not-exist")
    (other / "config.json").write_text('{"architectures": ["Wav2Vec2ForCTC"]}')
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model_dir(other)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_keeps_the_asked_fraction_and_scales(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1001, requires_grad=True)  # odd count: the last int32 word is half used
    y = dropout(x, p, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx = mask * scale


def test_cpu_dropout_is_identity_in_eval_and_at_zero():
    x = torch.randn(3, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(Dropout(0.5).eval()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.5)


def test_cpu_dropout_follows_the_torch_seed():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a = dropout(x, 0.2, training=True)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.2, training=True))


def test_cpu_frontend_per_utterance_matches_the_batched_path():
    """The CPU front end convolves each utterance cut to its length; on valid frames it gives
    what the masked whole-batch path gives, and the same weight gradients."""
    torch.manual_seed(0)
    frontend = Conv2dSubsampling(n_mels=16, d_model=24, channels=8)
    lengths = torch.tensor([37, 20, 3])
    feats = torch.randn(3, 40, 16) * (torch.arange(40)[None, :, None] < lengths[:, None, None])
    each, out_lengths = frontend(feats, lengths)
    batched = frontend._forward_batched(feats, lengths)
    assert each.shape == batched.shape and out_lengths.tolist() == [10, 5, 1]
    valid = (torch.arange(each.shape[1])[None, :] < out_lengths[:, None]).unsqueeze(-1)
    assert torch.allclose(each * valid, batched * valid, atol=1e-6)
    assert torch.count_nonzero(each * ~valid) == 0
    grads = []
    for output in (each, batched):
        frontend.zero_grad()
        (output * valid).square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in frontend.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_rotary_is_the_pairwise_rotation_and_relative():
    """The complex-multiply rotary equals rotating (x[2j], x[2j+1]) by t * theta_j, and query-key
    dot products depend only on the distance between frames."""
    from xasr.models.conformer import apply_rotary, rotary_tables

    torch.manual_seed(0)
    frames, head_dim = 12, 8
    x = torch.randn(2, frames, head_dim)
    rotated = apply_rotary(x, rotary_tables(frames, head_dim, "cpu"))
    theta = 10000 ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    angle = torch.arange(frames).float()[:, None] * theta
    x1, x2 = x[..., 0::2], x[..., 1::2]
    assert torch.allclose(rotated[..., 0::2], x1 * angle.cos() - x2 * angle.sin(), atol=1e-5)
    assert torch.allclose(rotated[..., 1::2], x1 * angle.sin() + x2 * angle.cos(), atol=1e-5)
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    same = torch.stack([q] * frames), torch.stack([k] * frames)
    rq, rk = (apply_rotary(t, rotary_tables(frames, head_dim, "cpu")) for t in same)
    assert torch.allclose(rq[2] @ rk[5], rq[6] @ rk[9], atol=1e-5)


def test_depthwise_convolution_matches_conv1d():
    """The channels-last conv2d form of the depthwise convolution is the module's Conv1d."""
    from xasr.models.conformer import ConvModule

    torch.manual_seed(0)
    module = ConvModule(d_model=12, kernel=5, dropout=0.0)
    y = torch.randn(2, 9, 12, requires_grad=True)
    ours = module._depthwise_over_time(y)
    reference = module.depthwise(y.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(ours, reference, atol=1e-6)
    (grad,) = torch.autograd.grad(ours.square().sum(), y)
    (expected,) = torch.autograd.grad(reference.square().sum(), y)
    assert torch.allclose(grad, expected, atol=1e-5)


def test_cpu_dropout_with_a_tiny_p_keeps_nearly_everything():
    """Below 2**-15 the 16-bit thresholds would wrap around; F.dropout takes over."""
    torch.manual_seed(0)
    y = dropout(torch.ones(100_000), 1e-5, training=True)
    assert (y != 0).float().mean().item() > 0.999


def test_adamw_is_fused_only_for_cpu_fp32():
    from xasr.train.module import make_adamw

    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_adamw(params, 1e-3, 0.0, "cpu").defaults["fused"]
    # Lightning refuses gradient clipping with a fused optimizer under mixed precision.
    assert not make_adamw(params, 1e-3, 0.0, "cpu", "bf16-mixed").defaults["fused"]
