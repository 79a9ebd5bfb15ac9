"""Every vocabulary change in one place: the rows of the parameters a model indexes by its
vocabulary (``model.vocab_params()``: a CTC head's weight and bias rows; an attention decoder's
embedding and output rows), rebuilt from a source model token by token.

Rows of tokens both vocabularies share are copied; a mapped token (``ä`` from ``a``) takes its
source token's rows, its bias lowered by log 2 so it starts as a slightly less likely twin
instead of tying with it; a new token keeps its fresh rows, its bias set to the source's lowest,
so early decoding keeps to tokens the model already knows while the new rows learn. Rows past
the vocabulary (an attention decoder's start/end token, owned by the model) copy from the
source's rows past its vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xasr.transfer.vocab_map import TokenMap

MAPPED_BIAS_OFFSET = -math.log(2)


@torch.no_grad()
def remap_vocab_rows(
    source: nn.Module, target: nn.Module, token_map: TokenMap, names: tuple[str, ...]
) -> list[str]:
    """Rebuild ``target``'s vocabulary-indexed parameters ``names`` (a ``TransferPlan``'s
    ``vocab_rows``: the source has them too) from ``source``'s; returns the names."""
    n_tokens = len(token_map.copied) + len(token_map.mapped) + len(token_map.new)
    done = []
    for name in names:
        axis = target.vocab_params()[name]
        src = source.get_parameter(name).movedim(axis, 0)
        tgt = target.get_parameter(name).movedim(axis, 0)  # a view: writes reach the parameter
        for t, s in token_map.copied.items():
            tgt[t] = src[s]
        for t, s in token_map.mapped.items():
            tgt[t] = src[s] + (MAPPED_BIAS_OFFSET if tgt.ndim == 1 else 0.0)
        if token_map.new and tgt.ndim == 1:
            tgt[token_map.new] = src.min()
        extra = tgt.shape[0] - n_tokens  # the model's own tokens, e.g. start/end
        if extra:
            tgt[-extra:] = src[-extra:]
        done.append(name)
    return done


def vocab_rows_layout(
    source_tensors: dict[str, Tensor],
    target: nn.Module,
    rows: dict[int, int],
    names: tuple[str, ...],
) -> dict[str, Tensor]:
    """Source-shaped tensors of ``target``'s vocabulary-indexed parameters ``names`` (a plan's
    ``vocab_rows``; the source's weights, its Fisher, ones) laid out in the target's shape:
    source row ``s`` at target row
    ``t`` for each ``t: s`` of ``rows``, zeros elsewhere (on CPU). Nothing when ``rows`` is
    empty (the rows start fresh)."""
    if not rows:
        return {}
    t_rows, s_rows = (list(x) for x in zip(*sorted(rows.items())))
    out = {}
    for name in names:
        axis = target.vocab_params()[name]
        laid = torch.zeros_like(target.get_parameter(name), device="cpu").movedim(axis, 0)
        laid[t_rows] = source_tensors[name].detach().cpu().movedim(axis, 0)[s_rows]
        out[name] = laid.movedim(0, axis)
    return out
