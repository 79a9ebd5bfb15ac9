"""Continued self-supervised pre-training (xasr.models.ssl, xasr.train.pretrain): a tiny random
Wav2Vec2ForPreTraining saved by the test, trained further on the corpus's speech, through
language masks too, and transferred from afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from test_pretrained import audio_batch, tiny_wav2vec2_config

from xasr.data.vocab import CharVocab
from xasr.errors import CheckpointError, DataError, XasrError
from xasr.models.masks import LanguageMasks, magnitude_mask, prunable_names
from xasr.models.pretrained import import_pretrained
from xasr.models.ssl import SslOptions, load_for_pretraining
from xasr.train.pretrain import continue_pretraining
from xasr.transfer.finetune import TransferOptions, transfer

QUANTIZER = {
    "num_codevectors_per_group": 8,
    "num_codevector_groups": 2,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
    "num_negatives": 5,
}


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("w2v2-pretraining")
    torch.manual_seed(0)
    config = tiny_wav2vec2_config(
        **QUANTIZER, feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0
    )  # mask_time_prob 0: no masked_spec_embed saved; loading for pre-training builds one
    transformers.Wav2Vec2ForPreTraining(config).save_pretrained(path)
    return path


def batch_of(seconds=(1.3, 0.7)):
    _, audio, lengths = audio_batch(seconds)
    return {"audio": audio, "audio_lengths": lengths, "texts": ["", ""], "langs": ["en", "en"]}


def test_shared_weights_are_named_as_in_the_ctc_model(pretraining_dir):
    model = load_for_pretraining(pretraining_dir)
    names = {n for n, _ in model.named_parameters()}
    ctc, _, _ = import_pretrained(pretraining_dir)  # the same directory as a transfer source
    shared = {n for n, _ in ctc.named_parameters() if not n.startswith("head.")}
    assert shared <= names  # masks found on the CTC model fit, and its weights are these
    assert any(n.startswith("quantizer.") for n in names)
    # every weight of the Hugging Face model is one of these, registered once
    ours = {p.data_ptr() for p in model.parameters()}
    assert {p.data_ptr() for p in model.pretraining.parameters()} == ours
    assert len(ours) == len(names)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "feature_extractor" in n)


def test_the_loss_is_hugging_faces_per_masked_frame_within_each_utterance(pretraining_dir):
    model = load_for_pretraining(pretraining_dir).eval()  # no dropout: two calls compare
    batch = batch_of()
    np.random.seed(3)
    loss, parts = model.loss(batch)
    np.random.seed(3)
    masked, negatives = model.sample_targets(batch["audio_lengths"], batch["audio"].shape[1])
    audio, _ = model.features(batch["audio"], batch["audio_lengths"])
    samples = torch.arange(audio.shape[1]) < batch["audio_lengths"][:, None]
    out = model.pretraining(
        audio,
        attention_mask=samples.long(),
        mask_time_indices=masked,
        sampled_negative_indices=negatives,
    )
    assert (
        torch.isfinite(loss) and loss > 0 and set(parts) == {"contrastive", "diversity", "frames"}
    )
    assert torch.allclose(loss, out.loss / masked.sum()) and parts["frames"] == masked.sum()
    # masked spans and their distractors stay inside each utterance's own frames
    frames = model.pretraining.wav2vec2._get_feat_extract_output_lengths(batch["audio_lengths"])
    total = masked.shape[1]
    assert masked[1].sum() >= 2 and not masked[1, int(frames[1]) :].any()
    short = negatives[1][masked[1]]  # flat indices into (batch x frames)
    assert ((short >= total) & (short < total + int(frames[1]))).all()


def test_a_ctc_directory_is_refused_by_name(tmp_path, capsys):
    from xasr.cli import main

    transformers.Wav2Vec2ForCTC(tiny_wav2vec2_config()).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no quantizer.*Wav2Vec2ForPreTraining"):
        load_for_pretraining(tmp_path)
    capsys.readouterr()  # save_pretrained's progress
    args = ["pretrain", "--from", str(tmp_path), "--train", "absent.jsonl"]
    assert main([*args, "--valid", "absent.jsonl", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(tmp_path) in error and "quantizer" in error
    assert not (tmp_path / "run").exists()  # refused before anything was written


def untranscribed(manifest, out):
    """``manifest`` with every transcript emptied: speech without text."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    root = manifest.parent
    for row in rows:
        row["text"] = ""
        row["audio_filepath"] = str((root / row["audio_filepath"]).resolve())
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def test_continued_pretraining_writes_a_directory_a_transfer_starts_from(
    pretraining_dir, corpus, make_cfg, tmp_path
):
    cfg = make_cfg(max_steps=4, val_every=2, lr=1e-3)
    train = untranscribed(corpus.en_train, tmp_path / "speech.jsonl")
    result = continue_pretraining(
        tmp_path / "ssl", train, corpus.en_dev, cfg, pretraining_dir, progress=False
    )
    assert result["steps"] == 4 and np.isfinite(result["best_dev_loss"])
    out = tmp_path / "ssl" / "model"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ForPreTraining"]
    assert config["mask_time_prob"] == 0.0  # the source's, not the task's 0.65
    assert json.loads((out / "training.json").read_text())["step"] == result["best_step"]
    curve = (tmp_path / "ssl" / "metrics.csv").read_text()
    assert "val_loss" in curve
    # the same command again resumes from the last checkpoint (here: already finished) ...
    again = continue_pretraining(
        tmp_path / "ssl", train, corpus.en_dev, cfg, pretraining_dir, progress=False
    )
    assert (again["steps"], again["best_step"]) == (4, result["best_step"])
    # ... and with another task, is refused by name
    with pytest.raises(XasrError, match="--mask-prob"):
        continue_pretraining(
            tmp_path / "ssl", train, corpus.en_dev, cfg, pretraining_dir, SslOptions(0.5),
            progress=False,
        )  # fmt: skip
    # trained further: the encoder moved, the frozen feature encoder did not
    before, after = load_for_pretraining(pretraining_dir), load_for_pretraining(out)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    q = "encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(a[q], b[q])
    conv = next(n for n in a if n.startswith("frontend.feature_extractor."))
    assert torch.equal(a[conv], b[conv])
    # ... and it is a source like any Hugging Face directory: its trained weights are read
    ctc, _, _ = import_pretrained(out)
    assert torch.equal(dict(ctc.named_parameters())[q], a[q])
    run = transfer(
        tmp_path / "ctc",
        corpus.en_train,
        corpus.en_dev,
        TransferOptions(source=str(out)),
        make_cfg(max_steps=2, val_every=2),
        progress=False,
    )
    assert q in load_file(str(run.model_dir / "model.safetensors"))


def test_an_utterance_too_short_for_a_masked_span_is_named(
    pretraining_dir, corpus, make_cfg, tmp_path
):
    with pytest.raises(DataError, match="too short for a masked span of 100000 frames"):
        continue_pretraining(
            tmp_path / "ssl", corpus.en_train, corpus.en_dev, make_cfg(), pretraining_dir,
            SslOptions(mask_length=100000), progress=False,
        )  # fmt: skip


def test_validation_scores_the_same_task_every_time(pretraining_dir, make_cfg):
    from xasr.train.module import SslTask

    model = load_for_pretraining(pretraining_dir).eval()
    task = SslTask(model, CharVocab.from_texts(["a"]), make_cfg())
    losses = []
    for _ in range(2):
        task.on_validation_epoch_start()
        np.random.seed(7)
        state = np.random.get_state()[1].copy()
        with torch.no_grad():
            task.validation_step(batch_of(), 0)
        assert np.array_equal(np.random.get_state()[1], state)  # training's generator kept
        losses.append(task._val_sums.clone())
    assert torch.equal(losses[0], losses[1])


def test_a_step_through_a_language_mask_leaves_every_weight_outside_it(
    pretraining_dir, corpus, make_cfg, tmp_path
):
    model = load_for_pretraining(pretraining_dir)
    g = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    names = [n for n in prunable_names(model) if n.startswith("encoder.")]
    masks = LanguageMasks(
        {"de": {n: magnitude_mask(torch.rand(params[n].shape, generator=g), 0.5) for n in names}},
        0.5,
    )
    cfg = make_cfg(max_steps=2, val_every=2, lr=1e-2, source_batches="language")
    continue_pretraining(
        tmp_path / "ssl",
        corpus.de_train,
        corpus.de_dev,
        cfg,
        pretraining_dir,
        masks=masks,
        progress=False,
    )
    after = dict(load_for_pretraining(tmp_path / "ssl" / "model").named_parameters())
    for name, mask in masks.of("de").items():
        assert torch.equal(after[name][~mask], params[name][~mask]), name
        assert not torch.equal(after[name][mask], params[name][mask]), name
    assert LanguageMasks.load(tmp_path / "ssl" / "model").langs == ["de"]


# continue_pretraining() in a fresh process; with KILL_AT it SIGKILLs itself after that step
PRETRAIN_SCRIPT = """
import json, os, signal, sys
import lightning as L
from xasr.config import TrainConfig
from xasr.train import pretrain

run, train, valid, source, cfg, kill_at = sys.argv[1:]

class Kill(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)

make_trainer = pretrain.make_trainer
pretrain.make_trainer = lambda *args, **kwargs: make_trainer(
    args[0], args[1], [*args[2], Kill()], *args[3:], **kwargs
)
pretrain.continue_pretraining(run, train, valid, TrainConfig(**json.loads(cfg)), source,
                              progress=False)
"""


def test_a_killed_pretraining_resumes_to_identical_weights(
    pretraining_dir, corpus, make_cfg, tmp_path
):
    import subprocess
    import sys
    from dataclasses import asdict

    script = tmp_path / "pretrain_script.py"
    script.write_text(PRETRAIN_SCRIPT)
    cfg = json.dumps(asdict(make_cfg(max_steps=6, val_every=2, max_batch_seconds=3.0)))

    def run(name, kill_at=-1):
        args = [str(tmp_path / name), str(corpus.en_train), str(corpus.en_dev)]
        command = [sys.executable, str(script), *args, str(pretraining_dir), cfg, str(kill_at)]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)

    assert (whole := run("whole")).returncode == 0, whole.stderr[-2000:]
    assert run("killed", kill_at=3).returncode != 0
    assert not (tmp_path / "killed" / "result.json").exists()
    assert (resumed := run("killed")).returncode == 0, resumed.stderr[-2000:]

    def weights(name):
        path = tmp_path / name / "checkpoints" / "last.ckpt"
        return torch.load(path, weights_only=True)["state_dict"]

    expected, got = weights("whole"), weights("killed")
    different = [n for n in expected if not torch.equal(expected[n], got[n])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"
    assert json.loads((tmp_path / "killed" / "result.json").read_text())["steps"] == 6
