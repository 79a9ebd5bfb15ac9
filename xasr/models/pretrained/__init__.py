"""Speech encoders pretrained by others, from a directory on disk, behind the model protocol.

``xasr transfer --from DIR`` (and ``evaluate``, ``transcribe``) accept a Hugging Face model
directory (``save_pretrained``) of these families, or a CTranslate2 Whisper directory as
faster-whisper keeps it (``ctranslate2``):

| family | Hugging Face model | features | front end | encoder |
|---|---|---|---|---|
| wav2vec2 (XLS-R, MMS) | Wav2Vec2Model, Wav2Vec2ForCTC | the waveform (per-utterance normalised where the extractor does it) | feature_extractor (convolutions, 320x fewer frames), feature_projection | encoder (positional convolution, layers) |
| hubert | HubertModel, HubertForCTC | the same | the same | the same |
| wav2vec2-conformer | Wav2Vec2ConformerModel, ...ForCTC | the same | the same | the same |
| whisper | WhisperModel, WhisperForConditionalGeneration (its encoder) | Whisper's log-mel (``WhisperLogMel``), not padded to 30 s | conv1, conv2 (2x fewer frames), positions | layers, layer_norm |

Each becomes a ``PretrainedCtcModel``: an ordinary ``CtcModel`` (features, frontend, encoder,
head), so the token-aware head transfer, layer dropping and freezing (``encoder.layers``), the
forgetting remedies and the experiment grid work as for xasr's own models. A ``...ForCTC``
directory's head comes with its vocabulary (``vocab.json``): its rows are reordered into an xasr
vocabulary (the pad token is the CTC blank, ``|`` the space, letters lower-cased when that merges
nothing), so a transfer copies the rows of the tokens both vocabularies share. A directory
without a CTC head (Wav2Vec2Model, HuBERT, Whisper) gets a fresh head. The saved model directory
holds the Hugging Face config, so it loads without the original directory (transformers is
needed: the ``[hf]`` extra, which ``make`` installs).

SpecAugment (``TrainConfig.spec_augment``) masks Whisper's log-mel as it masks xasr's; for the
waveform families it masks time steps and channels of the feature projection's output (as
wav2vec2 fine-tuning masks its hidden states, with zeros rather than a learned embedding).

The package: ``modules`` (the network modules and ``PretrainedCtcModel``), ``importers`` (Hugging
Face directories, and which kind a directory is) and ``ctranslate2`` (CTranslate2 files, and
Whisper from them). Importers depend on the modules, never the reverse.
"""

from xasr.models.pretrained.importers import (
    ctc_vocab,
    do_normalize,
    foreign_kind,
    has_ctc_head,
    import_hf,
    import_pretrained,
    read_json,
)
from xasr.models.pretrained.modules import (
    ConvFeatureFrontend,
    PretrainedCtcModel,
    WaveformNorm,
    WhisperFrontend,
    WhisperLayers,
    WhisperLogMel,
    assemble,
    build_pretrained,
    hf_config,
    saved_hf_config,
    transformers_module,
)

__all__ = [
    "ConvFeatureFrontend",
    "PretrainedCtcModel",
    "WaveformNorm",
    "WhisperFrontend",
    "WhisperLayers",
    "WhisperLogMel",
    "assemble",
    "build_pretrained",
    "ctc_vocab",
    "do_normalize",
    "foreign_kind",
    "has_ctc_head",
    "hf_config",
    "import_hf",
    "import_pretrained",
    "read_json",
    "saved_hf_config",
    "transformers_module",
]
