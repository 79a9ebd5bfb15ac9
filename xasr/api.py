"""The front door: the calls a Python user needs, each over the library functions the commands
use (``xasr transcribe``, ``evaluate``, ``train``, ``transfer``).

    import xasr

    run = xasr.transfer_model("runs/es", "es/train.jsonl", "es/dev.jsonl", source="en-small",
                              max_steps=500)
    print(xasr.evaluate(run.model_dir, "es/test.jsonl")["cer"])
    model = xasr.load_model(run.model_dir)
    print(xasr.transcribe(model, ["hola.wav"]))

A training call's recipe is ``xasr.config.TrainConfig``: ``recipe`` (a TrainConfig, a mapping
of its keys or a YAML file of them) and keyword arguments of its keys over it; decoding calls
take ``xasr.decode.options.DecodingOptions`` keys (``decoder``, ``lm``, ``beam_width``, ...).
Training and transfer are ``train_model`` and ``transfer_model``: ``xasr.train`` and
``xasr.transfer`` are subpackages, and importing one would bind its name over a function's.
Each call imports what it needs when called, so that ``import xasr`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing these at run time would import torch
    from xasr.config import TrainConfig
    from xasr.decode.transcribe import Recognizer
    from xasr.train.loop import TrainResult

Manifests = str | Path | Sequence[str | Path]  # one manifest or several


def load_model(model: str | Path = "en-small") -> Recognizer:
    """A model ready to transcribe, on the CPU: a model directory, a run directory (its
    ``model/``) or a shipped model's name (en-small). Returns a
    ``xasr.decode.transcribe.Recognizer``: ``.model`` (the torch module), ``.config``,
    ``.vocab``, ``.masks`` (language masks of a sparse-sharing model, else None)."""
    from xasr.decode.transcribe import Recognizer

    return Recognizer.load(model)


def transcribe(
    model: str | Path | Recognizer,
    audio: str | Path | Sequence[str | Path],
    device: str | None = None,
    lang: str | None = None,
    **decoding: Any,
) -> str | list[str]:
    """The text of an audio file (``audio`` a path), or of each of several in order (a list).

    ``model``: what ``load_model`` returned, or what it reads. ``device``: "cpu", "cuda" or
    "cuda:N" (default: CUDA where there is one). ``lang``: a sparse-sharing model's language.
    ``decoding``: ``DecodingOptions`` keys, e.g. ``decoder="attention"``, ``lm="lm.bin"``
    (default: the model's own greedy decoding)."""
    from xasr.decode.transcribe import transcribe_files

    one = isinstance(audio, (str, Path))
    files = [audio] if one else list(audio)
    texts = transcribe_files(model, files, decoding_options(decoding), device, lang)
    return texts[0] if one else texts


def evaluate(
    model: str | Path | Recognizer,
    manifest: str | Path,
    device: str | None = None,
    output: str | Path | None = None,
    lang: str | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    **decoding: Any,
) -> dict:
    """WER and CER (``"wer"``, ``"cer"``; per language under ``"by_language"`` when the
    manifest mixes languages) of ``model`` on ``manifest``, decoded as ``decoding``
    (``DecodingOptions`` keys) says; ``output``: also write them as JSON, with every
    hypothesis. ``lang``: a sparse-sharing model's language for every line (default: each
    line's). ``skip_bad``: drop (and count) unreadable lines instead of stopping."""
    from xasr.decode.evaluate import evaluate as evaluate_manifest
    from xasr.decode.transcribe import Recognizer

    return evaluate_manifest(
        model.name if isinstance(model, Recognizer) else model,  # loaded again from its name
        manifest,
        device=device,
        output=output,
        skip_bad=skip_bad,
        progress=progress,
        decoding=decoding_options(decoding),
        mask_lang=lang,
    )


def train_model(
    out: str | Path,
    train: Manifests,
    valid: Manifests,
    size: str = "small",
    arch: str = "ctc",
    recipe: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    **recipe_keys: Any,
) -> TrainResult:
    """Train a model from scratch in ``out`` (run again to resume); its best dev checkpoint is
    exported to ``out/model`` (``result.model_dir``).

    ``train``/``valid``: a manifest or several (training sources mixed as the recipe's
    ``mixing`` says; dev sets scored per language). ``size``: small, medium, xsmall, tiny;
    ``arch``: "ctc" or "aed" (an attention encoder-decoder). ``recipe`` and ``recipe_keys``:
    see ``xasr.config.train_recipe``, e.g. ``max_steps=500``."""
    from xasr.config import train_recipe
    from xasr.models.build import model_config
    from xasr.train.loop import train as train_run

    cfg = train_recipe(recipe, **recipe_keys)
    model_cfg = model_config(size, arch)
    return train_run(out, train, valid, cfg, model_cfg, skip_bad=skip_bad, progress=progress)


def transfer_model(
    out: str | Path,
    train: Manifests,
    valid: Manifests,
    source: str | Path = "en-small",
    arch: str | None = None,
    size: str | None = None,
    source_test: str | Path | None = None,
    target_test: str | Path | None = None,
    recipe: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    **recipe_keys: Any,
) -> TrainResult:
    """Fine-tune ``source`` (a model directory, a run directory or a shipped name) into the
    language or domain of ``train`` in ``out`` (run again to resume); the best dev checkpoint
    is exported to ``out/model`` (``result.model_dir``). The vocabulary becomes the target's,
    tokens both share keeping their trained output rows.

    ``arch``/``size``: another architecture for the target (``"aed"`` from a CTC source takes
    the encoder); default the source's. ``source_test``/``target_test``: test manifests scored
    by the source and by the transferred model after training, saved in
    ``out/forgetting.json``. ``recipe`` and ``recipe_keys``: see ``xasr.config.train_recipe``.
    Replay, L2-SP, EWC, layer surgery, masks and the speech-translation chain are in
    ``xasr.transfer`` (``finetune.transfer``, ``st.st_enhanced_transfer``)."""
    from xasr.config import train_recipe
    from xasr.transfer.architecture import requested_architecture
    from xasr.transfer.finetune import TransferOptions
    from xasr.transfer.finetune import transfer as transfer_run
    from xasr.transfer.forgetting import check_before_after, compare_with_source

    cfg = train_recipe(recipe, **recipe_keys)
    opts = TransferOptions(source=str(source), expect=requested_architecture(source, arch, size))
    tests = {
        name: path for name, path in (("source", source_test), ("target", target_test)) if path
    }
    check_before_after(source, tests)
    result = transfer_run(out, train, valid, opts, cfg, skip_bad=skip_bad, progress=progress)
    compare_with_source(out, source, result.model_dir, tests, progress)
    return result


def decoding_options(keys: Mapping[str, Any]):
    """``DecodingOptions`` of ``keys``, an unknown key refused by name."""
    from xasr.config import from_dict
    from xasr.decode.options import DecodingOptions

    return from_dict(DecodingOptions, dict(keys), "decoding options")
