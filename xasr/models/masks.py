"""Language-adaptive sparse sharing (Lu, Huang, Qu, Wei, Ma 2022, "Language Adaptive
Cross-lingual Speech Representation Learning with Sparse Sharing Sub-networks"): each language
keeps a binary mask over the shared weights, and the weight a batch of that language trains and
decodes with is ``mask ⊙ weight``. Masks overlap, so weights inside several languages' masks
are shared; there are no language-specific modules.

* **Which weights** (``prunable_names``): the weights of linear layers (``nn.Linear``) outside
  the vocabulary-indexed ones; biases, norms, convolutions, embeddings and the output layer
  stay dense (shared by every language).
* **Finding a mask** (``magnitude_mask``): after adapting the shared model to a language
  (``xasr.transfer.sparse.find_masks``), each prunable tensor keeps the ``1 - sparsity`` of
  its weights largest in magnitude (layer-wise pruning, as in the paper).
* **Applying it** (``masked_call``): the model's parameters are replaced by ``mask ⊙ weight``
  for one call through ``torch.func.functional_call``, so the gradient reaching a weight is
  ``mask ⊙ gradient``: zero outside the mask.
* **Stored with the model**: ``MODEL/masks.safetensors`` (one uint8 tensor per language and
  weight) and ``MODEL/masks.json`` (languages, sparsity, the weights masked).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xasr.errors import CheckpointError, XasrError
from xasr.io import write_file, write_text

MASKS_FILE = "masks.safetensors"
MASKS_INFO = "masks.json"


def prunable_names(model: nn.Module) -> list[str]:
    """The weights of the model's linear layers (and the fused input projection of
    ``nn.MultiheadAttention``), less its vocabulary rows and fixed weights."""
    skip = set(model.vocab_params()) | set(model.fixed_parameters())
    names = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.Linear):
            names.append(prefix + "weight")
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            names.append(prefix + "in_proj_weight")  # its fused query/key/value projection
    return [n for n in names if n not in skip]


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """A bool tensor keeping the ``round((1 - sparsity) * n)`` entries of ``weight`` largest in
    magnitude (ties broken by position, so the count is exact)."""
    return top_mask(weight.detach().abs(), sparsity)


def top_mask(scores: Tensor, sparsity: float) -> Tensor:
    """A bool tensor keeping the ``round((1 - sparsity) * n)`` highest ``scores``."""
    if not 0.0 <= sparsity < 1.0:
        raise XasrError(f"sparsity must be in [0, 1), got {sparsity}")
    keep = round((1.0 - sparsity) * scores.numel())
    order = scores.flatten().argsort(descending=True, stable=True)
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[order[:keep]] = True
    return mask.view_as(scores)


@dataclass
class LanguageMasks:
    """``masks[lang][weight name]``: bool tensors shaped like the weights."""

    masks: dict[str, dict[str, Tensor]]
    sparsity: float

    @property
    def langs(self) -> list[str]:
        return list(self.masks)

    def of(self, lang: str) -> dict[str, Tensor]:
        if lang not in self.masks:
            raise XasrError(
                f"no mask for language {lang!r}; the model has masks for {', '.join(self.masks)}"
            )
        return self.masks[lang]

    def density(self, lang: str) -> float:
        """The share of the masked weights this language uses."""
        masks = self.of(lang).values()
        return sum(int(m.sum()) for m in masks) / max(sum(m.numel() for m in masks), 1)

    def overlap(self) -> dict[str, dict[str, float]]:
        """``[a][b]``: the share of language a's kept weights that language b keeps too."""
        table = {}
        for a in self.langs:
            kept = sum(int(m.sum()) for m in self.masks[a].values())
            table[a] = {
                b: sum(int((m & self.masks[b][n]).sum()) for n, m in self.masks[a].items())
                / max(kept, 1)
                for b in self.langs
            }
        return table

    def digest(self) -> str:
        """SHA-1 of the languages, sparsity and every mask: what a resumed run must keep."""
        h = hashlib.sha1(json.dumps([self.langs, self.sparsity]).encode())
        for lang in self.langs:
            for name in sorted(self.masks[lang]):
                h.update(f"{lang}/{name}".encode())
                h.update(self.masks[lang][name].to(torch.uint8).cpu().numpy().tobytes())
        return h.hexdigest()

    def on(self, device) -> LanguageMasks:
        """The same masks on ``device`` (moved once, not at every step)."""
        moved = {g: {n: m.to(device) for n, m in ms.items()} for g, ms in self.masks.items()}
        return LanguageMasks(moved, self.sparsity)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        tensors = {
            f"{lang}/{name}": m.to(torch.uint8).contiguous()
            for lang, masks in self.masks.items()
            for name, m in masks.items()
        }
        write_file(directory / MASKS_FILE, lambda tmp: save_file(tensors, str(tmp)))
        names = sorted(next(iter(self.masks.values()), {}))
        info = {"langs": self.langs, "sparsity": self.sparsity, "weights": names}
        info["density"] = {lang: self.density(lang) for lang in self.langs}
        write_text(directory / MASKS_INFO, json.dumps(info, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> LanguageMasks | None:
        """The masks saved in a model directory, or None when it has none."""
        directory = Path(directory)
        if not (directory / MASKS_FILE).is_file():
            return None
        try:
            info = json.loads((directory / MASKS_INFO).read_text(encoding="utf-8"))
            tensors = load_file(str(directory / MASKS_FILE))
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise CheckpointError(
                f"{directory}: the language masks are unreadable ({err})"
            ) from None
        masks: dict[str, dict[str, Tensor]] = {lang: {} for lang in info["langs"]}
        for key, value in tensors.items():
            lang, _, name = key.partition("/")
            masks[lang][name] = value.bool()
        return cls(masks, float(info["sparsity"]))

    def check(self, model: nn.Module, where: str = "masks") -> None:
        """Every mask names a weight of ``model`` of its shape."""
        params = dict(model.named_parameters())
        for lang, masks in self.masks.items():
            for name, m in masks.items():
                if name not in params or tuple(params[name].shape) != tuple(m.shape):
                    raise CheckpointError(
                        f"{where}: the {lang} mask of {name} does not fit the model "
                        f"({tuple(m.shape)} vs {tuple(params[name].shape) if name in params else 'absent'})"
                    )


class _Call(nn.Module):
    """Runs ``fn(model, *args)`` as its forward, so that ``functional_call`` can swap the
    model's parameters for any of its methods (loss, encode, decoding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def masked_call(model: nn.Module, masks: dict[str, Tensor], fn, *args, **kwargs):
    """``fn(model, *args, **kwargs)`` with every masked weight w replaced by ``mask ⊙ w`` (a
    tensor that keeps w's gradient path: the gradient reaching w is masked)."""
    params = dict(model.named_parameters())
    swapped = {f"model.{n}": params[n] * m.to(params[n].device) for n, m in masks.items()}
    return torch.func.functional_call(_Call(model), swapped, (fn, *args), kwargs, strict=False)


@torch.no_grad()
def apply_mask(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Multiply the model's masked weights by their masks, in place (a language's own dense
    copy of the shared model, for export or a quick look); returns the model."""
    params = dict(model.named_parameters())
    for name, m in masks.items():
        params[name].mul_(m.to(params[name].device, params[name].dtype))
    return model
