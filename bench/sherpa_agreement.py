"""How often sherpa-onnx's transcripts equal xasr's, and the CER of each, on a test set.

The model (default: the shipped en-small) is exported with ``xasr export --format sherpa-onnx``
(``xasr.export.sherpa``) with ``--quantize int8``; sherpa-onnx's own recognizer transcribes the
manifest's utterances one stream each, and xasr (torch, greedy) transcribes them as
``xasr transcribe`` does. To tell what the differences come from, torch also transcribes the
audio with its mean removed, the one thing sherpa-onnx's input normalisation changes that the
graph cannot undo (``xasr.export.sherpa``'s docstring).

``--nemo`` adds the layout this export does not use: sherpa-onnx's NeMo CTC type, whose graph
starts at the kaldi-native-fbank features sherpa-onnx computes (its options fixed by the type:
periodic Hann window, librosa mel banks from 0 Hz to Nyquist, pre-emphasis, frames centred half
a hop later); the graph normalises them as xasr does and runs the rest of the model.

    python bench/sherpa_agreement.py --manifest data/en/test.jsonl [--model en-small]
        [--limit 500] [--nemo] [--out bench/results/sherpa-agreement.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import torch
from torch import Tensor, nn

from xasr.data.audio import SAMPLE_RATE, load_audio
from xasr.data.features import normalize_per_utterance
from xasr.data.manifest import read_manifest
from xasr.decode.evaluate import transcribe_paths
from xasr.decode.options import default_strategy
from xasr.export.onnx import export_proto, load_for_export
from xasr.export.sherpa import export_sherpa, sherpa_recognizer, sherpa_tokens, sherpa_transcribe
from xasr.models.build import load_model_dir


class NemoGraph(nn.Module):
    """features (batch, n_mels, frames) as sherpa-onnx's NeMo CTC type gives them, and their
    frame counts -> log-probabilities (batch, frames / 4, vocab)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, length: Tensor) -> Tensor:
        x = normalize_per_utterance(features.transpose(1, 2), length)
        x, frames = self.model.frontend(x, length)
        x, _ = self.model.encoder(x, frames)
        return self.model.ctc_log_probs(x)


def nemo_transcripts(model_name: str, audios: list[np.ndarray], folder: Path) -> list[str]:
    import onnx
    import sherpa_onnx

    model, _, vocab, _ = load_for_export(model_name)
    n_mels = model.features.filters.shape[1]
    feats, lengths = torch.randn(2, n_mels, 300), torch.tensor([300, 250])
    batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames", min=8)
    proto = export_proto(
        NemoGraph(model).eval(),
        (feats, lengths),
        18,
        input_names=["audio_signal", "length"],
        output_names=["logprobs"],
        dynamic_shapes={"features": {0: batch, 2: frames}, "length": {0: batch}},
    )
    meta = {"vocab_size": len(vocab), "subsampling_factor": 4, "normalize_type": "NA"}
    for key, value in (meta | {"model_type": "EncDecCTCModel"}).items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.save(proto, str(folder / "nemo.onnx"))
    (folder / "tokens.txt").write_text(sherpa_tokens(vocab), encoding="utf-8")
    recognizer = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
        model=str(folder / "nemo.onnx"), tokens=str(folder / "tokens.txt"), feature_dim=n_mels
    )
    return sherpa_transcribe(recognizer, audios, SAMPLE_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="en-small")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--nemo", action="store_true", help="also the NeMo CTC layout")
    parser.add_argument("--out", default="bench/results/sherpa-agreement.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    utterances = read_manifest(args.manifest)[: args.limit]
    refs = [u.text for u in utterances]
    audios = [load_audio(u.audio_filepath) for u in utterances]
    model, _, vocab = load_model_dir(args.model)
    durations = [len(a) / SAMPLE_RATE for a in audios]
    paths = [u.audio_filepath for u in utterances]
    texts = {"xasr": transcribe_paths(model, vocab, paths, durations)}
    with tempfile.TemporaryDirectory() as tmp:
        export = export_sherpa(args.model, Path(tmp) / "sherpa", quantize="int8")
        for side, int8 in (("sherpa", False), ("sherpa_int8", True)):
            recognizer = sherpa_recognizer(export["path"], int8=int8)
            texts[side] = sherpa_transcribe(recognizer, audios, SAMPLE_RATE)
        if args.nemo:
            texts["sherpa_nemo"] = nemo_transcripts(args.model, audios, Path(tmp))
    with torch.inference_mode():  # xasr on what sherpa-onnx's normalisation leaves: no mean
        no_mean = [torch.from_numpy(a - a.mean()) for a in audios]
        log_probs = [model(a[None], torch.tensor([len(a)])) for a in no_mean]
    texts["xasr_mean_removed"] = [
        default_strategy(model, vocab).decode_log_probs(lp, n)[0] for lp, n in log_probs
    ]
    result = {
        "model": args.model,
        "manifest": args.manifest,
        "utterances": len(refs),
        "export": export,
        "cer": {side: jiwer.cer(refs, hyp) for side, hyp in texts.items()},
        "equal_to_xasr": {
            side: sum(h == x for h, x in zip(hyp, texts["xasr"])) for side, hyp in texts.items()
        },
        "equal_sherpa_to_xasr_mean_removed": sum(
            s == x for s, x in zip(texts["sherpa"], texts["xasr_mean_removed"])
        ),
        "texts": texts,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    for side in texts:
        print(
            f"{side:<18} CER {100 * result['cer'][side]:6.2f} %  equal to xasr "
            f"{result['equal_to_xasr'][side]}/{len(refs)}"
        )
    print(
        "sherpa equal to xasr on mean-removed audio:", result["equal_sherpa_to_xasr_mean_removed"]
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
