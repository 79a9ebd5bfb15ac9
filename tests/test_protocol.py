"""The model protocol (xasr.models.protocol): every family and the pretrained wrappers satisfy
it, and what a model says it can do is what it does."""

from __future__ import annotations

import pytest
import torch

from xasr.config import AED_SIZES, MODEL_SIZES, replace
from xasr.data.vocab import CharVocab
from xasr.decode.options import default_strategy
from xasr.decode.strategy import decode
from xasr.errors import XasrError
from xasr.models.build import FAMILIES, build_model
from xasr.models.protocol import AsrModel, AttentionDecoderModel, TrainableModel

VOCAB = CharVocab.from_texts(["ab ba"])
OWN = {
    "ctc": MODEL_SIZES["tiny"],
    "aed": AED_SIZES["tiny"],
    "aed-no-ctc": replace(AED_SIZES["tiny"], frontend="conv2d", ctc_weight=0.0),
}


def batch():
    torch.manual_seed(0)
    return torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])


def check_protocol(model, cfg) -> None:
    """The members every caller relies on, and the capabilities they are chosen by (the
    config says them too, without building the model)."""
    assert isinstance(cfg, FAMILIES[cfg.architecture].config)
    assert isinstance(model, TrainableModel) and isinstance(model, AsrModel)
    assert model.has_decoder == cfg.has_decoder
    assert isinstance(model.has_ctc, bool) and isinstance(model.has_decoder, bool)
    assert isinstance(model, AttentionDecoderModel) == model.has_decoder
    assert len(model.encoder.layers) >= 1  # layer surgery
    params = dict(model.named_parameters())
    assert set(model.vocab_params()) <= set(params)
    assert all(any(n.startswith(p) for n in params) for p in model.transferable_prefixes())
    assert set(model.fixed_parameters()) <= set(params)
    model.eval()
    audio, lengths = batch()
    with torch.no_grad():
        states, frames = model.encode(audio, lengths)
        assert states.shape[:2] == (2, int(frames.max()))
        if model.has_ctc:
            log_probs = model.ctc_log_probs(states)
            assert log_probs.shape == (2, states.shape[1], len(VOCAB))
            assert log_probs.dtype == torch.float32
        else:
            with pytest.raises(XasrError):
                model.ctc_log_probs(states)
        texts = decode(default_strategy(model, VOCAB), model, audio, lengths)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("name", sorted(OWN))
def test_own_families_satisfy_the_protocol(name):
    model = build_model(OWN[name], len(VOCAB))
    check_protocol(model, OWN[name])
    assert model.has_ctc == (OWN[name].architecture == "conformer-ctc" or OWN[name].ctc_weight > 0)


def test_every_registered_family_is_checked():
    """A new family is one module and one registration (``FAMILIES``): give it a tiny config
    here (OWN) and the tests above check it."""
    checked = {cfg.architecture for cfg in OWN.values()} | {"pretrained-ctc"}
    assert checked == set(FAMILIES)
    assert all(name == family.config.architecture for name, family in FAMILIES.items())


def tiny_hf_configs(transformers) -> dict:
    """One tiny random Hugging Face config of each pretrained family."""
    wav2vec2 = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "conv_dim": (16, 16),
        "conv_stride": (5, 4),
        "conv_kernel": (10, 8),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    }
    return {
        "wav2vec2": transformers.Wav2Vec2Config(**wav2vec2),
        "hubert": transformers.HubertConfig(**wav2vec2),
        "wav2vec2-conformer": transformers.Wav2Vec2ConformerConfig(
            **wav2vec2, position_embeddings_type="rotary"
        ),
        "whisper": transformers.WhisperConfig(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=48,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=48,
            num_mel_bins=80,
        ),
    }


def test_pretrained_wrappers_satisfy_the_protocol():
    transformers = pytest.importorskip("transformers")
    from xasr.config import PRETRAINED_FAMILIES, PretrainedConfig
    from xasr.models.pretrained.modules import saved_hf_config

    configs = tiny_hf_configs(transformers)
    assert set(configs) == set(PRETRAINED_FAMILIES)
    for family, hf in configs.items():
        cfg = PretrainedConfig(family=family, hf_config=saved_hf_config(hf))
        model = build_model(cfg, len(VOCAB))
        check_protocol(model, cfg)
        assert model.has_ctc and not model.has_decoder, family


def test_pretraining_task_is_trainable_with_nothing_to_decode():
    transformers = pytest.importorskip("transformers")
    from xasr.models.ssl import SslOptions, Wav2Vec2Pretraining

    config = tiny_hf_configs(transformers)["wav2vec2"]
    config.update({"num_codevectors_per_group": 8, "num_codevector_groups": 2})
    config.update({"codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5})
    model = Wav2Vec2Pretraining(transformers.Wav2Vec2ForPreTraining(config), True, SslOptions())
    assert isinstance(model, TrainableModel) and not isinstance(model, AsrModel)
    assert not model.has_ctc and not model.has_decoder
    assert default_strategy(model, VOCAB) is None
