"""Transcribing audio files with a model: a model directory, a run directory or a shipped name
loaded once (``Recognizer``), then decoded as ``DecodingOptions`` say (``xasr transcribe``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from xasr.data.audio import check_audio_files
from xasr.data.vocab import Vocab
from xasr.decode.evaluate import language_model
from xasr.decode.long_audio import LongAudioOptions, Recognition, Transcript
from xasr.decode.long_audio import transcribe_files as transcribe_long
from xasr.decode.options import DecodingOptions
from xasr.decode.recognition import torch_recognition
from xasr.device import torch_device
from xasr.models.build import load_model_dir, resolve_model
from xasr.models.masks import LanguageMasks


@dataclass(frozen=True)
class Recognizer:
    """A model loaded for decoding: the network (on the CPU, in eval mode), its config
    (``xasr.config.ARCHITECTURES``), its vocabulary, its language masks (a sparse-sharing model,
    ``xasr.models.masks``; None for most models), and the name it was loaded by."""

    model: nn.Module
    config: object
    vocab: Vocab
    masks: LanguageMasks | None
    name: str

    @classmethod
    def load(cls, model: str | Path) -> Recognizer:
        """A model directory, a run directory (its ``model/``) or a shipped name (en-small)."""
        network, config, vocab = load_model_dir(model)
        return cls(network, config, vocab, LanguageMasks.load(resolve_model(model)), str(model))

    def network(self, lang: str | None = None) -> nn.Module:
        """The model; with language masks, a copy that is ``lang``'s sub-network (a model with
        masks needs ``lang``)."""
        if self.masks is None:
            return self.model
        return language_model(self.model, self.masks, lang, self.name)

    def recognition(
        self,
        decoding: DecodingOptions | None = None,
        device: str | None = None,
        lang: str | None = None,
    ) -> Recognition:
        """This model as ``xasr.decode.long_audio`` decodes it (pieces, word times)."""
        model = self.network(lang)
        decoder = (decoding or DecodingOptions()).strategy(model, self.vocab)
        return torch_recognition(model, self.vocab, decoder, torch_device(device))

    def transcripts(
        self,
        files: Sequence[str | Path],
        decoding: DecodingOptions | None = None,
        device: str | None = None,
        lang: str | None = None,
        pieces: LongAudioOptions | None = None,
        progress: bool = False,
    ) -> list[Transcript]:
        """Each audio file's text and words with times, in order; a file longer than
        ``pieces.max_seconds`` (or the model's own limit) is split at pauses and stitched."""
        check_audio_files(files)
        recognition = self.recognition(decoding, device, lang)
        return transcribe_long(recognition, list(files), pieces, progress)

    def transcribe(
        self,
        files: Sequence[str | Path],
        decoding: DecodingOptions | None = None,
        device: str | None = None,
        lang: str | None = None,
    ) -> list[str]:
        """The text of each audio file, in order (``device``: ``xasr.device.torch_device``)."""
        return [t.text for t in self.transcripts(files, decoding, device, lang)]


def transcribe_files(
    model: str | Path | Recognizer,
    files: Sequence[str | Path],
    decoding: DecodingOptions | None = None,
    device: str | None = None,
    lang: str | None = None,
) -> list[str]:
    """The text of each audio file, in order, by ``model`` (a ``Recognizer`` or what
    ``Recognizer.load`` reads) decoded as ``decoding`` says (default: the model's own greedy
    decoding). Missing files and a bad ``device`` are refused before the model is loaded."""
    check_audio_files(files)
    torch_device(device)
    recognizer = model if isinstance(model, Recognizer) else Recognizer.load(model)
    return recognizer.transcribe(files, decoding, device, lang)
