"""Training speed of xasr's attention encoder-decoder against Hugging Face's
Speech2TextForConditionalGeneration, same shapes.

    .venv/bin/python bench/aed_speed.py              # CPU, the small size, a few minutes
    .venv/bin/python bench/aed_speed.py --quick      # smoke run
    .venv/bin/python bench/aed_speed.py --device cuda --size medium

Needs `transformers` (pip install -e '.[bench]'); no network: both models have random weights.

Both start from the same 80-dim log-mel frames (xasr's LogMel, computed once) and train on the
same batch of random character targets (about 15 per second of audio, as speech has). One step
is forward + attention cross-entropy + backward + AdamW step. Candidates:

* ``xasr-aed``: xasr's AED in HF's shape: the convolutional front end (4x fewer frames), a
  Transformer encoder, the Transformer decoder, no CTC branch (Speech2Text has none), the same
  width, depth, heads and feed-forward size;
* ``hf-s2t``: Speech2Text with those sizes (its own front end: two stride-2 1-D convolutions;
  eager attention: transformers has no SDPA path for it);
* ``xasr-aed-default``: the named size as xasr ships it (VGG front end, Conformer encoder, CTC
  branch in the loss), for context: what the paper's shape costs.

Measured in one process, the candidates interleaved over repetitions (their order rotating) so
that machine noise hits them alike; the ratio is the median of the per-repetition ratios.
Absolute numbers are for context only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from xasr.config import AED_SIZES
from xasr.data.features import LogMel
from xasr.models.build import build_model, count_parameters
from xasr.train.module import make_adamw

VOCAB = 40  # a character vocabulary; the AED adds its start/end token
CHARS_PER_SECOND = 15


def make_batch(args, generator: torch.Generator) -> dict:
    seconds = torch.empty(args.utterances).uniform_(
        args.min_seconds, args.max_seconds, generator=generator
    )
    samples = (seconds * 16000).long()
    audio = torch.randn(len(samples), int(samples.max()), generator=generator) * 0.1
    audio *= torch.arange(audio.shape[1])[None, :] < samples[:, None]
    feats, frames = LogMel(80)(audio, samples)
    lengths = (seconds * CHARS_PER_SECOND).long()
    targets = torch.randint(2, VOCAB, (len(samples), int(lengths.max())), generator=generator)
    targets *= torch.arange(targets.shape[1])[None, :] < lengths[:, None]
    return {
        "feats": feats,
        "frames": frames,
        "targets": targets,
        "target_lengths": lengths,
        "audio_seconds": float(seconds.sum()),
    }


def xasr_loss(model):
    def loss(batch: dict) -> torch.Tensor:
        x, frames = model.frontend(batch["feats"], batch["frames"])
        states, frames = model.encoder(x, frames)
        inputs, outputs = model.teacher_forcing(batch["targets"], batch["target_lengths"])
        logits = model.decoder(inputs, states, frames).float()
        attention = F.cross_entropy(
            logits.flatten(0, 1), outputs.flatten(), ignore_index=-100, label_smoothing=0.1
        )
        if model.head is None:
            return attention
        ctc = F.ctc_loss(
            model.ctc_log_probs(states).transpose(0, 1),
            batch["targets"],
            frames,
            batch["target_lengths"],
            zero_infinity=True,
        )
        return model.ctc_weight * ctc + (1 - model.ctc_weight) * attention

    return loss


def build_hf(cfg, dropout: float):
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    hf_cfg = Speech2TextConfig(
        vocab_size=VOCAB + 1,
        d_model=cfg.d_model,
        encoder_layers=cfg.n_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads,
        decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.d_model * cfg.ff_mult,
        decoder_ffn_dim=cfg.d_model * cfg.ff_mult,
        conv_channels=cfg.subsampling_channels,
        conv_kernel_sizes=(5, 5),
        input_feat_per_channel=80,
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        max_source_positions=4096,
        max_target_positions=1024,
        pad_token_id=0,
        bos_token_id=VOCAB,
        eos_token_id=VOCAB,
        decoder_start_token_id=VOCAB,
        attn_implementation="eager",  # Speech2Text has no SDPA path (transformers 5)
    )
    model = Speech2TextForConditionalGeneration(hf_cfg)

    def loss(batch: dict) -> torch.Tensor:
        mask = torch.arange(batch["feats"].shape[1])[None, :] < batch["frames"][:, None]
        inputs, outputs = _shift(batch["targets"], batch["target_lengths"])
        out = model(
            input_features=batch["feats"],
            attention_mask=mask.long(),
            decoder_input_ids=inputs,
            labels=outputs,
        )
        return out.loss

    return model, loss


def _shift(targets, lengths):
    """[start, y...] and [y..., end] as xasr's teacher forcing makes them."""
    batch, width = targets.shape
    positions = torch.arange(width + 1)[None, :]
    start = torch.full((batch, 1), VOCAB)
    inputs = torch.cat([start, targets], dim=1)
    outputs = torch.cat([targets, torch.zeros_like(start)], dim=1)
    outputs = torch.where(positions == lengths[:, None], VOCAB, outputs)
    outputs = torch.where(positions > lengths[:, None], -100, outputs)
    return inputs, outputs


def candidates(args) -> dict:
    base = AED_SIZES[args.size]
    torch.manual_seed(0)
    same = replace(base, frontend="conv2d", encoder="transformer", ctc_weight=0.0)
    xasr = build_model(same, VOCAB).to(args.device).train()
    hf, hf_loss = build_hf(same, same.dropout)
    shipped = build_model(base, VOCAB).to(args.device).train()
    out = {
        "xasr-aed": (xasr, xasr_loss(xasr)),
        "hf-s2t": (hf.to(args.device).train(), hf_loss),
        "xasr-aed-default": (shipped, xasr_loss(shipped)),
    }
    return {
        name: {
            "model": model,
            "loss": loss,
            "optimizer": make_adamw(model.parameters(), 1e-4, 1e-3, args.device),
        }
        for name, (model, loss) in out.items()
    }


def train_step(cand: dict, batch: dict) -> None:
    loss = cand["loss"](batch)
    cand["optimizer"].zero_grad(set_to_none=True)
    loss.backward()
    cand["optimizer"].step()


def run(args) -> dict:
    torch.set_flush_denormal(True)
    batch = make_batch(args, torch.Generator().manual_seed(0))
    batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    cands = candidates(args)
    names = list(cands)
    for name in names:  # warm-up
        for _ in range(args.warmup):
            train_step(cands[name], batch)
    times = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            if args.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            train_step(cands[name], batch)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    seconds = batch["audio_seconds"]
    result = {
        "device": args.device,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "batch_audio_seconds": seconds,
        "utterances": args.utterances,
        "reps": args.reps,
        "models": {
            name: {
                "parameters": count_parameters(cands[name]["model"]),
                "step_seconds_median": statistics.median(times[name]),
                "audio_seconds_per_second": seconds / statistics.median(times[name]),
            }
            for name in names
        },
    }
    per_rep = [x / h for x, h in zip(times["xasr-aed"], times["hf-s2t"])]
    result["xasr_over_hf_step_time"] = statistics.median(per_rep)
    result["per_rep_ratios"] = per_rep
    return result


def print_report(r: dict) -> None:
    print(
        f"{r['device']}, {r['threads']} threads, size {r['size']}: a batch of {r['utterances']} "
        f"utterances, {r['batch_audio_seconds']:.0f} s of audio, {r['reps']} interleaved steps"
    )
    print(f"{'model':18} {'params':>9} {'step s':>8} {'audio s/s':>10}")
    for name, m in r["models"].items():
        print(
            f"{name:18} {m['parameters'] / 1e6:8.2f}M {m['step_seconds_median']:8.3f} "
            f"{m['audio_seconds_per_second']:10.1f}"
        )
    ratios = ", ".join(f"{x:.2f}" for x in r["per_rep_ratios"])
    print(
        f"xasr-aed / hf-s2t training step time: {r['xasr_over_hf_step_time']:.2f} "
        f"(median of per-step ratios: {ratios})"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--size", default="small", choices=sorted(AED_SIZES))
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--min-seconds", type=float, default=4.0)
    p.add_argument("--max-seconds", type=float, default=12.0)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny size, 3 steps: a smoke run")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.reps, args.warmup, args.utterances = "tiny", 3, 1, 2
    result = run(args)
    print_report(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
