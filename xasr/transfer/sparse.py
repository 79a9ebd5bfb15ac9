"""Finding each language's sub-network of a shared multilingual model (Lu et al. 2022;
``xasr.models.masks``): adapt the shared model to the language, then keep the weights largest
in magnitude.

* **One-shot** (``rounds=1``): one adaptation of ``cfg``'s budget from the shared weights, then
  magnitude pruning of every prunable weight to ``sparsity``.
* **Iterative with rewinding** (``rounds=R``): R rounds, each rewinding to the shared weights
  and adapting through the mask found so far, then pruning to sparsity ``1 - (1 - s)^(r/R)``
  (the same share of the remaining weights each round) among the weights the mask keeps.

Each adaptation is an ordinary ``transfer`` run in ``ADAPT/<lang>/round-1/`` (the dense
model's adaptation, the same for every sparsity and schedule) or
``ADAPT/<lang>/s<s>-of-<R>/round-<r>/`` (``ADAPT``: ``OUT/adapt`` by default; resumed when killed,
reused when finished; a resumed run refuses other masks); the masks go to ``OUT/masks.safetensors`` with
``OUT/masks.json`` and the overlap between languages to ``OUT/overlap.json``. Training the
shared model through them: ``xasr transfer --masks OUT --source-batches language``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from safetensors.torch import load_file

from xasr.config import TrainConfig
from xasr.data.sources import as_sources
from xasr.errors import XasrError
from xasr.io import output_dir, write_text
from xasr.models.build import WEIGHTS_FILE, load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks, magnitude_mask, prunable_names, top_mask
from xasr.transfer.finetune import TransferOptions, transfer

log = logging.getLogger(__name__)


def by_language(manifests, flag: str) -> dict[str, str]:
    """{lang: manifest} of manifests of one language each (the first line's ``lang``)."""
    from xasr.transfer.st import target_language

    out = {}
    for source in as_sources(manifests):
        lang = target_language([source.manifest], "give its lines their lang")
        if lang in out:
            raise XasrError(
                f"{flag}: two manifests of language {lang} ({out[lang]}, {source.manifest})"
            )
        out[lang] = source.manifest
    return out


def find_masks(
    out: str | Path,
    shared: str,
    train: dict[str, str],
    valid: dict[str, str],
    sparsity: float,
    cfg: TrainConfig,
    rounds: int = 1,
    progress: bool = True,
    adapt_dir: str | Path | None = None,
) -> LanguageMasks:
    """Each language of ``train`` (``{lang: manifest}``, with its dev set in ``valid``) gets a
    mask over ``shared``'s prunable weights; returns them, saved in ``out``. The adaptation
    runs live in ``adapt_dir`` (default ``out/adapt``): masks of several sparsities from one
    shared model can share it, and with it their first round's adaptations."""
    out = output_dir(out)
    adapt_dir = out / "adapt" if adapt_dir is None else Path(adapt_dir)
    if not 0.0 < sparsity < 1.0:
        raise XasrError(f"--sparsity must be in (0, 1), got {sparsity}")
    if rounds < 1:
        raise XasrError(f"--rounds must be at least 1, got {rounds}")
    missing = sorted(set(train) - set(valid))
    if missing:
        raise XasrError(f"no dev set (--valid) for language(s) {', '.join(missing)}")
    model, _, _ = load_model_dir(resolve_model(shared), need_head=False)
    names = prunable_names(model)
    masks = {}
    for lang, manifest in train.items():
        current, reached = None, 0.0
        for r in range(1, rounds + 1):
            target = 1.0 - (1.0 - sparsity) ** (r / rounds)
            # round 1 adapts the dense model (any schedule's); later rounds depend on it
            schedule = "" if r == 1 else f"s{sparsity:g}-of-{rounds}/"
            run = adapt_dir / lang / f"{schedule}round-{r}"
            through = LanguageMasks({lang: current}, reached) if current is not None else None
            adapted = adapt(run, shared, manifest, valid[lang], cfg, through, progress)
            reached = target
            current = {
                n: magnitude_within(adapted[n], current[n] if current else None, target)
                for n in names
            }
        masks[lang] = current
        log.info("%s: mask of %d weights at sparsity %.2f", lang, len(names), sparsity)
    result = LanguageMasks(masks, sparsity)
    result.save(out)
    write_text(out / "overlap.json", json.dumps(result.overlap(), indent=1))
    return result


def adapt(run: Path, shared, manifest, dev, cfg: TrainConfig, masks, progress) -> dict:
    """The weights of ``shared`` adapted to one language (through ``masks`` when given). A
    finished run is reused only if ``adapt.json`` says it was made from the same shared model,
    data and recipe (runs are shared between sparsities, and kept between invocations)."""
    cfg = dataclasses.replace(cfg, source_batches="language") if masks else cfg
    made_of = json.loads(
        json.dumps(
            {
                "shared": str(shared),
                "train": str(manifest),
                "dev": str(dev),
                "recipe": dataclasses.asdict(cfg),
            }
        )
    )
    record = run / "adapt.json"
    if record.is_file():
        earlier = json.loads(record.read_text(encoding="utf-8"))
        if earlier != made_of:
            changed = sorted(k for k in made_of if earlier.get(k) != made_of[k])
            raise XasrError(
                f"{run}: an adaptation made with another {', '.join(changed)}; delete it to "
                "adapt again, or give the masks another output folder"
            )
    if not (run / "result.json").is_file():
        run.mkdir(parents=True, exist_ok=True)
        write_text(record, json.dumps(made_of, indent=1))
        transfer(
            run,
            [manifest],
            [dev],
            TransferOptions(source=shared),
            cfg,
            progress=progress,
            masks=masks,
        )
    return load_file(str(run / "model" / WEIGHTS_FILE))


def magnitude_within(weight, kept, sparsity: float):
    """``magnitude_mask`` of ``weight`` among the entries ``kept`` (all when None)."""
    if kept is None:
        return magnitude_mask(weight, sparsity)
    scores = weight.abs().masked_fill(~kept, float("-inf"))  # pruned ones rank last
    return top_mask(scores, sparsity) & kept


def shared_masks(shared: str, langs: list[str], sparsity: float) -> LanguageMasks:
    """One mask for every language: the shared model's own largest weights (pruning without
    language adaptation, the control that separates "language-adaptive" from "pruned")."""
    model, _, _ = load_model_dir(resolve_model(shared), need_head=False)
    params = dict(model.named_parameters())
    mask = {n: magnitude_mask(params[n].detach(), sparsity) for n in prunable_names(model)}
    return LanguageMasks({lang: mask for lang in langs}, sparsity)


def random_masks(shared: str, langs: list[str], sparsity: float, seed: int) -> LanguageMasks:
    """Each language its own mask drawn at random at ``sparsity`` (seeded): sub-networks of
    the same size that no adaptation chose."""
    import torch

    model, _, _ = load_model_dir(resolve_model(shared), need_head=False)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    masks = {
        lang: {
            n: top_mask(torch.rand(params[n].shape, generator=generator), sparsity)
            for n in prunable_names(model)
        }
        for lang in langs
    }
    return LanguageMasks(masks, sparsity)
