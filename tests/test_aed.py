"""The attention encoder-decoder and the model protocol both families share: shapes, loss,
decoding (greedy, beam, joint CTC/attention), vocabulary-row transfer, and the commands."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from xasr.config import AED_SIZES, MODEL_SIZES, replace
from xasr.data.vocab import CharVocab
from xasr.decode.attention import AttentionSearch, BeamSearch, CtcPrefixScorer
from xasr.decode.options import default_strategy
from xasr.decode.strategy import decode
from xasr.errors import CheckpointError, XasrError
from xasr.models.aed import IGNORE, DecoderCache, VggFrontend, decoder_layer
from xasr.models.build import build_model, load_model_dir, save_model_dir
from xasr.transfer.finetune import initialise_from_source, parameter_shapes, target_vocab
from xasr.transfer.plan import plan_transfer
from xasr.transfer.vocab_rows import MAPPED_BIAS_OFFSET

VOCAB = CharVocab.from_texts(["hello world", "abc"])
CONFIGS = {
    "ctc": MODEL_SIZES["tiny"],
    "aed": AED_SIZES["tiny"],
    "aed-transformer": replace(AED_SIZES["tiny"], encoder="transformer"),
    "aed-conv2d-no-ctc": replace(AED_SIZES["tiny"], frontend="conv2d", ctc_weight=0.0),
}


def batch_of(lengths=(16000, 12000, 8000), seed=0):
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(lengths), max(lengths), generator=generator) * 0.1
    lengths = torch.tensor(lengths)
    audio *= torch.arange(audio.shape[1])[None, :] < lengths[:, None]
    targets = torch.tensor([[3, 4, 5, 6], [3, 4, 0, 0], [5, 0, 0, 0]])
    return {
        "audio": audio,
        "audio_lengths": lengths,
        "targets": targets,
        "target_lengths": torch.tensor([4, 2, 1]),
        "texts": ["hell", "he", "l"],
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_every_family_follows_the_protocol(name, tmp_path):
    torch.manual_seed(0)
    cfg = CONFIGS[name]
    model = build_model(cfg, len(VOCAB))
    batch = batch_of()
    states, frames = model.encode(batch["audio"], batch["audio_lengths"])
    assert states.shape[:2] == (3, int(frames.max())) and states.shape[2] == cfg.d_model
    assert frames.tolist() == [26, 19, 13]  # 101, 76, 51 feature frames, 4x fewer
    loss, parts = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and parts
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "decoder" not in n)
    params = dict(model.named_parameters())
    for param_name, axis in model.vocab_params().items():
        rows = params[param_name].shape[axis]
        assert rows in (len(VOCAB), len(VOCAB) + 1), param_name  # + 1: the start/end token
    assert all(any(n.startswith(p) for n in params) for p in model.transferable_prefixes())
    model.eval()
    hyps = decode(default_strategy(model, VOCAB), model, batch["audio"], batch["audio_lengths"])
    assert len(hyps) == 3 and all(isinstance(h, str) for h in hyps)
    save_model_dir(tmp_path, model, cfg, VOCAB)
    loaded, loaded_cfg, _ = load_model_dir(tmp_path)
    assert loaded_cfg == cfg
    again = decode(default_strategy(loaded, VOCAB), loaded, batch["audio"], batch["audio_lengths"])
    assert again == hyps


def test_ctc_branch_is_optional():
    model = build_model(CONFIGS["aed-conv2d-no-ctc"], len(VOCAB))
    _, parts = model.loss(batch_of())
    assert set(parts) == {"attention"}
    assert "head.weight" not in model.vocab_params()
    with pytest.raises(XasrError, match="no CTC branch"):
        model.ctc_log_probs(torch.zeros(1, 2, 64))


def test_vgg_front_end_quarters_frames_and_ignores_batch_padding():
    torch.manual_seed(0)
    front = VggFrontend(n_mels=20, d_model=16, channels=4)
    x = torch.randn(2, 23, 20)
    lengths = torch.tensor([23, 14])
    x[1, 14:] = 0
    y, out_lengths = front(x, lengths)
    assert y.shape == (2, 6, 16) and out_lengths.tolist() == [6, 4]
    assert VggFrontend.output_lengths(23) == 6
    alone, _ = front(x[1:, :14], lengths[1:])
    assert torch.allclose(alone[0], y[1, :4], atol=1e-6)


def test_teacher_forcing_shifts_targets_and_ends_them():
    model = build_model(AED_SIZES["tiny"], 10)  # start/end token: 10
    targets = torch.tensor([[3, 4, 5], [6, 0, 0]])
    inputs, outputs = model.teacher_forcing(targets, torch.tensor([3, 1]))
    assert inputs.tolist() == [[10, 3, 4, 5], [10, 6, 10, 10]]
    assert outputs.tolist() == [[3, 4, 5, 10], [6, 10, IGNORE, IGNORE]]


def brute_force_prefix(log_probs, prefix, whole=False):
    """log p_ctc of all alignments whose collapse starts with (or, ``whole``, is) ``prefix``."""
    frames, vocab = log_probs.shape
    total = []
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = tuple(k for i, k in enumerate(path) if k and (i == 0 or path[i - 1] != k))
        if collapsed == prefix if whole else collapsed[: len(prefix)] == prefix:
            total.append(sum(log_probs[t, k] for t, k in enumerate(path)))
    return torch.logsumexp(torch.stack(total), 0).item() if total else -math.inf


def test_ctc_prefix_scores_equal_brute_force():
    torch.manual_seed(1)
    log_probs = torch.randn(1, 4, 3).log_softmax(-1)
    scorer = CtcPrefixScorer(log_probs, torch.tensor([4]), blank=0)
    for prefix in ((), (1,), (1, 1)):
        scores, r_n, r_b = scorer.extensions()
        for token in (1, 2):
            expected = brute_force_prefix(log_probs[0], (*prefix, token))
            assert scores[0, token].item() == pytest.approx(expected, abs=1e-4)
        end = brute_force_prefix(log_probs[0], prefix, whole=True)
        assert scores[0, -1].item() == pytest.approx(end, abs=1e-4)  # the end token
        scorer.select(torch.tensor([0]), torch.tensor([1]), scores, r_n, r_b)


def test_beam_of_one_is_greedy_and_batching_changes_nothing():
    torch.manual_seed(0)
    model = build_model(AED_SIZES["tiny"], len(VOCAB)).eval()
    batch = batch_of()
    audio, lengths = batch["audio"], batch["audio_lengths"]
    states, frames, _ = AttentionSearch(VOCAB).encode(model, audio, lengths)
    greedy = AttentionSearch(VOCAB).search_ids(model, states, frames, None)
    assert BeamSearch(AttentionSearch(VOCAB), model, states, frames, None).run() == greedy
    for strategy in (AttentionSearch(VOCAB, beam_width=3), AttentionSearch(VOCAB, 3, 1.0, 0.5)):
        together = decode(strategy, model, audio, lengths)
        alone = [
            decode(strategy, model, audio[i : i + 1, :n], lengths[i : i + 1])[0]
            for i, n in enumerate(lengths.tolist())
        ]
        assert together == alone


def test_joint_scoring_follows_a_certain_ctc_branch(corpus, monkeypatch):
    """On a synthesized utterance, an untrained decoder and a CTC branch certain of "hello":
    attention alone writes noise, joint scoring writes what the CTC branch is sure of."""
    from xasr.data.batching import load_batch_audio

    torch.manual_seed(0)
    model = build_model(AED_SIZES["tiny"], len(VOCAB)).eval()
    audio, lengths = load_batch_audio([corpus.root / corpus.en_rows[0]["audio_filepath"]])
    frames = int(model.encode(audio, lengths)[1][0])
    path = [VOCAB.index[c] for c in "hel"] + [0, VOCAB.index["l"], VOCAB.index["o"]]
    path += [0] * (frames - len(path))
    peaked = torch.full((1, frames, len(VOCAB)), -30.0)
    peaked[0, torch.arange(frames), torch.tensor(path)] = 0.0
    monkeypatch.setattr(model, "ctc_log_probs", lambda states: peaked.log_softmax(-1))
    attention = decode(AttentionSearch(VOCAB, beam_width=4), model, audio, lengths)[0]
    assert attention != "hello"
    for weight in (0.5, 1.0):
        joint = AttentionSearch(VOCAB, beam_width=4, ctc_weight=weight)
        assert decode(joint, model, audio, lengths) == ["hello"], weight


def test_decoding_options_are_checked():
    with pytest.raises(XasrError, match="--beam-width"):
        AttentionSearch(VOCAB, beam_width=0)
    with pytest.raises(XasrError, match="--ctc-weight"):
        AttentionSearch(VOCAB, ctc_weight=1.5)


# --- vocabulary rows across a transfer ------------------------------------------------------


def transferred(source_model, source_cfg, source_vocab, target_cfg, vocab, seed=0):
    torch.manual_seed(seed)
    model = build_model(target_cfg, len(vocab))
    plan = plan_transfer(
        model,
        vocab,
        source_vocab,
        False,
        False,
        0,
        0,
        source_shapes=parameter_shapes(source_model),
        same_family=source_cfg.architecture == target_cfg.architecture,
    )
    report = initialise_from_source(
        model, source_model, plan, (source_vocab, vocab), target_cfg, seed
    )
    return model, report


@pytest.fixture(scope="module")
def en_aed(corpus):
    lines = corpus.en_train.read_text(encoding="utf-8").splitlines()
    vocab = CharVocab.from_texts(json.loads(line)["text"] for line in lines)
    torch.manual_seed(3)
    return build_model(AED_SIZES["tiny"], len(vocab)), AED_SIZES["tiny"], vocab


def test_aed_to_aed_remaps_decoder_rows(en_aed, corpus, make_cfg):
    source, cfg, source_vocab = en_aed
    vocab = target_vocab(corpus.de_train, make_cfg(), source_vocab)
    model, report = transferred(source, cfg, source_vocab, cfg, vocab)
    assert set(report["vocab_params"]) == set(model.vocab_params())
    assert report["init_modules"]["copied"] == ["frontend", "encoder", "decoder"]
    s_index, t_index = source_vocab.index, vocab.index
    for name in ("decoder.embed.weight", "decoder.out.weight", "head.weight"):
        tgt, src = model.get_parameter(name), source.get_parameter(name)
        for token in ("e", "s", "|"):
            assert torch.equal(tgt[t_index[token]], src[s_index[token]]), (name, token)
        assert torch.equal(tgt[t_index["ä"]], src[s_index["a"]]), name  # mapped from a
    out_bias, src_bias = model.decoder.out.bias, source.decoder.out.bias
    assert out_bias[t_index["ä"]].item() == pytest.approx(
        src_bias[s_index["a"]].item() + MAPPED_BIAS_OFFSET, abs=1e-5
    )
    # the start/end token's rows, past both vocabularies, copy from the source's
    assert torch.equal(model.decoder.embed.weight[len(vocab)], source.decoder.embed.weight[-1])
    assert torch.equal(out_bias[model.eos_id], src_bias[source.eos_id])
    assert torch.equal(
        model.encoder.layers[0].ff1.net[1].weight, source.encoder.layers[0].ff1.net[1].weight
    )


def test_ctc_to_aed_copies_encoder_and_ctc_rows(en_model, corpus, make_cfg):
    source, source_cfg, source_vocab = load_model_dir(en_model)
    vocab = target_vocab(corpus.de_train, make_cfg(), source_vocab)
    target_cfg = replace(AED_SIZES["tiny"], frontend="conv2d")
    model, report = transferred(source, source_cfg, source_vocab, target_cfg, vocab)
    assert report["init_modules"] == {
        "copied": ["frontend", "encoder"],
        "fresh": ["decoder"],
        "vocab_rows": ["head"],
    }
    assert report["vocab_params"] == ["head.weight", "head.bias"]
    e_t, e_s = vocab.index["e"], source_vocab.index["e"]
    assert torch.equal(model.head.weight[e_t], source.head.weight[e_s])
    for name, param in source.named_parameters():
        if name.startswith(("frontend.", "encoder.")):
            assert torch.equal(model.get_parameter(name), param), name
    torch.manual_seed(0)
    fresh = build_model(target_cfg, len(vocab))
    assert torch.equal(model.decoder.embed.weight, fresh.decoder.embed.weight)  # fresh


def test_ctc_to_vgg_aed_copies_no_half_layer(en_model, corpus, make_cfg):
    """The VGG projection's bias has the shape of the CTC front end's, its weight not: neither
    copies (a layer copies whole or not at all)."""
    source, source_cfg, source_vocab = load_model_dir(en_model)
    vocab = target_vocab(corpus.de_train, make_cfg(), source_vocab)
    _, report = transferred(source, source_cfg, source_vocab, AED_SIZES["tiny"], vocab)
    assert report["init_modules"]["fresh"] == ["frontend", "decoder"]
    assert report["init_modules"]["copied"] == ["encoder"]


# --- the commands, end to end ---------------------------------------------------------------


def run_cli(xasr, *args, cwd=None):
    import subprocess

    done = subprocess.run([xasr, *args], capture_output=True, text=True, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


TRAIN = [
    "--max-steps",
    "6",
    "--val-every",
    "3",
    "--workers",
    "0",
    "--accelerator",
    "cpu",
    "--no-progress",
    "--batch-seconds",
    "30",
]


def test_train_transfer_evaluate_aed_end_to_end(xasr, corpus, en_model, tmp_path):
    aed = tmp_path / "aed"
    run_cli(
        xasr,
        "train",
        "--arch",
        "aed",
        "--size",
        "tiny",
        "--train",
        str(corpus.en_train),
        "--valid",
        str(corpus.en_dev),
        "--out",
        str(aed),
        *TRAIN,
    )
    assert json.loads((aed / "model" / "config.json").read_text())["model"]["architecture"] == "aed"
    into = tmp_path / "ctc-to-aed"  # a CTC model into an AED, German
    run_cli(
        xasr,
        "transfer",
        "--from",
        str(en_model),
        "--arch",
        "aed",
        "--size",
        "tiny",
        "--train",
        str(corpus.de_train),
        "--valid",
        str(corpus.de_dev),
        "--out",
        str(into),
        *TRAIN,
    )
    report = json.loads((into / "transfer.json").read_text())
    assert report["init_modules"]["copied"] == ["encoder"]
    onward = tmp_path / "aed-to-aed"  # and on, AED to AED, with the mixed dev set
    run_cli(
        xasr,
        "transfer",
        "--from",
        str(aed),
        "--train",
        str(corpus.de_train),
        "--valid",
        str(corpus.mixed),
        "--out",
        str(onward),
        *TRAIN,
    )
    for decoder in ("default", "ctc", "attention", "joint"):
        result = json.loads(
            run_cli(
                xasr,
                "evaluate",
                "--model",
                str(onward),
                "--manifest",
                str(corpus.mixed),
                "--decoder",
                decoder,
                "--no-progress",
            )
        )
        assert set(result["by_language"]) == {"en", "de"}, decoder
        assert 0 <= result["cer"] and result["decoder"]["name"]
    out = run_cli(
        xasr,
        "transcribe",
        "--model",
        str(onward),
        "--decoder",
        "joint",
        str(corpus.root / corpus.de_rows[0]["audio_filepath"]),
    )
    assert out.count("\t") == 1


TABLE = {(): {1: -0.6, 3: -0.5}, (1,): {1: -0.05, 3: -0.7}, (1, 1): {3: -0.01, 1: -5.0}}


class TableDecoder:
    """A decoder whose next-token log-probabilities are a table keyed by the prefix: 0 blank,
    1 "a", 2 "b", 3 the start/end token."""

    sos_id = eos_id = 3
    blank_id = 0

    def next_token_log_probs(self, tokens, states, lengths, cache=None):  # stateless
        rows = []
        for row in tokens.tolist():
            probs = torch.full((4,), -50.0)
            for token, value in TABLE.get(tuple(row[1:]), {3: -0.01}).items():
                probs[token] = value
            rows.append(probs)
        return torch.stack(rows)


def test_beam_search_keeps_a_live_hypothesis_that_ends_better():
    """ "" (-0.5) and "a" (-0.65 / 2) end first, but "aa" + end scores -0.66 / 3 = -0.22:
    the search must not stop at two finished hypotheses while "aa" is still ahead."""
    opts = AttentionSearch(vocab=None, beam_width=2, length_penalty=1.0)
    search = BeamSearch(opts, TableDecoder(), torch.zeros(1, 10, 4), torch.tensor([10]), None)
    assert search.run() == [[1, 1]]


def test_transformer_encoder_takes_no_conformer_layer(en_model, corpus, make_cfg):
    source, source_cfg, source_vocab = load_model_dir(en_model)
    vocab = target_vocab(corpus.de_train, make_cfg(), source_vocab)
    target_cfg = replace(AED_SIZES["tiny"], frontend="conv2d", encoder="transformer")
    _, report = transferred(source, source_cfg, source_vocab, target_cfg, vocab)
    assert "encoder" in report["init_modules"]["fresh"]
    with pytest.raises(CheckpointError, match="no parameter of the source matches"):
        transferred(source, source_cfg, source_vocab, AED_SIZES["xsmall"], vocab)


def test_arch_alone_keeps_the_source_size(en_model):
    from xasr.transfer.architecture import requested_architecture

    def asked(arch, size):
        return requested_architecture(str(en_model), arch, size)

    assert asked("ctc", None) is None and asked(None, None) is None  # the source's own
    assert asked("aed", None) == AED_SIZES["tiny"]  # en_model is the tiny CTC size
    assert asked(None, "xsmall") == MODEL_SIZES["xsmall"]


def test_cached_decoding_steps_equal_the_whole_prefix_at_once():
    """Each step through a ``DecoderCache`` (one new position, and after a beam search's row
    choice) gives the logits the uncached decoder gives for the whole prefix."""
    torch.manual_seed(0)
    model = build_model(AED_SIZES["tiny"], len(VOCAB)).eval()
    batch = batch_of()
    with torch.no_grad():
        states, frames = model.encode(batch["audio"], batch["audio_lengths"])
        tokens = torch.randint(0, len(VOCAB), (3, 7))
        tokens[:, 0] = model.sos_id
        cache = DecoderCache()
        for length in range(1, 8):
            if length == 5:  # hypotheses reordered, as a beam search does
                rows = torch.tensor([2, 0, 0])
                cache.select(rows)
                tokens, states, frames = tokens[rows], states[rows], frames[rows]
            stepped = model.next_token_log_probs(tokens[:, :length], states, frames, cache)
            whole = model.next_token_log_probs(tokens[:, :length], states, frames)
            assert cache.length == length
            torch.testing.assert_close(stepped, whole, atol=1e-5, rtol=1e-5)


def test_decoder_layer_computes_what_torch_layer_does():
    """``decoder_layer`` is ``nn.TransformerDecoderLayer.forward`` written out (pre-norm)."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerDecoderLayer(16, 4, 32, 0.1, batch_first=True, norm_first=True)
    layer.eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    frames = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        expected = layer(x, memory, tgt_mask=~causal, memory_key_padding_mask=~frames)
        got, _ = decoder_layer(layer, x, None, causal, memory, frames[:, None, None, :])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_requested_architecture_without_a_source_is_the_named_size():
    from xasr.transfer.architecture import requested_architecture

    assert requested_architecture(None) is None
    assert requested_architecture(None, size="tiny") == MODEL_SIZES["tiny"]
    assert requested_architecture(None, arch="aed") == AED_SIZES["small"]
    with pytest.raises(XasrError, match="unknown model size 'huge'"):
        requested_architecture(None, size="huge")
