"""Adapting without forgetting: weight penalties toward the source model, and before/after tests.

* **L2-SP** (Li et al. 2018, "Explicit inductive bias for transfer learning"):
  ``alpha/2 * sum_i (w_i - w_source_i)^2`` over the transferred weights.
* **EWC** (Kirkpatrick et al. 2017): ``lambda/2 * sum_i F_i (w_i - w_source_i)^2`` with ``F`` the
  diagonal empirical Fisher information of the source model on source-language data.

Both are one ``AnchorPenalty``: a per-weight coefficient ``c_i = alpha + lambda * F_i`` on the
anchored weights, 0 elsewhere. ``evaluate_before_after`` measures forgetting: the error increase
of the adapted model over the source model on the source language's test set.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path

import safetensors
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from xasr.data.batching import AsrDataset, make_sampler
from xasr.decode.evaluate import evaluate
from xasr.errors import XasrError
from xasr.io import write_file
from xasr.models.build import resolve_model
from xasr.models.pretrained import has_ctc_head
from xasr.transfer.plan import TransferPlan
from xasr.transfer.vocab_rows import vocab_rows_layout

log = logging.getLogger(__name__)

FISHER_FILE = "fisher.safetensors"
FORGETTING_FILE = "forgetting.json"


class AnchorPenalty(nn.Module):
    """``forward(model) = 1/2 * sum_i c_i (w_i - w*_i)^2`` over the parameters it names.

    ``reference``: {parameter name: w*}, ``coefficient``: {parameter name: c}, each of the
    parameter's shape (a 0 coefficient leaves that weight free, e.g. a new head row). Both are
    buffers, so they move with the model's device and live in Lightning checkpoints only.
    ``anchored``: the names, for ``AsrTask`` to turn their weight decay off.
    """

    def __init__(self, reference: dict[str, Tensor], coefficient: dict[str, Tensor]):
        super().__init__()
        if reference.keys() != coefficient.keys():
            raise ValueError("reference and coefficient must name the same parameters")
        self.names = sorted(reference)
        self.anchored = frozenset(self.names)
        for name in self.names:
            if reference[name].shape != coefficient[name].shape:
                raise ValueError(f"{name}: reference and coefficient shapes differ")
            self.register_buffer(_key("ref", name), reference[name].detach().float().clone())
            self.register_buffer(_key("coef", name), coefficient[name].detach().float().clone())

    def reference(self, name: str) -> Tensor:
        return getattr(self, _key("ref", name))

    def coefficient(self, name: str) -> Tensor:
        return getattr(self, _key("coef", name))

    def forward(self, model: nn.Module) -> Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), device=self.reference(self.names[0]).device)
        for name in self.names:
            diff = params[name].float() - self.reference(name)
            total = total + (self.coefficient(name) * diff.square()).sum()
        return 0.5 * total

    def describe(self) -> dict:
        """Counts for RUN/transfer.json: anchored tensors and weights (coefficient > 0)."""
        weights = sum(int((self.coefficient(n) > 0).sum()) for n in self.names)
        return {"anchored_tensors": len(self.names), "anchored_weights": weights}


def _key(kind: str, name: str) -> str:
    # buffer names cannot hold "."; "__" does not occur in parameter names
    return f"{kind}__{name.replace('.', '__')}"


def to_target_layout(
    source_tensors: dict[str, Tensor], target: nn.Module, plan: TransferPlan
) -> dict[str, Tensor]:
    """Tensors keyed by the source model's parameter names (its weights, its Fisher, ones) laid
    out as the target's transferred parameters, as ``plan`` transferred them.

    Parameters of ``plan.copied`` come as they are, except dropped layers; the
    vocabulary-indexed ones get the source row at each target row of ``plan.anchored_rows``,
    zeros elsewhere (``vocab_rows_layout``), and are absent when the rows started fresh.
    """
    out = {}
    for name, _ in target.named_parameters():
        if name in plan.copied and not name.startswith(plan.dropped_prefixes):
            out[name] = source_tensors[name].detach().cpu().clone()
    out.update(vocab_rows_layout(source_tensors, target, plan.anchored_rows, plan.vocab_rows))
    return out


def normalise_fisher(fisher: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
    """``F / mean(F)``, the mean over the anchored weights (``mask`` 1): then lambda reads on
    L2-SP's scale, lambda = alpha giving the same total pull on average (raw Fisher values
    depend on the loss scale, the batch size and the data, and span orders of magnitude)."""
    total = sum(float((fisher[n] * mask[n]).sum()) for n in mask)
    count = sum(float(mask[n].sum()) for n in mask)
    if total <= 0.0 or count == 0:
        raise XasrError(
            "the Fisher information is zero on every anchored weight (no gradient from the "
            "Fisher data); check --fisher-manifest"
        )
    mean = total / count
    return {n: fisher[n] * mask[n] / mean for n in mask}


def estimate_fisher(
    model: nn.Module,
    vocab,
    cuts,
    max_batch_seconds: float,
    batches: int,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[str, Tensor], int]:
    """Diagonal empirical Fisher of ``model`` (the source, with its own vocabulary) on ``cuts``.

    The mean over at most ``batches`` shuffled batches of the squared gradient of each batch's
    mean loss (``model.loss``: CTC for a CTC model), in eval mode (no dropout or SpecAugment). Per-batch rather than
    per-utterance gradients: a batch's size times cheaper, and near a converged source the mean
    gradient is small, so this is the per-utterance Fisher divided by the batch size, a scale
    ``normalise_fisher`` removes. Returns ({parameter name: F, the parameter's shape, on CPU},
    batches used).
    """
    model = copy.deepcopy(model).to(device).eval()
    dataset = AsrDataset(vocab, on_unknown="unk")  # source text is the source's language
    sampler = make_sampler(cuts, max_batch_seconds, shuffle=True, seed=seed)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    used = 0
    for cut_batch in sampler:
        if used == batches:
            break
        batch = dataset[cut_batch]
        model.zero_grad(set_to_none=True)
        tensors = ("audio", "audio_lengths", "targets", "target_lengths")
        loss, _ = model.loss({**batch, **{k: batch[k].to(device) for k in tensors}})
        loss.backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                fisher[name] += param.grad.detach().square()
        used += 1
    log.info("Fisher information estimated on %d batches", used)
    return {n: (f / max(used, 1)).cpu() for n, f in fisher.items()}, used


def load_or_estimate_fisher(
    path: Path, key: dict[str, str], estimate: Callable[[], tuple[dict[str, Tensor], int]]
) -> dict[str, Tensor]:
    """The Fisher saved at ``path`` when its metadata matches ``key`` (a resumed run), else
    ``estimate()``, saved there atomically with ``key`` (and the batches used) as metadata."""
    saved = _read_fisher(path)
    if saved is not None:
        tensors, meta = saved
        if all(meta.get(k) == v for k, v in key.items()):
            log.info("reusing the Fisher information in %s", path)
            return tensors
        log.warning("%s was estimated with other settings; estimating again", path)
    fisher, used = estimate()
    tensors = {n: t.contiguous() for n, t in fisher.items()}
    write_file(path, lambda tmp: save_file(tensors, str(tmp), {**key, "used": str(used)}))
    return fisher


def _read_fisher(path: Path) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return load_file(str(path)), meta
    except (OSError, safetensors.SafetensorError) as err:
        log.warning("%s is unreadable (%s); estimating again", path, err)
        return None


def evaluate_before_after(
    source: str,
    adapted: str | Path,
    tests: dict[str, str | Path],
    progress: bool = False,
    known: dict[tuple[str, str], dict] | None = None,
) -> dict:
    """Each test manifest decoded by the source model (before) and the adapted one (after).

    ``source``: a shipped name (en-small) or model directory; ``adapted``: a model directory.
    Returns {test name: {"before": evaluate()'s dict, "after": ..., "cer_change": after - before,
    "wer_change": ...}} (without per-utterance hypotheses). Forgetting is the change on the
    source language's test; on the target's it is the gain (negative change).
    ``known``: evaluations already made, keyed by ``evaluation_key(model_dir, manifest)``; new
    ones are added to it, so a caller comparing many adapted models with one source decodes each
    test with the source once.
    """
    known = {} if known is None else known
    before_dir = resolve_model(source)
    results = {}
    for name, manifest in tests.items():
        before = _evaluate(before_dir, manifest, progress, known)
        after = _evaluate(Path(adapted), manifest, progress, known)
        results[name] = {
            "before": before,
            "after": after,
            "cer_change": after["cer"] - before["cer"],
            "wer_change": after["wer"] - before["wer"],
        }
    return results


def check_before_after(source: str | Path | None, tests: dict[str, str | Path]) -> None:
    """Before a transfer trains: its before/after tests (``{"source": M, "target": M}``) need
    a source model with a CTC head to score with, and test manifests that exist."""
    if tests and source is None:
        raise XasrError("--source-test/--target-test compare with the source model: pass --from")
    if tests and not has_ctc_head(resolve_model(source)):
        raise XasrError(
            f"--source-test/--target-test score the source model, and {source} has no "
            "CTC head to score with; drop them"
        )
    for name, path in tests.items():
        if not Path(path).is_file():
            raise XasrError(f"--{name}-test {path} does not exist or is not a file")


def compare_with_source(
    run_dir: str | Path,
    source: str | Path,
    adapted: str | Path,
    tests: dict[str, str | Path],
    progress: bool = False,
) -> dict | None:
    """After a transfer: ``evaluate_before_after`` of ``tests``, saved in RUN/forgetting.json.
    Under DDP every process finishes the transfer and calls this; the main one evaluates, the
    others return None (as does an empty ``tests``)."""
    if not tests or rank_zero_only.rank != 0:
        return None
    results = evaluate_before_after(str(source), adapted, tests, progress)
    save_before_after(run_dir, results)
    return results


def evaluation_key(model_dir: str | Path, manifest: str | Path) -> tuple[str, str]:
    return str(Path(model_dir).resolve()), str(Path(manifest).resolve())


def _evaluate(model_dir: Path, manifest, progress: bool, known: dict) -> dict:
    key = evaluation_key(model_dir, manifest)
    if key not in known:
        result = evaluate(model_dir, manifest, progress=progress)
        result.pop("hypotheses", None)  # only the scores are kept
        known[key] = result
    return known[key]


def save_before_after(run_dir: str | Path, results: dict) -> Path:
    """Write RUN/forgetting.json."""
    path = Path(run_dir) / FORGETTING_FILE
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def before_after_table(results: dict) -> str:
    """test, CER before, CER after, change (percentage points), one line per test."""
    width = max([4, *(len(name) for name in results)])
    lines = [f"{'test':<{width}}  CER before  CER after  change"]
    for name, r in results.items():
        lines.append(
            f"{name:<{width}}  {100 * r['before']['cer']:9.1f}%  {100 * r['after']['cer']:8.1f}%"
            f"  {100 * r['cer_change']:+6.1f}"
        )
    return "\n".join(lines)
