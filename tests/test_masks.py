"""Language-adaptive sparse sharing (xasr.models.masks, xasr.transfer.sparse): masks by
magnitude, training through a mask, masks stored with the model, per-language decoding."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from xasr.config import MODEL_SIZES
from xasr.errors import XasrError
from xasr.models.build import build_model, load_model_dir
from xasr.models.masks import LanguageMasks, magnitude_mask, prunable_names
from xasr.transfer.finetune import TransferOptions, transfer
from xasr.transfer.sparse import find_masks, magnitude_within


def test_magnitude_mask_keeps_the_largest_weights():
    w = torch.tensor([[0.1, -3.0, 2.0], [0.5, -0.2, 1.0]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, True], [False, False, True]]
    assert magnitude_mask(w, 0.0).all() and magnitude_mask(w, 0.9).sum() == 1  # round(0.6)
    # iterative pruning only ever drops weights the previous mask kept
    kept = torch.tensor([[True, False, True], [True, True, True]])
    assert magnitude_within(w, kept, 0.5).tolist() == [[False, False, True], [True, False, True]]
    with pytest.raises(XasrError, match="sparsity"):
        magnitude_mask(w, 1.0)


def test_prunable_weights_are_linear_layers_less_the_head():
    model = build_model(MODEL_SIZES["tiny"], 10)
    names = prunable_names(model)
    assert "head.weight" not in names and names
    assert all(name.endswith(".weight") for name in names)
    assert "encoder.layers.0.attn.qkv.weight" in names or any("qkv" in n for n in names)
    params = dict(model.named_parameters())
    assert all(params[n].dim() == 2 for n in names)  # no biases, norms or convolutions


def random_masks(model, langs, sparsity=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return LanguageMasks(
        {
            lang: {
                n: magnitude_mask(torch.rand(params[n].shape, generator=g), sparsity)
                for n in prunable_names(model)
            }
            for lang in langs
        },
        sparsity,
    )


def test_a_step_on_one_language_leaves_every_weight_outside_its_mask(
    corpus, en_model, make_cfg, tmp_path
):
    source, _, _ = load_model_dir(en_model)
    masks = random_masks(source, ["de"])
    before = {k: v.clone() for k, v in source.state_dict().items()}
    run = tmp_path / "de"
    transfer(
        run,
        corpus.de_train,
        corpus.de_dev,
        TransferOptions(source=str(en_model)),
        make_cfg(max_steps=3, val_every=3, lr=1e-2),
        progress=False,
        masks=masks,
    )
    after = load_file(str(run / "model" / "model.safetensors"))
    moved_inside = 0
    for name, mask in masks.of("de").items():
        assert torch.equal(after[name][~mask], before[name][~mask]), name
        moved_inside += int((after[name][mask] != before[name][mask]).any())
    assert moved_inside == len(masks.of("de"))  # and every masked weight trained inside
    # the masks are stored with the model and load back
    saved = LanguageMasks.load(run / "model")
    assert saved.langs == ["de"] and saved.sparsity == 0.5
    assert all(torch.equal(saved.of("de")[n], m) for n, m in masks.of("de").items())


def test_several_languages_need_batches_of_one_language(corpus, en_model, make_cfg, tmp_path):
    source, _, _ = load_model_dir(en_model)
    with pytest.raises(XasrError, match="--source-batches language"):
        transfer(
            tmp_path / "run",
            [corpus.en_train, corpus.de_train],
            [corpus.en_dev, corpus.de_dev],
            TransferOptions(source=str(en_model)),
            make_cfg(max_steps=2),
            progress=False,
            masks=random_masks(source, ["en", "de"]),
        )


def test_evaluate_decodes_each_utterance_with_its_languages_mask(
    corpus, en_model, tmp_path, monkeypatch
):
    import shutil

    from xasr.decode import evaluate as evaluation

    model_dir = tmp_path / "model"
    shutil.copytree(en_model, model_dir)
    source, _, _ = load_model_dir(en_model)
    masks = random_masks(source, ["en", "de"], seed=3)
    masks.save(model_dir)
    seen = {}
    real = evaluation.transcribe_paths

    def recording(model, vocab, paths, *args, **kwargs):
        seen[tuple(str(p) for p in paths)] = dict(model.named_parameters())
        return real(model, vocab, paths, *args, **kwargs)

    monkeypatch.setattr(evaluation, "transcribe_paths", recording)
    evaluation.evaluate(model_dir, corpus.mixed, progress=False)
    assert len(seen) == 2  # one group per language
    dense = dict(source.named_parameters())
    for paths, params in seen.items():
        lang = "en" if "/en-" in paths[0] else "de"
        assert all(f"/{lang}-" in p for p in paths)
        for name, mask in masks.of(lang).items():
            assert torch.equal(params[name].detach(), dense[name].detach() * mask)


def test_a_masked_recognizer_decodes_through_a_languages_sub_network(en_model, tmp_path):
    import shutil

    from xasr.decode.transcribe import Recognizer

    model_dir = tmp_path / "model"
    shutil.copytree(en_model, model_dir)
    source, _, _ = load_model_dir(en_model)
    masks = random_masks(source, ["en", "de"], seed=5)
    masks.save(model_dir)
    recognizer = Recognizer.load(model_dir)
    assert recognizer.masks.langs == masks.langs
    with pytest.raises(XasrError, match=r"language masks \(en, de\).*--lang"):
        recognizer.network()
    german = dict(recognizer.network("de").named_parameters())
    dense = dict(source.named_parameters())
    for name, mask in masks.of("de").items():
        assert torch.equal(german[name].detach(), dense[name].detach() * mask)


def test_find_masks_one_shot_and_iterative(corpus, en_model, make_cfg, tmp_path):
    train = {"en": str(corpus.en_train), "de": str(corpus.de_train)}
    valid = {"en": str(corpus.en_dev), "de": str(corpus.de_dev)}
    cfg = make_cfg(max_steps=2, val_every=2)
    once = find_masks(tmp_path / "once", str(en_model), train, valid, 0.6, cfg, progress=False)
    assert once.langs == ["en", "de"]
    assert abs(once.density("de") - 0.4) < 0.01
    overlap = once.overlap()
    assert overlap["en"]["en"] == 1.0 and 0.0 < overlap["en"]["de"] < 1.0
    assert LanguageMasks.load(tmp_path / "once").langs == ["en", "de"]
    twice = find_masks(
        tmp_path / "iter", str(en_model), {"de": train["de"]}, valid, 0.6, cfg, rounds=2,
        progress=False,
    )  # fmt: skip
    assert abs(twice.density("de") - 0.4) < 0.01
    first = load_file(str(tmp_path / "iter/adapt/de/s0.6-of-2/round-2/model/masks.safetensors"))
    for name, mask in twice.of("de").items():  # round 2 trained through round 1's mask
        assert not (mask & ~first[f"de/{name}"].bool()).any()


def test_sparse_sharing_experiment_gives_every_arm_the_same_budget(
    tmp_path, corpus, make_recipe, monkeypatch
):
    """kind: sparse-sharing on the suite's corpus (en, de): one dense start per seed; every arm
    continues from it with the same step budget, the sparse arm's mask adaptations counted in
    it; the random- and shared-mask controls at the same sparsity; the verdicts named."""
    import yaml

    from xasr.experiments.kinds import run_experiment
    from xasr.experiments.kinds.sparse_sharing import SparseSharingKind

    splits = {
        "en": {"train": corpus.en_train, "dev": corpus.en_dev, "test": corpus.en_dev},
        "de": {"train": corpus.de_train, "dev": corpus.de_dev, "test": corpus.de_dev},
    }
    monkeypatch.setattr(SparseSharingKind, "prepare", lambda self, s, p: splits)
    recipe = {k: v for k, v in make_recipe().items() if k not in ("max_steps", "patience")}
    config = tmp_path / "ss.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "sparse-sharing",
                "name": "ss-tiny",
                "out": str(tmp_path / "out"),
                "languages": {"en": 1, "de": 1},
                "size": "tiny",
                "seeds": [0],
                "recipe": recipe,
                "budget": {"steps": 8},
                "dense_budget": {"steps": 4},
                "adapt_budget": {"steps": 2},
                "sparsities": [0.5],
            }
        )
    )
    results = run_experiment(config, progress=False)
    rows = {(r["label"], r["group"]): r for r in results["rows"]}
    labels = {label for label, _ in rows}
    assert labels == {
        "dense",
        "dense-continued",
        "finetune",
        "sparse-0.5",
        "random-0.5",
        "shared-0.5",
    }
    for label in labels - {"dense"}:
        assert rows[(label, "en")]["steps"] == 8, label  # sparse: 2 + 2 adapting, 4 training
    assert rows[("dense", "en")]["steps"] == 4
    out = tmp_path / "out"
    assert json.loads((out / "runs/sparse-0.5/seed0/train/result.json").read_text())["steps"] == 4
    masks = {name: LanguageMasks.load(out / f"runs/{name}/seed0/train/model") for name in
             ("sparse-0.5", "random-0.5", "shared-0.5")}  # fmt: skip
    assert all(abs(m.density("de") - 0.5) < 0.01 for m in masks.values())
    assert masks["shared-0.5"].overlap()["en"]["de"] == 1.0
    assert results["chosen"] == {"sparse": "sparse-0.5"}
    assert set(results["verdicts"]) == {"dense-continued", "shared-0.5", "random-0.5"}
    report = (out / "report.md").read_text()
    assert "`sparse` is `sparse-0.5` (chosen on dev)." in report
    assert "## Budgets: what each arm spent" in report


def test_masked_runs_check_their_data_and_masks(corpus, en_model, make_cfg, tmp_path):
    source, _, _ = load_model_dir(en_model)
    run = tmp_path / "de"
    cfg = make_cfg(max_steps=2, val_every=2)
    options = TransferOptions(source=str(en_model))
    with pytest.raises(XasrError, match="dev lines of language"):  # en dev, no en mask
        transfer(run, corpus.de_train, corpus.en_dev, options, cfg, progress=False,
                 masks=random_masks(source, ["de"]))  # fmt: skip
    transfer(run, corpus.de_train, corpus.de_dev, options, cfg, progress=False,
             masks=random_masks(source, ["de"]))  # fmt: skip
    with pytest.raises(XasrError, match="--masks"):  # resumed through other masks
        transfer(run, corpus.de_train, corpus.de_dev, options, make_cfg(max_steps=4, val_every=2),
                 progress=False, masks=random_masks(source, ["de"], seed=9))  # fmt: skip


def test_a_masked_model_refuses_lines_without_a_language(corpus, en_model, tmp_path):
    import json
    import shutil

    from xasr.decode.evaluate import evaluate

    model_dir = tmp_path / "model"
    shutil.copytree(en_model, model_dir)
    source, _, _ = load_model_dir(en_model)
    random_masks(source, ["en"]).save(model_dir)
    rows = [json.loads(line) for line in corpus.en_dev.read_text().splitlines()]
    for row in rows:
        row.pop("lang")
        row["audio_filepath"] = str(corpus.root / row["audio_filepath"])
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(XasrError, match="name the language"):
        evaluate(model_dir, bare, progress=False)
    assert "cer" in evaluate(model_dir, bare, progress=False, mask_lang="en")


def test_an_adaptation_made_otherwise_is_not_reused(corpus, en_model, make_cfg, tmp_path):
    """The adaptations are shared between sparsities and kept: one made with another recipe
    is refused by name, not silently pruned."""
    from xasr.errors import XasrError
    from xasr.transfer.sparse import find_masks

    train, dev = {"de": str(corpus.de_train)}, {"de": str(corpus.de_dev)}
    cfg = make_cfg(max_steps=2)
    find_masks(tmp_path / "m5", str(en_model), train, dev, 0.5, cfg, adapt_dir=tmp_path / "a")
    again = find_masks(
        tmp_path / "m7", str(en_model), train, dev, 0.7, cfg, adapt_dir=tmp_path / "a"
    )
    assert abs(again.density("de") - 0.3) < 0.01
    with pytest.raises(XasrError, match="another recipe"):
        find_masks(
            tmp_path / "m3",
            str(en_model),
            train,
            dev,
            0.3,
            make_cfg(max_steps=2, lr=5e-4),
            adapt_dir=tmp_path / "a",
        )


def test_export_writes_one_languages_sub_network(en_model, tmp_path):
    import shutil

    import numpy as np
    import onnx
    import onnxruntime

    from xasr.export.onnx import _check_batch, export_onnx
    from xasr.models.masks import apply_mask

    model_dir = tmp_path / "model"
    shutil.copytree(en_model, model_dir)
    source, _, _ = load_model_dir(en_model)
    masks = random_masks(source, ["en", "de"], seed=4)
    masks.save(model_dir)
    with pytest.raises(XasrError, match=r"language masks \(en, de\).*--lang"):
        export_onnx(model_dir, tmp_path / "dense.onnx")
    report = export_onnx(model_dir, tmp_path / "de.onnx", lang="de")
    assert report["max_abs_diff"] < 1e-4  # checked against the masked model
    session = onnxruntime.InferenceSession(str(tmp_path / "de.onnx"))
    audio, lengths = _check_batch((1.0,))
    got, _ = session.run(None, {"audio": audio.numpy(), "lengths": lengths.numpy()})
    source.frontend.per_utterance = None
    with torch.no_grad():
        dense, _ = source.eval()(audio, lengths)
        german, _ = apply_mask(source, masks.of("de"))(audio, lengths)
    assert np.abs(got - german.numpy()).max() < 1e-4 < np.abs(got - dense.numpy()).max()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "de.onnx")).metadata_props}
    assert meta["lang"] == "de"


def test_the_control_masks_keep_the_sparsity(en_model):
    """shared_masks: one magnitude mask for every language; random_masks: one mask per language
    at the sparsity, different across languages and reproducible from the seed."""
    from xasr.transfer.sparse import random_masks, shared_masks

    shared = shared_masks(str(en_model), ["en", "de"], 0.5)
    assert all(abs(shared.density(g) - 0.5) < 0.01 for g in ("en", "de"))
    assert shared.overlap()["en"]["de"] == 1.0
    drawn = random_masks(str(en_model), ["en", "de"], 0.7, seed=3)
    assert all(abs(drawn.density(g) - 0.3) < 0.01 for g in ("en", "de"))
    assert drawn.overlap()["en"]["de"] < 0.5  # about 0.3 by chance
    assert random_masks(str(en_model), ["en", "de"], 0.7, seed=3).digest() == drawn.digest()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sparsities": [1.5]}, "sparsities must list values in"),
        ({"dense_budget": None}, "dense_budget"),
        ({"adapt": {"patience": 3}}, "adapt: patience cannot be set here"),
        ({"arms": ["lottery"]}, "arms: unknown"),
        ({"rounds": 0}, "rounds must be a positive integer"),
        ({"denses": {}}, "unknown key"),
    ],
)
def test_sparse_sharing_config_errors_name_the_key(tmp_path, changes, message):
    import yaml

    from xasr.experiments.kinds.sparse_sharing import KIND

    config = {
        "kind": "sparse-sharing", "name": "s", "languages": {"en": 1, "de": 1},
        "budget": {"steps": 8}, "dense_budget": {"steps": 4}, "adapt_budget": {"steps": 2},
        "sparsities": [0.5], **changes,
    }  # fmt: skip
    config = {k: v for k, v in config.items() if v is not None}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(XasrError, match=message):
        KIND.load(path, None)
