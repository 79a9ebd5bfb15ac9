"""Evaluate a model on a manifest and transcribe files with a decoding strategy
(``xasr.decode.strategy``: the model's default, or e.g. a CTC beam search with an n-gram LM,
``xasr.decode.lm``), batched by duration."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from xasr.data.audio import SAMPLE_RATE
from xasr.data.batching import check_utterances, load_batch_audio
from xasr.data.manifest import read_manifest
from xasr.decode.batches import duration_batches
from xasr.decode.metrics import error_counts, error_counts_by_language, errors_by_stretch
from xasr.decode.options import DecodingOptions, default_strategy
from xasr.device import torch_device
from xasr.errors import XasrError
from xasr.io import output_file, write_text
from xasr.models.build import load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks

log = logging.getLogger(__name__)


@torch.inference_mode()
def transcribe_paths(
    model,
    vocab,
    paths: list,
    durations: list[float] | None = None,
    where: list[str] | None = None,
    device: str | None = None,
    max_batch_seconds: float = 200.0,
    progress: bool = False,
    decoder=None,
    stats: dict | None = None,
) -> list[str]:
    """``decoder``: a decoding strategy (default: the model's, ``default_strategy``).
    ``stats``, if given, receives audio_seconds, decode_seconds (the search alone: everything
    after the encoder, ``strategy.search``) and total_seconds."""
    started = time.perf_counter()
    decoder = decoder or default_strategy(model, vocab)
    audio_seconds = decode_seconds = 0.0
    device = torch_device(device)
    model = model.to(device).eval()
    if durations is None:
        durations = [1.0] * len(paths)
    texts = [""] * len(paths)
    for batch in tqdm(
        duration_batches(durations, max_batch_seconds),
        disable=not progress,
        desc="decoding",
        unit="batch",
    ):
        audio, lengths = load_batch_audio(
            [paths[i] for i in batch], [where[i] for i in batch] if where else None
        )
        state = decoder.encode(model, audio.to(device), lengths.to(device))
        audio_seconds += lengths.sum().item() / SAMPLE_RATE
        decode_started = time.perf_counter()
        for i, text in zip(batch, decoder.search(model, state)):
            texts[i] = text
        decode_seconds += time.perf_counter() - decode_started
    if stats is not None:
        stats.update(
            audio_seconds=audio_seconds,
            decode_seconds=decode_seconds,
            total_seconds=time.perf_counter() - started,
        )
    return texts


def language_model(model, masks, lang: str | None, where):
    """A copy of ``model`` whose masked weights are multiplied by ``lang``'s masks."""
    import copy

    from xasr.models.masks import apply_mask

    if lang is None:
        raise XasrError(
            f"{where}: the model has language masks ({', '.join(masks.langs)}): name the "
            "language (--lang), or give every manifest line a lang"
        )
    return apply_mask(copy.deepcopy(model), masks.of(lang))


def evaluate(
    model_dir: str | Path,
    manifest: str | Path,
    device: str | None = None,
    output: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    decoding: DecodingOptions | None = None,
    mask_lang: str | None = None,
) -> dict:
    """WER/CER (and per language when the manifest mixes languages) of the model's default
    decoding, or of what ``decoding`` asks for (``xasr.decode.options``: e.g. a CTC beam search
    with a KenLM n-gram model, attention beam search, joint CTC/attention).

    Returns {"wer", "cer", "mer" (mixed error rate, ``xasr.decode.metrics``), counts...,
    "by_stretch_language" (code-switched manifests: WER/CER within each language's stretches),
    "by_language": {lang: {...}}, "model", "manifest",
    "decoder": {"name", ...its parameters}, "decode_rtf"} (decode_rtf: seconds of search per
    second of audio; total_rtf: with audio loading and the model); with ``output`` also writes
    it as JSON, plus "hypotheses": [{"id", "ref", "hyp"}, ...]. A model with language masks
    (``xasr.models.masks``) decodes each utterance with its ``lang``'s mask, or ``mask_lang``'s.
    """
    device = torch_device(device)
    if output:
        output_file(output, "--json")
    model, _, vocab = load_model_dir(model_dir)
    decoder = (decoding or DecodingOptions()).strategy(model, vocab)
    stats = {"audio_seconds": 0.0, "decode_seconds": 0.0, "total_seconds": 0.0}
    utterances, report = check_utterances(read_manifest(manifest), skip_bad=skip_bad)
    masks = LanguageMasks.load(resolve_model(model_dir))
    hyps = [""] * len(utterances)
    groups = {None: list(range(len(utterances)))}
    if masks is not None:  # sparse sharing: each utterance through its language's sub-network
        groups = {}
        for i, u in enumerate(utterances):
            groups.setdefault(mask_lang or u.lang, []).append(i)
    for lang, idx in groups.items():
        group_stats = {}
        texts = transcribe_paths(
            model if masks is None else language_model(model, masks, lang, manifest),
            vocab,
            [utterances[i].audio_filepath for i in idx],
            [utterances[i].duration for i in idx],
            [utterances[i].source for i in idx],
            device=device,
            progress=progress,
            decoder=decoder,
            stats=group_stats,
        )
        for i, text in zip(idx, texts):
            hyps[i] = text
        for key, value in group_stats.items():
            stats[key] = stats.get(key, 0.0) + value
    refs = [u.text for u in utterances]
    result = error_counts(refs, hyps).to_json()
    langs = [u.lang or "" for u in utterances]
    if len(set(langs)) > 1:
        by_lang = error_counts_by_language(refs, hyps, langs)
        result["by_language"] = {lang: c.to_json() for lang, c in by_lang.items()}
    stretches = [u.extra.get("stretches") for u in utterances]
    if any(stretches):  # code-switched: errors within each language's stretches
        switched = [i for i, s in enumerate(stretches) if s]
        result["by_stretch_language"] = errors_by_stretch(
            [refs[i] for i in switched],
            [hyps[i] for i in switched],
            [stretches[i] for i in switched],
        )
    result.update(model=str(model_dir), manifest=str(manifest), data=report.summary())
    audio_seconds = max(stats["audio_seconds"], 1e-9)
    result.update(
        decoder=decoder.info(),
        decode_rtf=stats["decode_seconds"] / audio_seconds,
        total_rtf=stats["total_seconds"] / audio_seconds,
        audio_seconds=stats["audio_seconds"],
    )
    if output:
        detail = {
            **result,
            "hypotheses": [
                {"id": u.id, "ref": r, "hyp": h} for u, r, h in zip(utterances, refs, hyps)
            ],
        }
        write_text(output, json.dumps(detail, indent=1, ensure_ascii=False))
    return result
