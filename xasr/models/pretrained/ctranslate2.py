"""CTranslate2 model files read with numpy (no ctranslate2 at run time), and Whisper's encoder
from a CTranslate2 directory as faster-whisper keeps it (``model.bin``, ``config.json``,
``vocabulary.txt``).

``model.bin`` (binary version 6, little-endian): uint32 version; a string (uint16 length with
its NUL, UTF-8, NUL) naming the spec; uint32 spec revision; uint32 count of variables, each a
name string, uint8 rank, rank x uint32 dims, uint8 type (float32, int8, int16, int32, float16,
bfloat16), uint32 byte count, the bytes; uint32 count of aliases, each two strings (alias,
variable). Quantised weights (int8, int16) come with ``<name>_scale`` and are dequantised.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

from xasr.config import PretrainedConfig
from xasr.errors import CheckpointError
from xasr.models.pretrained.modules import assemble, saved_hf_config, transformers_module

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
BINARY_VERSIONS = (5, 6)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise CheckpointError(f"{self.path} is truncated (at byte {self.pos})")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("H")
        raw = self.data[self.pos : self.pos + n - 1]
        self.pos += n
        return raw.decode("utf-8")

    def array(self, dims: list[int], dtype: str, nbytes: int) -> np.ndarray:
        raw = self.data[self.pos : self.pos + nbytes]
        if len(raw) != nbytes:
            raise CheckpointError(f"{self.path} is truncated (at byte {self.pos})")
        self.pos += nbytes
        if dtype == "bfloat16":  # numpy has none: the top 16 bits of a float32
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(tuple(dims))
        return (
            np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(tuple(dims)).copy()
        )


def read_model_bin(path: str | Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """(spec name, spec revision, {variable: array}) of a CTranslate2 ``model.bin``; aliases
    resolved, quantised weights dequantised to float32, scalars as 0-d arrays."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    version = reader.take("I")
    if version not in BINARY_VERSIONS:
        raise CheckpointError(
            f"{path}: CTranslate2 binary version {version}; xasr reads {BINARY_VERSIONS}"
        )
    spec, revision = reader.string(), reader.take("I")
    variables = {}
    for _ in range(reader.take("I")):
        name = reader.string()
        dims = [reader.take("I") for _ in range(reader.take("B"))]
        type_id = reader.take("B")
        if type_id >= len(DTYPES):
            raise CheckpointError(f"{path}: variable {name} has unknown type {type_id}")
        variables[name] = reader.array(dims, DTYPES[type_id], reader.take("I"))
    for _ in range(reader.take("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
        if target + "_scale" in variables:  # a quantised weight's alias takes its scale too
            variables[alias + "_scale"] = variables[target + "_scale"]
    return spec, revision, dequantised(variables)


def dequantised(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 weights (one scale per row) and int16 ones (one scale) as float32."""
    out = {}
    for name, value in variables.items():
        if name.endswith("_scale"):
            continue
        scale = variables.get(name + "_scale")
        if scale is not None:
            scale = scale.astype(np.float32)
            value = value.astype(np.float32) / (scale[:, None] if scale.ndim else scale)
        out[name] = value
    return out


def write_model_bin(
    path: str | Path, spec: str, revision: int, variables: dict[str, np.ndarray]
) -> None:
    """Write ``variables`` as a CTranslate2 ``model.bin`` (binary version 6, no aliases):
    what the tests read back, and a way to hand small models to CTranslate2."""

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", 6), string(spec), struct.pack("<I", revision)]
    parts.append(struct.pack("<I", len(variables)))
    for name, value in sorted(variables.items()):
        value = np.array(value, order="C")  # (ascontiguousarray would make a scalar 1-d)
        parts += [string(name), struct.pack("<B", value.ndim)]
        parts += [struct.pack("<I", d) for d in value.shape]
        raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
        parts += [struct.pack("<B", DTYPES.index(value.dtype.name)), struct.pack("<I", len(raw))]
        parts.append(raw)
    parts.append(struct.pack("<I", 0))
    Path(path).write_bytes(b"".join(parts))


def whisper_encoder_state(variables: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(WhisperConfig keys, HF WhisperEncoder state dict) of a WhisperSpec's ``encoder/``
    variables. CTranslate2 fuses each layer's query, key and value projections into one
    (``linear_0``) and gives the key projection a zero bias, which Whisper does not have."""
    enc = {k.removeprefix("encoder/"): v for k, v in variables.items() if k.startswith("encoder/")}
    if "conv1/weight" not in enc:
        raise CheckpointError("a CTranslate2 Whisper model without encoder/conv1/weight")
    layers = sorted({int(m[1]) for k in enc if (m := re.match(r"layer_(\d+)/", k))})
    d_model, n_mels, _ = enc["conv1/weight"].shape
    state = {
        "conv1.weight": tensor(enc["conv1/weight"]),
        "conv1.bias": tensor(enc["conv1/bias"]),
        "conv2.weight": tensor(enc["conv2/weight"]),
        "conv2.bias": tensor(enc["conv2/bias"]),
        "embed_positions.weight": tensor(enc["position_encodings/encodings"]),
        "layer_norm.weight": tensor(enc["layer_norm/gamma"]),
        "layer_norm.bias": tensor(enc["layer_norm/beta"]),
    }
    for i in layers:
        src, dst = f"layer_{i}/", f"layers.{i}."
        q, k, v = np.split(enc[src + "self_attention/linear_0/weight"], 3)
        qb, _, vb = np.split(enc[src + "self_attention/linear_0/bias"], 3)
        pairs = {
            "self_attn.q_proj.weight": q,
            "self_attn.q_proj.bias": qb,
            "self_attn.k_proj.weight": k,
            "self_attn.v_proj.weight": v,
            "self_attn.v_proj.bias": vb,
            "self_attn.out_proj.weight": enc[src + "self_attention/linear_1/weight"],
            "self_attn.out_proj.bias": enc[src + "self_attention/linear_1/bias"],
            "self_attn_layer_norm.weight": enc[src + "self_attention/layer_norm/gamma"],
            "self_attn_layer_norm.bias": enc[src + "self_attention/layer_norm/beta"],
            "fc1.weight": enc[src + "ffn/linear_0/weight"],
            "fc1.bias": enc[src + "ffn/linear_0/bias"],
            "fc2.weight": enc[src + "ffn/linear_1/weight"],
            "fc2.bias": enc[src + "ffn/linear_1/bias"],
            "final_layer_norm.weight": enc[src + "ffn/layer_norm/gamma"],
            "final_layer_norm.bias": enc[src + "ffn/layer_norm/beta"],
        }
        state.update({dst + name: tensor(value) for name, value in pairs.items()})
    config = {
        "d_model": int(d_model),
        "num_mel_bins": int(n_mels),
        "encoder_layers": len(layers),
        "encoder_attention_heads": int(enc["num_heads"]),
        "encoder_ffn_dim": int(enc["layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(enc["position_encodings/encodings"].shape[0]),
    }
    return config, state


def tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def import_ctranslate2_whisper(directory: Path):
    """(model, cfg, None) of a CTranslate2 Whisper directory: its encoder with a fresh CTC head
    (Whisper's byte-level BPE vocabulary is its decoder's, not a CTC head's)."""
    spec, _, variables = read_model_bin(directory / "model.bin")
    if spec != "WhisperSpec":
        raise CheckpointError(
            f"{directory}/model.bin is a CTranslate2 {spec}; xasr imports WhisperSpec models"
        )
    keys, state = whisper_encoder_state(variables)
    transformers = transformers_module()
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    hf_cfg = transformers.WhisperConfig(**keys)
    encoder = WhisperEncoder(hf_cfg)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}/model.bin: encoder weights missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}"
        )
    cfg = PretrainedConfig(
        family="whisper", hf_config=saved_hf_config(hf_cfg), source=str(directory)
    )
    return assemble(cfg, encoder, 2).eval(), cfg, None
