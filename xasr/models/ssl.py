"""Continued self-supervised pre-training of a wav2vec2 model on untranscribed speech: the
contrastive task of wav2vec 2.0 (Baevski et al. 2020), through transformers'
``Wav2Vec2ForPreTraining`` (its quantizer, projections and loss), on any language's audio.

``Wav2Vec2Pretraining`` is a model of xasr's training protocol (``loss(batch, augment)``), so
the ordinary training loop, checkpoints, resume and language masks (``xasr.models.masks``)
apply to it. Its shared parts carry the names they have in ``PretrainedCtcModel``
(``frontend.feature_extractor.*``, ``frontend.feature_projection.*``, ``encoder.*``): masks
found on the CTC model of the same encoder fit it, and the weights it trains are the ones a
later CTC transfer starts from. The parts needed only here (``quantizer``, ``project_hid``,
``project_q``, ``masked_spec_embed``) sit beside them.

A directory of this kind is a Hugging Face ``...ForPreTraining`` one (``save_pretrained``):
continued pre-training reads one and writes one, and ``--from`` accepts it for a transfer.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xasr import checks
from xasr.data.audio import SAMPLE_RATE
from xasr.errors import CheckpointError
from xasr.io import output_dir, write_text
from xasr.models.pretrained.importers import do_normalize, read_json
from xasr.models.pretrained.modules import ConvFeatureFrontend, WaveformNorm, transformers_module

# Families whose Hugging Face implementation has a pre-training head (HuBERT's has none).
PRETRAINING_CLASSES = {
    "wav2vec2": "Wav2Vec2ForPreTraining",
    "wav2vec2-conformer": "Wav2Vec2ConformerForPreTraining",
}


@dataclass(frozen=True)
class SslOptions:
    """The masking of the contrastive task and the quantizer's temperature.

    ``mask_prob``/``mask_length``: the share of frames that start a masked span and the span's
    length (0.65 and 10 in wav2vec 2.0's pre-training; the configs of fine-tuned checkpoints
    carry fine-tuning's 0.05, so the config's value is not used). ``gumbel_temperature``: the
    quantizer's Gumbel-softmax temperature, held fixed at the end of wav2vec 2.0's schedule
    (2 decayed to 0.5): the model continues a pre-training that has converged.
    """

    mask_prob: float = 0.65
    mask_length: int = 10
    gumbel_temperature: float = 0.5

    def __post_init__(self):
        checks.number("mask_prob", self.mask_prob, above=0, below=1)
        checks.integer("mask_length", self.mask_length, at_least=1)
        checks.number("gumbel_temperature", self.gumbel_temperature, above=0)


class Wav2Vec2Pretraining(nn.Module):
    """``loss(batch)`` -> (the contrastive + diversity loss per masked frame, its parts):
    a Hugging Face ``...ForPreTraining`` model wrapped in xasr's training protocol
    (``xasr.models.protocol.TrainableModel``)."""

    has_ctc = has_decoder = False  # nothing to decode: the task's validation is its loss

    def __init__(
        self,
        pretraining: nn.Module,
        normalize: bool,
        options: SslOptions,
        saved_config: dict | None = None,
    ):
        super().__init__()
        base = getattr(pretraining, pretraining.base_model_prefix)
        self.features = WaveformNorm(normalize)
        self.frontend = ConvFeatureFrontend(
            base.feature_extractor, base.feature_projection, base.config
        )
        self.encoder = base.encoder
        # the parts only pre-training has; every module of ``pretraining`` is now registered
        # here once, by one name (``functional_call``, which masks use, mishandles a module
        # reachable by two names), and ``pretraining`` itself is kept out of the module tree
        self.quantizer = pretraining.quantizer
        self.project_hid = pretraining.project_hid
        self.project_q = pretraining.project_q
        self.masked_spec_embed = base.masked_spec_embed
        self._hf = (pretraining,)
        self.options = options
        # the config values loading changed for this task, written back as they were on save
        self.saved_config = dict(saved_config or {})
        pretraining.set_gumbel_temperature(options.gumbel_temperature)

    @property
    def pretraining(self) -> nn.Module:
        """The Hugging Face ``...ForPreTraining`` model, whose modules are this one's."""
        return self._hf[0]

    @property
    def config(self):
        return self.pretraining.config

    def _sync_mode(self) -> None:
        """The train/eval flag of the Hugging Face modules outside this module tree (the
        model, its base, the features' dropout): Lightning sets and restores the flags of the
        modules it sees, not theirs."""
        for module in self.pretraining.modules():
            module.training = self.training

    def loss(self, batch: dict, augment=None) -> tuple[Tensor, dict[str, Tensor]]:
        """``batch["audio"]`` (batch, samples), ``batch["audio_lengths"]`` (batch,); the texts
        are not read. ``augment`` is ignored: masking frames is the task itself."""
        self._sync_mode()
        audio, lengths = self.features(batch["audio"], batch["audio_lengths"])
        masked, negatives = self.sample_targets(lengths, audio.shape[1])
        # Group-norm feature encoders (wav2vec2-base) normalise over the padded length and
        # were pre-trained without an attention mask (Hugging Face's advice): padded zeros.
        layer_norm = self.config.feat_extract_norm == "layer"
        samples = torch.arange(audio.shape[1], device=audio.device) < lengths[:, None]
        out = self.pretraining(
            audio,
            attention_mask=samples.long() if layer_norm else None,
            mask_time_indices=masked.to(audio.device),
            sampled_negative_indices=negatives.to(audio.device),
        )
        # Hugging Face sums both terms over the masked frames
        frames = masked.sum().clamp(min=1).to(out.loss.device)
        parts = {
            "contrastive": out.contrastive_loss / frames,
            "diversity": out.diversity_loss / frames,
            "frames": frames,
        }
        return out.loss / frames, parts

    def sample_targets(self, lengths: Tensor, samples: int) -> tuple[Tensor, Tensor]:
        """(masked frames (batch, frames) bool, negatives' flat indices (batch, frames, K)):
        spans masked within each utterance's frames, K distractors drawn among the masked
        frames of the same utterance (numpy's generator, saved in xasr's checkpoints)."""
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            _compute_mask_indices,
            _sample_negative_indices,
        )

        frames = self.frames(lengths.cpu())
        total = int(self.frames(torch.tensor(samples)))
        valid = (torch.arange(total) < frames[:, None]).long()
        masked = _compute_mask_indices(
            (len(lengths), total),
            self.options.mask_prob,
            self.options.mask_length,
            attention_mask=valid,
            min_masks=2,
        )
        negatives = _sample_negative_indices(
            (len(lengths), total), self.config.num_negatives, masked
        )
        return torch.from_numpy(masked), torch.from_numpy(negatives.astype(np.int64))

    def frames(self, samples: Tensor) -> Tensor:
        """The feature encoder's frame count for these sample counts (any shape)."""
        base = getattr(self.pretraining, self.pretraining.base_model_prefix)
        return base._get_feat_extract_output_lengths(samples).long()

    def vocab_params(self) -> dict[str, int]:
        return {}  # no vocabulary: nothing for masks (``prunable_names``) to leave out

    def fixed_parameters(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.named_parameters() if not p.requires_grad)

    def save(self, directory: str | Path, extra_files=()) -> Path:
        """A Hugging Face ``...ForPreTraining`` directory, with its preprocessor config; its
        config as loaded (the masking and LayerDrop this task changed put back).
        ``extra_files``: functions ``write(directory)`` of more files. All is written into
        ``DIR.tmp`` first, then renamed into place: a kill leaves the previous one whole."""
        directory = Path(directory)
        staging = output_dir(directory.with_name(directory.name + ".tmp"))
        config = self.pretraining.config
        changed = {k: getattr(config, k) for k in self.saved_config}
        try:
            for key, value in self.saved_config.items():
                setattr(config, key, value)
            self.pretraining.save_pretrained(staging, safe_serialization=True)
        finally:
            for key, value in changed.items():
                setattr(config, key, value)
        preprocessor = {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "do_normalize": self.features.normalize,
            "sampling_rate": SAMPLE_RATE,
            "feature_size": 1,
            "padding_value": 0.0,
            "return_attention_mask": self.config.feat_extract_norm == "layer",
        }
        write_text(staging / "preprocessor_config.json", json.dumps(preprocessor, indent=1))
        for write in extra_files:
            write(staging)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        staging.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
        return directory


def load_for_pretraining(
    directory: str | Path, options: SslOptions | None = None
) -> Wav2Vec2Pretraining:
    """A Hugging Face wav2vec2(-conformer) ``...ForPreTraining`` directory, ready to train:
    its feature encoder frozen (as in fine-tuning; wav2vec 2.0 pre-training scaled its
    gradient down instead), LayerDrop off (DDP refuses a parameter without a gradient)."""
    options = options or SslOptions()
    cls = pretraining_class(directory)
    changes = {
        "layerdrop": 0.0,
        "apply_spec_augment": True,
        "mask_time_prob": options.mask_prob,
        "mask_time_length": options.mask_length,
    }
    loaded = cls.config_class.from_pretrained(directory, local_files_only=True)
    saved_config = {key: getattr(loaded, key) for key in changes}
    # masking on, at this task's rate: the config's (fine-tuning's, or 0 with no
    # masked_spec_embed built at all) is not what continued pre-training masks with
    pretraining = cls.from_pretrained(directory, local_files_only=True, **changes)
    pretraining.freeze_feature_encoder()
    model = Wav2Vec2Pretraining(pretraining, do_normalize(Path(directory)), options, saved_config)
    return model.float().train()


def pretraining_class(directory: str | Path):
    """The transformers class of ``directory``'s pre-training model, from its config.json
    alone; ``CheckpointError`` naming the directory when it has none."""
    directory = Path(directory)
    config = directory / "config.json"
    data = read_json(config) if config.is_file() else {}
    family = data.get("model_type")
    if family not in PRETRAINING_CLASSES:
        raise CheckpointError(
            f"{directory}: continued pre-training needs a Hugging Face "
            f"{' or '.join(PRETRAINING_CLASSES)} directory, got "
            f"{repr(family) if family else 'no Hugging Face config.json'}"
        )
    wanted = PRETRAINING_CLASSES[family]
    if wanted not in (data.get("architectures") or []):
        raise CheckpointError(
            f"{directory}: a {'/'.join(data.get('architectures') or ['?'])} model has no "
            f"quantizer; continued pre-training needs a {wanted} checkpoint (one saved from "
            "pre-training, as facebook/wav2vec2-base or an XLS-R checkpoint)"
        )
    return getattr(transformers_module(), wanted)
