"""Importers of pretrained encoders: a Hugging Face model directory (``save_pretrained``) or a
CTranslate2 Whisper directory (``xasr.models.pretrained.ctranslate2``) becomes a
``PretrainedCtcModel`` (``xasr.models.pretrained.modules``) with its config and, for a
``...ForCTC`` directory, its vocabulary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from xasr.config import PRETRAINED_FAMILIES, PretrainedConfig
from xasr.data.vocab import BLANK, SPACE, UNK, CharVocab
from xasr.errors import CheckpointError
from xasr.models.pretrained.ctranslate2 import import_ctranslate2_whisper
from xasr.models.pretrained.modules import assemble, saved_hf_config, transformers_module

log = logging.getLogger(__name__)


def foreign_kind(directory: Path) -> str | None:
    """``"hf"`` for a Hugging Face model directory, ``"ctranslate2"`` for a CTranslate2 one
    (``model.bin``), None for anything else (an xasr model directory)."""
    config = directory / "config.json"
    data = read_json(config) if config.is_file() else {}
    if "model" in data:
        return None
    if "model_type" in data:
        return "hf"
    return "ctranslate2" if (directory / "model.bin").is_file() else None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def import_pretrained(directory: str | Path):
    """(model, cfg, vocab) of a Hugging Face or CTranslate2 directory; vocab is None when the
    directory has no CTC head (a fresh head is added by the transfer)."""
    directory = Path(directory)
    if foreign_kind(directory) == "ctranslate2":
        return import_ctranslate2_whisper(directory)
    return import_hf(directory)


def import_hf(directory: Path):
    transformers = transformers_module()
    data = read_json(directory / "config.json")
    family = data.get("model_type")
    if family not in PRETRAINED_FAMILIES:
        raise CheckpointError(
            f"{directory}: a Hugging Face {family!r} model; xasr imports "
            f"{', '.join(PRETRAINED_FAMILIES)} (with or without a CTC head)"
        )
    ctc = any(a.endswith("ForCTC") for a in data.get("architectures") or [])
    head = vocab = None
    if family == "whisper":
        hf = transformers.WhisperModel.from_pretrained(directory, local_files_only=True).encoder
    elif ctc:
        full = transformers.AutoModelForCTC.from_pretrained(directory, local_files_only=True)
        hf, head = getattr(full, full.base_model_prefix), full.lm_head
    else:
        hf = transformers.AutoModel.from_pretrained(directory, local_files_only=True)
    cfg = PretrainedConfig(
        family=family,
        hf_config=saved_hf_config(hf.config),
        normalize_waveform=do_normalize(directory),
        source=str(directory),
    )
    if head is not None:
        vocab, head = ctc_vocab(directory, head, hf.config)
    model = assemble(cfg, hf, len(vocab) if vocab else 2, head)
    log.info("imported %s (%s%s)", directory, family, ", with its CTC head" if vocab else "")
    return model.float().eval(), cfg, vocab


def has_ctc_head(directory: str | Path) -> bool:
    """Whether a model directory comes with a CTC head (and vocabulary): an xasr directory or
    a Hugging Face ...ForCTC one does; an encoder alone does not (read without loading it)."""
    directory = Path(directory)
    kind = foreign_kind(directory)
    if kind == "hf":
        archs = read_json(directory / "config.json").get("architectures") or []
        return any(a.endswith("ForCTC") for a in archs)
    return kind is None


def do_normalize(directory: Path) -> bool:
    """Whether the feature extractor normalises each waveform (preprocessor_config.json;
    wav2vec2's default, True, when the file is absent)."""
    path = directory / "preprocessor_config.json"
    return bool(read_json(path).get("do_normalize", True)) if path.is_file() else True


@torch.no_grad()
def ctc_vocab(directory: Path, lm_head: nn.Linear, config) -> tuple[CharVocab, nn.Linear]:
    """An xasr vocabulary of a ...ForCTC directory's ``vocab.json`` and its head's rows in that
    order: the pad token (the CTC blank) first, then the unknown token (a fresh row, never
    chosen, if there is none), then the others; ``|`` stays the space; letters are lower-cased
    unless that would merge two tokens."""
    path = directory / "vocab.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: a CTC model without vocab.json (its head's tokens)")
    table = read_json(path)
    if table and all(isinstance(v, dict) for v in table.values()):  # {lang: {token: id}}
        raise CheckpointError(f"{path}: one vocabulary per language; pass a one-language model")
    by_id = {int(i): str(t) for t, i in table.items()}
    blank = getattr(config, "pad_token_id", 0) or 0
    unknown = next((i for i, t in by_id.items() if t in ("<unk>", "[UNK]")), None)
    others = [i for i in sorted(by_id) if i not in (blank, unknown) and i < lm_head.out_features]
    names = [by_id[i] for i in others]
    lowered = [n.lower() for n in names]
    if len(set(lowered)) == len(lowered) and not {BLANK, UNK} & set(lowered):
        names = lowered
    order = [blank, unknown, *others]
    head = nn.Linear(lm_head.in_features, len(order))
    for row, source in enumerate(order):
        if source is None:  # no unknown token: a row that never wins
            head.weight[row].zero_()
            head.bias[row] = lm_head.bias.min() - 10.0
        else:
            head.weight[row] = lm_head.weight[source]
            head.bias[row] = lm_head.bias[source]
    tokens = [BLANK, UNK, *(SPACE if n == "|" else n for n in names)]
    return CharVocab(tokens), head
