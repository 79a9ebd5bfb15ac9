"""Pretrained encoders from disk (xasr.models.pretrained, its ctranslate2 module): tiny random
Hugging Face models saved by the test, and a CTranslate2 file it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from xasr.data.vocab import BLANK, UNK
from xasr.errors import CheckpointError
from xasr.models.build import build_model, load_model_dir
from xasr.models.pretrained import WhisperLogMel
from xasr.models.pretrained.ctranslate2 import read_model_bin, write_model_bin
from xasr.transfer.finetune import (
    TransferOptions,
    initialise_from_source,
    parameter_shapes,
    target_vocab,
    transfer,
)
from xasr.transfer.plan import plan_transfer
from xasr.transfer.surgery import frozen_parameter_names

HF_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "S", "'"]


def tiny_wav2vec2_config(**changes):
    base = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "conv_dim": (16, 16),
        "conv_stride": (5, 4),
        "conv_kernel": (10, 8),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "vocab_size": len(HF_TOKENS),
        "pad_token_id": 0,
    }
    return transformers.Wav2Vec2Config(**{**base, **changes})


def tiny_whisper_config():
    return transformers.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=48,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=48,
        num_mel_bins=80,
        max_source_positions=1500,
        vocab_size=51865,
    )


@pytest.fixture(scope="module")
def wav2vec2_ctc_dir(tmp_path_factory):
    """A tiny random Wav2Vec2ForCTC with an upper-case English vocabulary, as HF saves it."""
    path = tmp_path_factory.mktemp("w2v2-ctc")
    torch.manual_seed(0)
    transformers.Wav2Vec2ForCTC(tiny_wav2vec2_config()).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(HF_TOKENS)}))
    (path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    return path


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    transformers.WhisperModel(tiny_whisper_config()).save_pretrained(path)
    return path


def audio_batch(seconds=(1.3, 0.7), seed=0):
    rng = np.random.default_rng(seed)
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in seconds]
    lengths = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = torch.from_numpy(w)
    return waves, audio, lengths


def test_whisper_features_match_transformers_extractor():
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    waves, audio, lengths = audio_batch((2.3, 1.1))
    ours, frames = WhisperLogMel(80)(audio, lengths)
    assert frames.tolist() == [len(w) // 160 for w in waves]
    for i, wave in enumerate(waves):
        theirs = extractor(wave, sampling_rate=16000, return_tensors="pt").input_features[0]
        n = int(frames[i])
        torch.testing.assert_close(ours[i, :n], theirs[:, :n].T, atol=2e-4, rtol=1e-4)


def test_wav2vec2_ctc_directory_imports_with_its_vocabulary(wav2vec2_ctc_dir):
    model, cfg, vocab = load_model_dir(wav2vec2_ctc_dir)
    assert cfg.architecture == "pretrained-ctc" and cfg.family == "wav2vec2"
    assert vocab.tokens[:2] == [BLANK, UNK] and "e" in vocab.tokens and "E" not in vocab.tokens
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(wav2vec2_ctc_dir).eval()
    _, audio, lengths = audio_batch((1.0,))
    with torch.no_grad():
        theirs = hf(audio).logits
        ours, frames = model(audio, lengths)
    assert frames.tolist() == [theirs.shape[1]]
    # the same scores, rows reordered: blank from <pad>, unk from <unk>, e from E
    for token, hf_index in (("e", 5), ("|", 4), (BLANK, 0), (UNK, 3)):
        row = vocab.index[token]
        expected = theirs.log_softmax(-1)[..., hf_index]
        got = ours[..., row]
        shift = (got - expected).mean()  # the same up to the softmax's normaliser per frame
        torch.testing.assert_close(got - shift, expected, atol=2e-2, rtol=0)
    torch.testing.assert_close(
        model.head.weight[vocab.index["e"]], hf.lm_head.weight[5], atol=0, rtol=0
    )


def test_encoders_match_transformers(wav2vec2_ctc_dir, whisper_dir):
    model, _, _ = load_model_dir(wav2vec2_ctc_dir)
    hf = transformers.Wav2Vec2Model.from_pretrained(wav2vec2_ctc_dir).eval()
    _, audio, lengths = audio_batch((1.0,))
    normalised = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        ours, _ = model.encode(audio, lengths)
        torch.testing.assert_close(ours, hf(normalised).last_hidden_state, atol=1e-4, rtol=1e-4)
    whisper, cfg, vocab = load_model_dir(whisper_dir, need_head=False)
    assert vocab is None and cfg.family == "whisper"
    encoder = transformers.WhisperModel.from_pretrained(whisper_dir).encoder.eval()
    feats = torch.randn(1, 80, 3000)  # Whisper's own encoder takes exactly 30 s
    with torch.no_grad():
        x, n = whisper.frontend(feats.transpose(1, 2), torch.tensor([3000]))
        mask = torch.ones(1, x.shape[1], dtype=torch.bool)
        ours = whisper.encoder(hidden_states=x, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours, encoder(feats).last_hidden_state, atol=1e-4, rtol=1e-4)
    assert n.tolist() == [1500]


def test_a_headless_encoder_is_no_recognizer_yet(whisper_dir):
    with pytest.raises(CheckpointError, match="without a CTC head"):
        load_model_dir(whisper_dir)


def transferred(source_dir, vocab, **plan_options):
    source, cfg, source_vocab = load_model_dir(source_dir, need_head=False)
    torch.manual_seed(1)
    model = build_model(cfg, len(vocab))
    options = {"scratch": False, "reinit_head": False, "drop_layers": 0, "freeze_layers": 0}
    plan = plan_transfer(
        model,
        vocab,
        source_vocab,
        **{**options, **plan_options},
        source_shapes=parameter_shapes(source),
    )
    report = initialise_from_source(model, source, plan, (source_vocab, vocab), cfg, 0)
    return source, source_vocab, model, plan, report


def test_wav2vec2_transfer_with_a_vocabulary_change_copies_the_shared_rows(
    wav2vec2_ctc_dir, corpus, make_cfg
):
    vocab = target_vocab(corpus.de_train, make_cfg(), None)  # German: ä, ö, ü, ß are new
    source, source_vocab, model, plan, report = transferred(wav2vec2_ctc_dir, vocab)
    assert report["init_modules"]["copied"] == ["frontend", "encoder"]
    for token in ("e", "t", "a", "|", BLANK):
        t, s = vocab.index[token], source_vocab.index[token]
        assert torch.equal(model.head.weight[t], source.head.weight[s]), token
    assert "ä" in report["tokens"]["mapped"]  # from a
    # the convolutional feature encoder never trains; --freeze-layers K adds layers
    assert all(n in plan.frozen for n, _ in model.named_parameters() if "feature_extractor" in n)
    assert "encoder.layers.0.attention.k_proj.weight" in frozen_parameter_names(model, 1)


def test_whisper_transfer_starts_a_fresh_head(whisper_dir, corpus, make_cfg):
    vocab = target_vocab(corpus.de_train, make_cfg(), None)
    source, _, model, plan, report = transferred(whisper_dir, vocab, drop_layers=1)
    assert report["init_modules"] == {"copied": ["frontend", "encoder"], "fresh": ["head"]}
    assert "tokens" not in report and report["dropped_layers"] == [1]
    assert torch.equal(model.encoder.layers[0].fc1.weight, source.encoder.layers[0].fc1.weight)
    assert not torch.equal(model.encoder.layers[1].fc1.weight, source.encoder.layers[1].fc1.weight)
    assert "frontend.embed_positions.weight" in plan.frozen  # fixed, as in Whisper


def test_transfer_end_to_end_gives_an_ordinary_model_directory(
    wav2vec2_ctc_dir, corpus, make_cfg, tmp_path
):
    from xasr.decode.evaluate import evaluate

    run = tmp_path / "de"
    result = transfer(
        run,
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(source=str(wav2vec2_ctc_dir)),
        make_cfg(max_steps=2, val_every=2),
        progress=False,
    )
    model, cfg, vocab = load_model_dir(result.model_dir)
    assert cfg.family == "wav2vec2" and "ß" in vocab.tokens
    source, _, _ = load_model_dir(wav2vec2_ctc_dir)
    conv = "frontend.feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(model.get_parameter(conv), source.get_parameter(conv))  # fixed
    assert "cer" in evaluate(result.model_dir, corpus.de_dev, progress=False)


def whisper_ct2_variables(encoder, dtype=np.float16) -> dict[str, np.ndarray]:
    """A CTranslate2 WhisperSpec's encoder variables, as its converter lays them out."""
    sd = {k: v.detach().numpy() for k, v in encoder.state_dict().items()}
    out = {
        "encoder/conv1/weight": sd["conv1.weight"],
        "encoder/conv1/bias": sd["conv1.bias"],
        "encoder/conv2/weight": sd["conv2.weight"],
        "encoder/conv2/bias": sd["conv2.bias"],
        "encoder/position_encodings/encodings": sd["embed_positions.weight"],
        "encoder/layer_norm/gamma": sd["layer_norm.weight"],
        "encoder/layer_norm/beta": sd["layer_norm.bias"],
    }
    for i in range(len(encoder.layers)):
        p, q = f"layers.{i}.", f"encoder/layer_{i}/"
        a = p + "self_attn."
        zeros = np.zeros_like(sd[a + "q_proj.bias"])
        out[q + "self_attention/linear_0/weight"] = np.concatenate(
            [sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]]
        )
        out[q + "self_attention/linear_0/bias"] = np.concatenate(
            [sd[a + "q_proj.bias"], zeros, sd[a + "v_proj.bias"]]
        )
        for ours, theirs in (("linear_1", "out_proj"),):
            out[q + f"self_attention/{ours}/weight"] = sd[a + f"{theirs}.weight"]
            out[q + f"self_attention/{ours}/bias"] = sd[a + f"{theirs}.bias"]
        out[q + "self_attention/layer_norm/gamma"] = sd[p + "self_attn_layer_norm.weight"]
        out[q + "self_attention/layer_norm/beta"] = sd[p + "self_attn_layer_norm.bias"]
        for ours, theirs in (("linear_0", "fc1"), ("linear_1", "fc2")):
            out[q + f"ffn/{ours}/weight"] = sd[p + f"{theirs}.weight"]
            out[q + f"ffn/{ours}/bias"] = sd[p + f"{theirs}.bias"]
        out[q + "ffn/layer_norm/gamma"] = sd[p + "final_layer_norm.weight"]
        out[q + "ffn/layer_norm/beta"] = sd[p + "final_layer_norm.bias"]
    out = {k: v.astype(dtype) for k, v in out.items()}
    out["encoder/num_heads"] = np.array(encoder.config.encoder_attention_heads, dtype=np.int16)
    out["decoder/num_heads"] = np.array(2, dtype=np.int16)
    return out


def test_ctranslate2_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "a/weight": rng.standard_normal((3, 4)).astype(np.float16),
        "a/bias": rng.standard_normal(3).astype(np.float32),
        "flag": np.array(1, dtype=np.int8),
        "q/weight": np.array([[127, -64], [10, 20]], dtype=np.int8),
        "q/weight_scale": np.array([127.0, 10.0], dtype=np.float32),
    }
    write_model_bin(tmp_path / "model.bin", "TestSpec", 3, variables)
    spec, revision, read = read_model_bin(tmp_path / "model.bin")
    assert (spec, revision) == ("TestSpec", 3)
    assert set(read) == {"a/weight", "a/bias", "flag", "q/weight"}  # scales applied
    assert read["a/weight"].dtype == np.float16 and np.array_equal(
        read["a/weight"], variables["a/weight"]
    )
    assert read["flag"].shape == () and int(read["flag"]) == 1
    np.testing.assert_allclose(read["q/weight"], [[1.0, -64 / 127], [1.0, 2.0]], rtol=1e-6)
    (tmp_path / "cut.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        read_model_bin(tmp_path / "cut.bin")


def test_ctranslate2_whisper_directory_gives_whispers_encoder(tmp_path):
    torch.manual_seed(2)
    encoder = transformers.WhisperModel(tiny_whisper_config()).encoder.eval()
    directory = tmp_path / "faster-whisper-tiny"
    directory.mkdir()
    write_model_bin(directory / "model.bin", "WhisperSpec", 3, whisper_ct2_variables(encoder))
    (directory / "config.json").write_text(json.dumps({"suppress_ids": [1, 2]}))
    (directory / "vocabulary.txt").write_text("a\nb\n")
    model, cfg, vocab = load_model_dir(directory, need_head=False)
    assert vocab is None and cfg.family == "whisper"
    feats = torch.randn(1, 80, 3000)
    with torch.no_grad():
        x, _ = model.frontend(feats.transpose(1, 2), torch.tensor([3000]))
        mask = torch.ones(1, x.shape[1], dtype=torch.bool)
        ours = model.encoder(hidden_states=x, attention_mask=mask).last_hidden_state
        theirs = encoder(feats).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=5e-2, rtol=1e-2)  # float16 weights


def test_a_frozen_feature_encoder_keeps_no_graph_and_a_scratch_one_trains(wav2vec2_ctc_dir):
    model, cfg, vocab = load_model_dir(wav2vec2_ctc_dir)
    assert cfg.hf_config["layerdrop"] == 0.0  # DDP would refuse layers skipped at random
    for p in model.frontend.feature_extractor.parameters():
        p.requires_grad_(False)
    model.train()
    _, audio, lengths = audio_batch((0.5,))
    with torch.enable_grad():
        x, _ = model.frontend(audio, lengths)
    assert x.grad_fn is not None  # the projection trains ...
    x.sum().backward()
    conv = model.frontend.feature_extractor.conv_layers[-1].conv.weight
    assert conv.grad is None  # ... and nothing reached the frozen convolutions
    target = build_model(cfg, len(vocab))
    plan = plan_transfer(target, vocab, None, True, False, 0, 0, source_shapes=None)
    assert not plan.frozen  # a scratch baseline trains its random feature encoder


def whisper_ctc_dir(whisper_dir, path):
    """An xasr model directory of the tiny Whisper encoder with a fresh CTC head."""
    from xasr.data.vocab import CharVocab
    from xasr.models.build import save_model_dir

    _, cfg, _ = load_model_dir(whisper_dir, need_head=False)
    vocab = CharVocab.from_texts(["hallo welt"])
    torch.manual_seed(2)
    return save_model_dir(path, build_model(cfg, len(vocab)), cfg, vocab)


def conformer_ctc_dir(path, positions: str):
    """A tiny random Wav2Vec2ConformerForCTC with ``positions`` position embeddings."""
    config = transformers.Wav2Vec2ConformerConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=len(HF_TOKENS),
        pad_token_id=0,
        position_embeddings_type=positions,
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2ConformerForCTC(config).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(HF_TOKENS)}))
    return path


@pytest.mark.parametrize(
    ("family", "frame_seconds"),
    [("wav2vec2", 20 / 16000), ("wav2vec2-conformer", 20 / 16000), ("whisper", 0.02)],
)
def test_pretrained_models_export_to_onnx(
    family, frame_seconds, wav2vec2_ctc_dir, whisper_dir, corpus, tmp_path
):
    """The whole wrapped encoder as one graph: its check against torch passed, its frame rate
    (and Whisper's 30 s) in the metadata, and onnxruntime gives torch's log-probabilities on a
    padded batch of speech."""
    pytest.importorskip("onnxruntime")
    from xasr.data.audio import load_audio
    from xasr.export.onnx import export_onnx
    from xasr.export.onnx_runtime import OnnxRecognizer

    model_dir = {
        "wav2vec2": lambda: wav2vec2_ctc_dir,
        "wav2vec2-conformer": lambda: conformer_ctc_dir(tmp_path / "c", "rotary"),
        "whisper": lambda: whisper_ctc_dir(whisper_dir, tmp_path / "w"),
    }[family]()
    report = export_onnx(model_dir, tmp_path / "model.onnx")
    assert report["max_abs_diff"] < 1e-4
    recognizer = OnnxRecognizer(tmp_path / "model.onnx")
    meta = recognizer.session.get_modelmeta().custom_metadata_map
    assert float(meta["frame_seconds"]) == pytest.approx(frame_seconds)
    assert recognizer.max_seconds == (30.0 if family == "whisper" else float("inf"))
    audios = [load_audio(corpus.root / row["audio_filepath"]) for row in corpus.de_rows[:2]]
    got = recognizer.log_probs(audios)
    lengths = torch.tensor([len(a) for a in audios])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(a) for a in audios], True)
    model, _, _ = load_model_dir(model_dir)
    with torch.no_grad():
        expected, frames = model(batch, lengths)
    for i, n in enumerate(frames.tolist()):
        np.testing.assert_allclose(got[i], expected[i, :n].numpy(), atol=1e-4, rtol=0)
    if family == "whisper":  # longer than its position table: one line, before onnxruntime
        import soundfile

        from xasr.errors import DataError

        soundfile.write(tmp_path / "long.wav", np.zeros(31 * 16000, dtype=np.float32), 16000)
        with pytest.raises(DataError, match=r"long.wav: 31.0 s; this model takes at most 30 s"):
            recognizer.transcribe([tmp_path / "long.wav"])


def test_a_relative_position_conformer_is_refused_by_the_export_in_one_line(tmp_path):
    from xasr.errors import XasrError
    from xasr.export.onnx import export_onnx

    model_dir = conformer_ctc_dir(tmp_path / "c", "relative")
    with pytest.raises(XasrError, match="relative position embeddings is not exportable"):
        export_onnx(model_dir, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
