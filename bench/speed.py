"""Speed of xasr's Conformer-CTC against Hugging Face's Wav2Vec2ConformerForCTC, same shapes.

    .venv/bin/python bench/speed.py                      # CPU, small and medium, a few minutes
    .venv/bin/python bench/speed.py --quick              # smoke run
    .venv/bin/python bench/speed.py --device cuda --json runs/speed-cuda.json
    .venv/bin/python bench/speed.py --profile            # + top ops of one training step

Needs `transformers` (pip install -e '.[bench]'); no network: the HF model is built from a config
with random weights.

Both models start from the same 80-dim log-mel frames (computed once with xasr's LogMel) and
a front end of the same shape and parameters (two stride-2 3x3 convolutions with SiLU, 4x fewer
frames, projection to d_model). xasr runs ``model.frontend`` -> ``model.encoder`` ->
``model.head``. HF has no log-mel front end, so ``hf-SIZE`` gets the textbook one as its input
adapter: the same convolutions over the whole padded batch, padding masked (as ESPnet and NeMo
write it; ``Conv2dSubsampling(per_utterance=False)``) -> ``wav2vec2_conformer.encoder`` (with its attention mask
for the padding) -> ``lm_head``; HF's CNN feature encoder and feature projection are skipped.
``hf-xfront-SIZE`` gets xasr's own front end instead (on CPU it convolves one utterance at a
time, cut to its length), so that ``xasr-SIZE/hf-xfront-SIZE`` compares the encoders alone.
The HF encoder gets the same width, depth, heads, feed-forward size, depthwise kernel, SiLU
("swish") activations, rotary positions, SDPA attention, and xasr's dropout in the same places:
``ModelConfig.dropout`` after the feed-forward activations and outputs, the attention output and
the convolution module, and
``ModelConfig.attention_dropout`` on the attention probabilities (HF's extra dropout on the encoder
input, LayerDrop and SpecAugment off). ``--dropout``/``--attention-dropout`` change both models.
Both compute log_softmax in fp32 and ``F.ctc_loss`` as in ``xasr.train.module``.

Measured in one process, the models interleaved over repetitions (the two models of a size back
to back, their order alternating) so that machine noise hits them alike; every ratio is the median
of the per-repetition ratios (the output also lists them, and best-vs-best, to judge the noise);
absolute numbers are for context only:

1. training throughput: audio seconds per wall second of forward + CTC loss + backward + AdamW
   step on a fixed batch, after warm-up;
2. inference real-time factor (wall seconds / audio seconds, lower is better) under
   ``torch.inference_mode()``, forward + log_softmax + greedy decoding, for one 8 s utterance and
   for the whole batch, with 1 thread and with all threads (CPU; on CUDA only the default);
3. peak memory of two training steps, each model in a fresh subprocess (run before the others
   so that nothing else competes): on CPU the growth of peak RSS (``VmHWM`` in /proc/self/status,
   which is ``ru_maxrss`` of this process image: ``getrusage``'s ``ru_maxrss`` itself survives
   ``exec`` and would report the parent's peak) from a baseline after imports and batch creation,
   i.e. weights + gradients + AdamW state + activations + allocator slack; on CUDA the growth of
   ``torch.cuda.max_memory_allocated`` likewise;
4. this machine's matmul rate (fp32 on CPU, bf16 on CUDA, probed between the training
   repetitions) and each model's forward+backward FLOPs per step from
   ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention), giving
   model-FLOPs utilisation = FLOPs per step / step time / matmul rate.

``--compile`` applies ``torch.compile`` to both encoders through ``prepare_xasr``/``prepare_hf``,
the hooks where xasr-side optimisations plug in. ``--relative`` adds HF with relative positions.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from xasr.config import ModelConfig
from xasr.data.audio import SAMPLE_RATE
from xasr.data.features import LogMel, padding_mask
from xasr.decode.greedy import greedy_ids
from xasr.models.build import build_model, count_parameters, model_config
from xasr.models.ctc import CtcModel
from xasr.models.frontends import Conv2dSubsampling
from xasr.train.module import make_adamw

VOCAB_SIZE = 40  # index 0 is the CTC blank
CHARS_PER_SECOND = 12.0
SEED = 0


# ------------------------------------------------------------------------------------------------
# Hooks: where xasr-side optimisations plug in (the HF side gets the same treatment for fairness).


def prepare_xasr(model: CtcModel, compile: bool) -> CtcModel:
    """Apply xasr's speed options to a freshly built model before it is measured.

    ``compile``: ``torch.compile`` the encoder (the front end and head are small).
    """
    if compile:
        model.encoder = torch.compile(model.encoder)
    return model


def prepare_hf(encoder: nn.Module, compile: bool) -> nn.Module:
    """The HF counterpart of ``prepare_xasr``: the same treatment of the encoder."""
    return torch.compile(encoder) if compile else encoder


# ------------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """Log-mel frames, CTC targets and the audio duration they stand for."""

    feats: Tensor  # (batch, frames, n_mels)
    feat_lengths: Tensor  # (batch,)
    targets: Tensor  # (batch, max_target) padded with 0
    target_lengths: Tensor  # (batch,)
    durations: list[float]

    @property
    def audio_seconds(self) -> float:
        return sum(self.durations)

    def to(self, device: str) -> Batch:
        return Batch(
            self.feats.to(device),
            self.feat_lengths.to(device),
            self.targets.to(device),
            self.target_lengths.to(device),
            self.durations,
        )


def make_batch(durations: list[float], generator: torch.Generator, n_mels: int = 80) -> Batch:
    """Random-noise 16 kHz audio of the given durations -> xasr log-mel frames + random targets."""
    samples = torch.tensor([round(d * SAMPLE_RATE) for d in durations])
    audio = torch.randn(len(durations), int(samples.max()), generator=generator) * 0.1
    audio *= (torch.arange(audio.shape[1])[None, :] < samples[:, None]).float()
    with torch.no_grad():
        feats, feat_lengths = LogMel(n_mels)(audio, samples)
    target_lengths = torch.tensor([round(d * CHARS_PER_SECOND) for d in durations])
    targets = torch.randint(
        1, VOCAB_SIZE, (len(durations), int(target_lengths.max())), generator=generator
    )
    targets *= torch.arange(targets.shape[1])[None, :] < target_lengths[:, None]
    return Batch(feats, feat_lengths, targets, target_lengths, list(durations))


def make_batches(utterances: int, min_s: float, max_s: float) -> tuple[Batch, Batch]:
    """The training/inference batch (seeded random durations) and a single 8 s utterance."""
    gen = torch.Generator().manual_seed(SEED)
    durations = (min_s + (max_s - min_s) * torch.rand(utterances, generator=gen)).tolist()
    durations = [round(d, 2) for d in durations]
    return make_batch(durations, gen), make_batch([8.0], gen)


# ------------------------------------------------------------------------------------------------
# Models: both map (frames, lengths) -> (logits, output lengths)


class XasrFromFrames(nn.Module):
    """xasr's CtcModel without its ``features``: frontend -> encoder -> head."""

    def __init__(self, model: CtcModel):
        super().__init__()
        self.frontend, self.encoder, self.head = model.frontend, model.encoder, model.head

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.frontend(feats, lengths)
        x, lengths = self.encoder(x, lengths)
        return self.head(x), lengths


class HfFromFrames(nn.Module):
    """A Conv2d front end -> HF Wav2Vec2Conformer encoder (attention mask) -> lm_head."""

    def __init__(self, frontend: nn.Module, encoder: nn.Module, head: nn.Linear):
        super().__init__()
        self.frontend, self.encoder, self.head = frontend, encoder, head

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.frontend(feats, lengths)
        mask = padding_mask(lengths, x.shape[1])  # bool, True = valid frame
        x = self.encoder(x, attention_mask=mask).last_hidden_state
        return self.head(x), lengths


def attention_dropout_of(cfg: ModelConfig) -> float:
    """Dropout on the attention probabilities (older xasr configs used ``dropout`` there too)."""
    return getattr(cfg, "attention_dropout", cfg.dropout)


def xasr_config(size: str, dropout: float | None, attention_dropout: float | None) -> ModelConfig:
    """xasr's ModelConfig for ``size``, with the dropouts overridden where given."""
    cfg = model_config(size)
    if dropout is not None:
        cfg = replace(cfg, dropout=dropout)
    if attention_dropout is not None:
        if not hasattr(cfg, "attention_dropout") and attention_dropout != cfg.dropout:
            raise SystemExit("this xasr has no separate attention_dropout; use --dropout")
        if hasattr(cfg, "attention_dropout"):
            cfg = replace(cfg, attention_dropout=attention_dropout)
    return cfg


def hf_config(cfg: ModelConfig, positions: str, attn: str):
    """A Wav2Vec2ConformerConfig with xasr's shapes and dropouts. Its CNN feature encoder (unused
    here) is shrunk to one 8-channel layer so that building it costs nothing."""
    from transformers import Wav2Vec2ConformerConfig

    return Wav2Vec2ConformerConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_model * cfg.ff_mult,
        conv_depthwise_kernel_size=cfg.conv_kernel,
        hidden_act="swish",  # xasr: SiLU in the feed-forward and convolution modules
        position_embeddings_type=positions,
        hidden_dropout=cfg.dropout,  # feed-forward output (and the encoder input: see build_hf)
        activation_dropout=cfg.dropout,  # after the feed-forward activation
        attention_dropout=attention_dropout_of(cfg),  # probabilities (and output: see build_hf)
        conformer_conv_dropout=cfg.dropout,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        conv_dim=(8,),
        conv_stride=(5,),
        conv_kernel=(10,),
        attn_implementation=attn,
    )


def build_hf(
    cfg: ModelConfig, positions: str, compile: bool, xasr_frontend: bool = False
) -> tuple[nn.Module, str]:
    """HF model of the same size fed by the plain front end (or xasr's own); returns it and the
    attention backend."""
    from transformers import Wav2Vec2ConformerForCTC

    try:
        hf = Wav2Vec2ConformerForCTC(hf_config(cfg, positions, "sdpa"))
    except (ValueError, ImportError):  # a transformers without SDPA for this model
        hf = Wav2Vec2ConformerForCTC(hf_config(cfg, positions, "eager"))
    encoder = hf.wav2vec2_conformer.encoder
    # Built by HF's conformer encoder but never called in its forward: not part of the model.
    del encoder.pos_conv_embed
    # Dropout where xasr has it: HF reuses attention_dropout after the attention output, where
    # xasr applies `dropout`; xasr has none on the encoder input.
    encoder.dropout.p = 0.0
    for layer in encoder.layers:
        layer.self_attn_dropout.p = cfg.dropout
    # xasr's own front end, or the same convolutions and weights computed the textbook way:
    # the whole padded batch at once
    frontend = Conv2dSubsampling(
        cfg.n_mels,
        cfg.d_model,
        cfg.subsampling_channels,
        per_utterance=None if xasr_frontend else False,
    )
    model = HfFromFrames(frontend, prepare_hf(encoder, compile), hf.lm_head)
    return model, hf.config._attn_implementation


@dataclass
class Candidate:
    name: str  # e.g. xasr-small, hf-small, hf-xfront-small, hf-rel-small
    family: str  # xasr | hf
    size: str
    module: nn.Module
    params: int
    attn: str = "sdpa"
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)


def build_candidate(name: str, args: argparse.Namespace) -> Candidate:
    """``xasr-SIZE``, ``hf-SIZE`` (rotary positions), ``hf-xfront-SIZE`` (rotary, xasr's front
    end) or ``hf-rel-SIZE`` (relative positions)."""
    family, *rest = name.split("-")
    size = rest[-1]
    cfg = xasr_config(size, args.dropout, args.attention_dropout)
    torch.manual_seed(SEED)
    if family == "xasr":
        model = prepare_xasr(build_model(cfg, VOCAB_SIZE), args.compile)
        module, attn = XasrFromFrames(model), "sdpa"
    else:
        positions = "relative" if rest[0] == "rel" else "rotary"
        module, attn = build_hf(cfg, positions, args.compile, xasr_frontend="xfront" in rest)
    module.to(args.device)
    params = count_parameters(module)
    # The AdamW each side's trainer builds (the learning rate is irrelevant for speed): xasr's
    # make_adamw (fused on CPU), and HF Trainer's default for torch >= 2.8, adamw_torch_fused.
    if family == "xasr":
        opt = make_adamw(module.parameters(), 1e-4, 1e-3, args.device)
    else:
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=1e-3, fused=True)
    return Candidate(name, family, size, module, params, attn, opt)


# ------------------------------------------------------------------------------------------------
# The measured work


def autocast(device: str):
    """bf16 autocast on CUDA for both models; plain fp32 on CPU."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")


def loss_of(cand: Candidate, batch: Batch, device: str) -> Tensor:
    """Forward + fp32 log_softmax + CTC loss, as in xasr's training step."""
    with autocast(device):
        logits, lengths = cand.module(batch.feats, batch.feat_lengths)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.targets,
        lengths,
        batch.target_lengths,
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


def train_step(cand: Candidate, batch: Batch, device: str) -> None:
    """One optimisation step: forward, CTC loss, backward, AdamW step."""
    cand.module.train()
    loss_of(cand, batch, device).backward()
    cand.optimizer.step()
    cand.optimizer.zero_grad(set_to_none=True)


def infer(cand: Candidate, batch: Batch, device: str) -> list[list[int]]:
    """Inference: forward, log_softmax, greedy CTC decoding."""
    cand.module.eval()
    with torch.inference_mode(), autocast(device):
        logits, lengths = cand.module(batch.feats, batch.feat_lengths)
        return greedy_ids(F.log_softmax(logits.float(), dim=-1), lengths)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, calls: int = 1) -> float:
    """Wall seconds per call of ``fn`` (mean over ``calls`` back-to-back calls)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def rotated(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]


def interleaved(
    cands: list[Candidate], work, repeats: int, device: str, calls: int = 1, between=None
) -> dict[str, list[float]]:
    """Time ``work(cand)`` for every candidate in each repetition; returns {name: [seconds per
    repetition]}. The models compared (same size) run back to back, in an order that alternates
    between repetitions, so that a paired ratio sees the same machine state; the sizes rotate too.
    ``between()`` runs once per repetition (e.g. a matmul probe)."""
    groups: dict[str, list[Candidate]] = {}
    for cand in cands:
        groups.setdefault(cand.size, []).append(cand)
    times: dict[str, list[float]] = {c.name: [] for c in cands}
    for rep in range(repeats):
        for group in rotated(list(groups.values()), rep):
            for cand in rotated(group, rep):
                times[cand.name].append(timed(lambda c=cand: work(c), device, calls))
        if between is not None:
            between()
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over repetitions of numerator[i] / denominator[i]."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


# ------------------------------------------------------------------------------------------------
# Matmul rate and FLOPs


def matmul_rate(n: int, device: str, dtype: torch.dtype, calls: int = 3) -> float:
    """FLOP/s of an n x n @ n x n matmul (median of ``calls`` timings)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up (thread pool, cuBLAS handle)
    return statistics.median(2 * n**3 / timed(lambda: torch.mm(a, b), device) for _ in range(calls))


def matmul_sizes(device: str) -> tuple[list[int], torch.dtype]:
    return (
        ([2048, 4096, 8192], torch.bfloat16) if device == "cuda" else ([1024, 2048], torch.float32)
    )


def _register_cpu_flash_flops() -> None:
    """FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel (used when the
    attention has no dropout): count it with the same formulas."""
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    sdpa = flop_registry.get(aten._scaled_dot_product_flash_attention)
    sdpa_bwd = flop_registry.get(aten._scaled_dot_product_flash_attention_backward)
    if fwd is not None and fwd not in flop_registry and sdpa is not None:
        register_flop_formula(fwd, get_raw=True)(sdpa)  # already shape-wrapped
    if bwd is not None and bwd not in flop_registry and sdpa_bwd is not None:
        register_flop_formula(bwd, get_raw=True)(sdpa_bwd)


def train_flops(cand: Candidate, batch: Batch, device: str) -> tuple[int, dict[str, float]]:
    """Forward + backward FLOPs of one training step (matmuls, convolutions, attention), and
    the shares of the front end, encoder and head in the forward FLOPs (the backward's
    attribution to modules is unreliable: HF's encoder writes into its input in place)."""
    _register_cpu_flash_flops()
    cand.module.train()
    with FlopCounterMode(display=False) as counter:
        loss_of(cand, batch, device).backward()
    cand.optimizer.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        loss_of(cand, batch, device)
    counts, root = forward.get_flop_counts(), type(cand.module).__name__
    shares = {
        part: sum(counts.get(f"{root}.{part}", {}).values()) / forward.get_total_flops()
        for part in ("frontend", "encoder", "head")
    }
    return counter.get_total_flops(), shares


# ------------------------------------------------------------------------------------------------
# Peak memory, one fresh subprocess per model


def peak_bytes(device: str) -> int:
    """Peak memory so far: CUDA allocations, or the peak RSS of this process image (VmHWM;
    ``ru_maxrss`` as a fallback off Linux)."""
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory_worker(name: str, args: argparse.Namespace) -> dict:
    """Runs in the subprocess: growth of peak memory over two training steps of one model."""
    import transformers  # noqa: F401 - imported before the baseline, for both families alike

    batch, _ = make_batches(args.utterances, args.min_seconds, args.max_seconds)
    batch = batch.to(args.device)
    base = peak_bytes(args.device)
    cand = build_candidate(name, args)
    for _ in range(2):  # the second step holds the AdamW state too
        train_step(cand, batch, args.device)
    return {"name": name, "peak_bytes": peak_bytes(args.device) - base}


def worker_argv(name: str, args: argparse.Namespace) -> list[str]:
    """Command line of a memory subprocess: the same model options as this run."""
    cmd = [
        sys.executable,
        __file__,
        "--memory-worker",
        name,
        "--device",
        args.device,
        "--utterances",
        str(args.utterances),
        "--min-seconds",
        str(args.min_seconds),
        "--max-seconds",
        str(args.max_seconds),
    ]
    for option in ("dropout", "attention_dropout"):
        if getattr(args, option) is not None:
            cmd += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    return cmd + (["--compile"] if args.compile else [])


def measure_memory(names: list[str], args: argparse.Namespace) -> dict[str, float | None]:
    """Peak training memory (MiB) of each model, each in its own fresh Python process (None
    where that process failed)."""
    result = {}
    for name in names:
        cmd = worker_argv(name, args)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"memory worker for {name} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            result[name] = None
            continue
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20
    return result


# ------------------------------------------------------------------------------------------------
# Profile


def profile_step(cand: Candidate, batch: Batch, device: str, rows: int = 15) -> str:
    """torch.profiler table of the top ops (self time) of one training step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    train_step(cand, batch, device)
    with profile(activities=activities) as prof:
        train_step(cand, batch, device)
        sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


# ------------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict:
    """All four measurements for every model; returns the summary (see ``summarise``)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit("bench/speed.py needs transformers: pip install -e '.[bench]'") from None
    device = args.device
    started = time.perf_counter()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    names = []
    for size in sizes:
        names += [f"xasr-{size}", f"hf-{size}", f"hf-xfront-{size}"]
        names += [f"hf-rel-{size}"] if args.relative else []
    threads = torch.get_num_threads()

    def log(message: str) -> None:
        if args.verbose:
            print(
                f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True
            )

    # 3: memory first, each model in a fresh process, while this one is still small and idle.
    memory = measure_memory(names, args) if not args.no_memory else {}
    log(f"memory: {memory}")

    batch, single = make_batches(args.utterances, args.min_seconds, args.max_seconds)
    batch, single = batch.to(device), single.to(device)
    cands = [build_candidate(n, args) for n in names]

    # FLOPs (also the first warm-up step), then warm-up. A compiled model is counted on an
    # uncompiled twin: a first call under FlopCounterMode would leave it uncompiled for good.
    flops, flop_shares = {}, {}
    for cand in cands:
        counted = (
            build_candidate(cand.name, replace_args(args, compile=False)) if args.compile else cand
        )
        flops[cand.name], flop_shares[cand.name] = train_flops(counted, batch, device)
        log(f"flops {cand.name}: {flops[cand.name] / 1e9:.1f} GFLOP {flop_shares[cand.name]}")
    for step in range(args.warmup):
        for cand in cands:
            train_step(cand, batch, device)
        log(f"warm-up step {step + 1} done")

    # 1 + 4: training steps interleaved, with a matmul probe after each repetition.
    mm_sizes, mm_dtype = matmul_sizes(device)
    mm_rates: dict[int, list[float]] = {n: [] for n in mm_sizes}

    def probe():
        for n in mm_sizes:
            mm_rates[n].append(matmul_rate(n, device, mm_dtype))

    probe()
    step_times = interleaved(
        cands, lambda c: train_step(c, batch, device), args.repeats, device, between=probe
    )
    log(f"training steps timed: { {k: [round(t, 2) for t in v] for k, v in step_times.items()} }")

    # Profiles before inference: HF caches its rotary tables, made in inference mode there.
    profiles = {}
    if args.profile:
        for cand in cands:
            if cand.size == sizes[0] and not cand.name.startswith(("hf-rel", "hf-xfront")):
                profiles[cand.name] = profile_step(cand, batch, device)

    # 2: inference, batch 1 and the whole batch, 1 thread and all threads (CPU).
    settings = [("1t", 1), ("all", threads)] if device == "cpu" else [("all", threads)]
    rtf: dict[str, dict[str, list[float]]] = {c.name: {} for c in cands}
    for label, n_threads in settings:
        torch.set_num_threads(n_threads)
        for case, data, calls in (("b1", single, args.b1_calls), ("batch", batch, 1)):
            for _ in range(2 if args.compile else 1):  # warm-up (and recompiles: eval, shapes)
                for cand in cands:
                    infer(cand, data, device)
            times = interleaved(
                cands, lambda c, d=data: infer(c, d, device), args.infer_repeats, device, calls
            )
            for name, ts in times.items():
                rtf[name][f"{case}_{label}"] = [t / data.audio_seconds for t in ts]
            log(f"inference {case}_{label} timed")
    torch.set_num_threads(threads)

    raw = Raw(flops, flop_shares, step_times, mm_rates, mm_dtype, rtf, memory, profiles)
    return summarise(args, cands, batch, single, raw, threads, time.perf_counter() - started)


@dataclass
class Raw:
    """What ``run`` measured, before medians and ratios."""

    flops: dict[str, int]
    flop_shares: dict[str, dict[str, float]]
    step_times: dict[str, list[float]]
    mm_rates: dict[int, list[float]]
    mm_dtype: torch.dtype
    rtf: dict[str, dict[str, list[float]]]
    memory: dict[str, float | None]
    profiles: dict[str, str]


def summarise(args, cands, batch: Batch, single: Batch, raw: Raw, threads: int, elapsed) -> dict:
    """Everything as one JSON-able dict: per model (absolute) and per size (ratios)."""
    import transformers

    cfg = xasr_config(cands[0].size, args.dropout, args.attention_dropout)
    med = statistics.median
    mm = {str(n): med(r) for n, r in raw.mm_rates.items()}
    reference = max(mm.values())
    models = {}
    for cand in cands:
        step = med(raw.step_times[cand.name])
        models[cand.name] = {
            "params": cand.params,
            "attention": cand.attn,
            "train_step_s": step,
            "train_step_s_all": raw.step_times[cand.name],
            "train_audio_s_per_s": batch.audio_seconds / step,
            "train_gflop_per_step": raw.flops[cand.name] / 1e9,
            "train_flop_shares": raw.flop_shares[cand.name],
            "mfu": raw.flops[cand.name] / step / reference,
            "rtf": {k: med(v) for k, v in raw.rtf[cand.name].items()},
            "train_peak_mem_mib": raw.memory.get(cand.name),
        }
    ratios = {}
    by_name = {c.name: c for c in cands}
    for cand in cands:
        if cand.family == "xasr":
            for ref in (f"hf-{cand.size}", f"hf-xfront-{cand.size}", f"hf-rel-{cand.size}"):
                if ref in by_name:
                    ratios[f"{cand.name}/{ref}"] = pair_ratios(cand.name, ref, raw, models)
    small = ratios.get("xasr-small/hf-small", {}).get("train_throughput")
    medium = ratios.get("xasr-medium/hf-medium", {}).get("train_throughput")
    same_front = ratios.get("xasr-small/hf-xfront-small", {}).get("train_throughput")
    return {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "compile": args.compile,
        "dropout": cfg.dropout,
        "attention_dropout": attention_dropout_of(cfg),
        "repeats": args.repeats,
        "infer_repeats": args.infer_repeats,
        "warmup": args.warmup,
        "batch": {
            "utterances": len(batch.durations),
            "durations_s": batch.durations,
            "audio_seconds": batch.audio_seconds,
            "padded_frames": list(batch.feats.shape[:2]),
            "target_chars": int(batch.target_lengths.sum()),
            "single_utterance_s": single.audio_seconds,
        },
        "matmul_flop_per_s": mm,
        "matmul_dtype": str(raw.mm_dtype).removeprefix("torch."),
        "matmul_reference_flop_per_s": reference,
        "memory_method": "growth of torch.cuda.max_memory_allocated"
        if args.device == "cuda"
        else "growth of peak RSS (VmHWM) in a fresh process",
        "models": models,
        "ratios": ratios,
        "train_throughput_ratio_vs_hf": small,
        "train_throughput_ratio_vs_hf_medium": medium,
        # The encoders alone: HF fed by xasr's front end.
        "train_throughput_ratio_vs_hf_same_frontend": same_front,
        "profiles": raw.profiles,
        "elapsed_s": elapsed,
    }


def pair_ratios(x: str, h: str, raw: Raw, models: dict) -> dict:
    """xasr / HF: throughput and inference speed (>1: xasr faster), memory (<1: xasr smaller)."""
    step_times, rtf, memory = raw.step_times, raw.rtf, raw.memory
    mem = None
    if memory.get(x) and memory.get(h):
        mem = memory[x] / memory[h]
    per_rep = [hs / xs for hs, xs in zip(step_times[h], step_times[x], strict=True)]
    return {
        "train_throughput": statistics.median(per_rep),
        # For judging the noise: every repetition's ratio, and the ratio of the best times.
        "train_throughput_per_repetition": per_rep,
        "train_throughput_best_vs_best": min(step_times[h]) / min(step_times[x]),
        "infer_speed": {k: paired_ratio(rtf[h][k], rtf[x][k]) for k in rtf[x]},
        "infer_speed_best_vs_best": {k: min(rtf[h][k]) / min(rtf[x][k]) for k in rtf[x]},
        "memory": mem,
        "params": models[x]["params"] / models[h]["params"],
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


# ------------------------------------------------------------------------------------------------
# Output


def print_report(r: dict) -> None:
    b = r["batch"]
    rtf_keys = list(next(iter(r["models"].values()))["rtf"])
    print(
        f"\n== xasr vs HF Wav2Vec2ConformerForCTC: {r['device']} ({r['device_name']}), "
        f"{r['threads']} threads, torch {r['torch']}, transformers {r['transformers']} =="
    )
    print(
        f"batch: {b['utterances']} utterances, {b['audio_seconds']:.1f} s of audio "
        f"({min(b['durations_s']):.1f}-{max(b['durations_s']):.1f} s), padded frames "
        f"{b['padded_frames']}, {b['target_chars']} target tokens; single: "
        f"{b['single_utterance_s']:.0f} s"
    )
    attn = sorted({m["attention"] for n, m in r["models"].items() if n.startswith("hf")})
    print(
        f"dropout {r['dropout']}, attention dropout {r['attention_dropout']}, "
        f"compile {r['compile']}, HF attention {'/'.join(attn)}; training: {r['repeats']} "
        f"repetitions after {r['warmup'] + 1} warm-up steps, inference: {r['infer_repeats']} "
        "repetitions after warm-up calls; medians"
    )
    mm = ", ".join(f"{n}: {v / 1e9:.1f}" for n, v in r["matmul_flop_per_s"].items())
    print(f"matmul {r['matmul_dtype']} GFLOP/s: {mm}")

    print(
        "\nRATIOS xasr / HF (same run, median of per-repetition ratios; speed >1 = xasr "
        "faster, memory <1 = xasr smaller)"
    )
    head = f"{'pair':<26}{'train':>8}" + "".join(f"{'inf ' + k:>14}" for k in rtf_keys)
    print(head + f"{'memory':>9}{'params':>8}")
    for pair, q in r["ratios"].items():
        mem = f"{q['memory']:.2f}" if q["memory"] else "-"
        print(
            f"{pair:<26}{q['train_throughput']:>7.2f}x"
            + "".join(f"{q['infer_speed'][k]:>13.2f}x" for k in rtf_keys)
            + f"{mem:>9}{q['params']:>8.3f}"
        )
    print("noise check: per-repetition training ratios, and best time vs best time")
    for pair, q in r["ratios"].items():
        reps = " ".join(f"{v:.2f}" for v in q["train_throughput_per_repetition"])
        best = "".join(f"{q['infer_speed_best_vs_best'][k]:>13.2f}x" for k in rtf_keys)
        print(
            f"  {pair:<26} train [{reps}]; best/best: train "
            f"{q['train_throughput_best_vs_best']:.2f}x, inference{best}"
        )

    print("\nABSOLUTE (context only; RTF = wall s / audio s, lower is better)")
    head = (
        f"{'model':<16}{'params':>11}{'step s':>8}{'audio s/s':>10}{'GFLOP':>8}{'front':>7}{'MFU':>7}"
        + "".join(f"{'RTF ' + k:>14}" for k in rtf_keys)
        + f"{'peak MiB':>10}"
    )
    print(head)
    for name, m in r["models"].items():
        mem = m["train_peak_mem_mib"]
        print(
            f"{name:<16}{m['params']:>11,}{m['train_step_s']:>8.3f}"
            f"{m['train_audio_s_per_s']:>10.1f}{m['train_gflop_per_step']:>8.1f}"
            f"{m['train_flop_shares']['frontend']:>7.0%}{m['mfu']:>7.1%}"
            + "".join(f"{m['rtf'][k]:>14.4f}" for k in rtf_keys)
            + (f"{mem:>10.0f}" if mem is not None else f"{'-':>10}")
        )
    print(
        f"\n(front: the Conv2d front end's share of the FLOPs; peak MiB: {r['memory_method']}; "
        f"MFU against the best matmul rate above; total {r['elapsed_s']:.0f} s)"
    )
    for name, table in r["profiles"].items():
        print(f"\n-- profile of one training step: {name} --\n{table}")


def replace_args(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", default="small,medium", help="comma-separated xasr model sizes")
    p.add_argument(
        "--repeats",
        type=int,
        help="timed training repetitions (default 5, --quick 2; CUDA: 20, --quick 5)",
    )
    p.add_argument(
        "--infer-repeats",
        type=int,
        help="timed inference repetitions (default 3, --quick 1; CUDA: 10, --quick 3)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="warm-up training steps per model after the FLOP count (default 1; CUDA or "
        "--compile: 3)",
    )
    p.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile both encoders (see prepare_xasr; minutes of compiling on a CPU)",
    )
    p.add_argument(
        "--relative",
        action="store_true",
        help="also HF with relative positions (hf-rel-SIZE), for reference",
    )
    p.add_argument("--dropout", type=float, help="dropout for both models (default: xasr's)")
    p.add_argument(
        "--attention-dropout",
        type=float,
        help="dropout on attention probabilities, both models (default: xasr's)",
    )
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--min-seconds", type=float, default=4.0)
    p.add_argument("--max-seconds", type=float, default=12.0)
    p.add_argument("--b1-calls", type=int, default=3, help="calls per batch-1 timing")
    p.add_argument("--profile", action="store_true", help="top ops of one training step")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # A step takes seconds on 2 CPU cores but milliseconds on a GPU: more repetitions there.
    cuda = args.device == "cuda"
    if args.repeats is None:
        args.repeats = (5 if cuda else 2) if args.quick else (20 if cuda else 5)
    if args.infer_repeats is None:
        args.infer_repeats = (3 if cuda else 1) if args.quick else (10 if cuda else 3)
    if args.warmup is None:
        args.warmup = 3 if cuda or args.compile else 1
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args)))
        return
    result = run(args)
    print_report(result)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
