"""The weights of an ONNX export: ternary codes packed for ORT, and one shared external-data file.

Two packed forms, both 2 bits a weight in the file (see `mmfree_cli.export.onnx` for why "nbits"
is the default):

- "nbits": onnxruntime's `com.microsoft.MatMulNBits` layout, bits=2, block_size=128, code = w + 2
  (the op's default zero point), `B: [N, n_blocks, 32]` uint8 with element j of a block in bits
  2·(j % 4) of byte j // 4, and `scales: [N · n_blocks]` all equal to β. Each block holds 127 real
  columns and one pad column (weight 0) whose activation the graph sets to 127: ORT's int8 path
  requantizes A per block with scale absmax/127, and a block that always contains 127 gets scale
  exactly 1, so the int8 activations we computed pass through unchanged and the accumulators are
  exact integers. The native 2-bit layout of `mmfree_cli.quant` (code w + 1, no pad columns) is
  not what this op reads, so the codes are laid out here.
- "dq": a standard ONNX `INT2` tensor `[K, N]` (W transposed, ready for MatMul) and β as the
  `DequantizeLinear` scale.

Both graphs (prefill and decode) name the same initializers; `ExternalWeights` writes each array
once into `weights.bin` and hands every graph a TensorProto pointing at its offset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from ...fileio import atomic_path

NBITS_BLOCK = 128
"""MatMulNBits block size: 2-bit blocks above 256 are refused by ORT and 128 measured fastest."""
NBITS_REAL = NBITS_BLOCK - 1
"""Real columns per block; the last column of every block is the 127 pad (see module docstring)."""
ALIGN = 4096
"""Offsets of tensors in weights.bin are page-aligned so a runtime may map them."""


def nbits_blocks(k: int) -> int:
    """How many 128-wide MatMulNBits blocks hold K real columns (127 each)."""
    return -(-k // NBITS_REAL)


def pack_nbits(codes: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """codes int8 [N, K] → (B uint8 [N, n_blocks, 32], scales float32 [N · n_blocks])."""
    n, k = codes.shape
    blocks = nbits_blocks(k)
    real = np.full((n, blocks * NBITS_REAL), 2, np.uint8)  # code 2 is weight 0: padding adds nothing
    real[:, :k] = codes + 2
    laid = np.full((n, blocks, NBITS_BLOCK), 2, np.uint8)  # the last column of a block is the 127 pad
    laid[:, :, :NBITS_REAL] = real.reshape(n, blocks, NBITS_REAL)
    quads = laid.reshape(n, blocks, NBITS_BLOCK // 4, 4)
    packed = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    scales = np.full(n * blocks, beta, np.float32)
    return packed.astype(np.uint8), scales


def int2_tensor(name: str, codes: np.ndarray) -> TensorProto:
    """codes int8 [N, K] → an ONNX INT2 tensor [K, N] (W transposed for MatMul)."""
    t = np.ascontiguousarray(codes.T)
    return helper.make_tensor(name, TensorProto.INT2, list(t.shape), _pack_int2(t), raw=True)


def _pack_int2(t: np.ndarray) -> bytes:
    """Two's-complement 2-bit values, four a byte, element 0 in the low bits (ONNX INT2 layout)."""
    flat = (t.reshape(-1).astype(np.int16) & 0b11).astype(np.uint8)
    flat = np.concatenate([flat, np.zeros((-len(flat)) % 4, np.uint8)]).reshape(-1, 4)
    return (flat[:, 0] | (flat[:, 1] << 2) | (flat[:, 2] << 4) | (flat[:, 3] << 6)).astype(np.uint8).tobytes()


class ExternalWeights:
    """Initializers shared by several graphs, written once into one external-data file.

    `add` registers a numpy array or a ready TensorProto under a name; graphs ask `proto(name)`
    for a TensorProto that points into the file. Tensors under `INLINE_BYTES` stay in the graph.
    """

    INLINE_BYTES = 1024

    def __init__(self, filename: str = "weights.bin"):
        self.filename = filename
        self._tensors: dict[str, TensorProto] = {}
        self._offsets: dict[str, tuple[int, int]] = {}

    def add(self, name: str, value: np.ndarray | TensorProto) -> str:
        if name in self._tensors:
            raise ValueError(f"initializer {name!r} added twice")
        proto = value if isinstance(value, TensorProto) else numpy_helper.from_array(value, name)
        proto.name = name
        self._tensors[name] = proto
        return name

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].dims)

    def write(self, directory: Path) -> None:
        """Write every large tensor's bytes into `directory/filename`, page-aligned, atomically."""
        offset = 0
        with atomic_path(directory / self.filename) as tmp, open(tmp, "wb") as f:
            for name, proto in self._tensors.items():
                data = self._raw(proto)
                if len(data) < self.INLINE_BYTES:
                    continue
                f.write(b"\0" * ((-offset) % ALIGN))
                offset += (-offset) % ALIGN
                f.write(data)
                self._offsets[name] = (offset, len(data))
                offset += len(data)
            f.flush()
            os.fsync(f.fileno())

    def proto(self, name: str) -> TensorProto:
        """The initializer for a graph: a pointer into the file, or the small tensor itself."""
        src = self._tensors[name]
        if name not in self._offsets:
            return src
        out = TensorProto()
        out.name, out.data_type = name, src.data_type
        out.dims.extend(src.dims)
        out.data_location = TensorProto.EXTERNAL
        offset, length = self._offsets[name]
        for key, value in (("location", self.filename), ("offset", str(offset)), ("length", str(length))):
            entry = out.external_data.add()
            entry.key, entry.value = key, value
        return out

    @staticmethod
    def _raw(proto: TensorProto) -> bytes:
        if not proto.raw_data:  # from_array and make_tensor(raw=True) always set raw_data
            raise ValueError(f"initializer {proto.name} has no raw bytes")
        return proto.raw_data


def add_model(weights: ExternalWeights, model, fmt: str, dtype=np.float32) -> None:
    """Register every tensor the graphs of `model` (an HGRNBitForCausalLM, latent or loaded from a
    packed directory) read, under the reference checkpoint names; each BitLinear `<p>.weight`
    becomes `<p>.weight.packed` + `<p>.weight.scales` ("nbits") or `<p>.weight.int2` +
    `<p>.weight.beta` ("dq"). Float tensors and β are stored as `dtype`."""
    for name, codes, beta in _ternary_layers(model):
        if fmt == "nbits":
            packed, scales = pack_nbits(codes, beta)
            weights.add(f"{name}.weight.packed", packed)
            weights.add(f"{name}.weight.scales", scales)
        else:
            weights.add(f"{name}.weight.int2", int2_tensor(f"{name}.weight.int2", codes))
            weights.add(f"{name}.weight.beta", np.asarray(beta, dtype))
    for name, tensor in model.state_dict().items():
        if name.endswith("norm.weight") or name == "model.embeddings.weight":
            weights.add(name, tensor.detach().numpy().astype(dtype))
    with torch.no_grad():  # the same ops, in the model's dtype, as HGRNBitModel.layer_lower_bounds
        for layer, lb in enumerate(model.model.layer_lower_bounds()):
            if lb is not None:
                weights.add(f"model.layers.{layer}.attn.lower_bound", lb.numpy().astype(dtype))
                weights.add(f"model.layers.{layer}.attn.one_minus_lower_bound", (1 - lb).numpy().astype(dtype))


def _ternary_layers(model):
    """(module name, codes int8 [N, K], β) of every ternary projection (`quant.ternary.ternary_layers`:
    a latent BitLinear ternarised as the fake-quant forward does, a packed one's stored codes and β)."""
    from ...quant.ternary import ternary_layers
    for key, (codes, beta) in ternary_layers(model).items():
        yield key.removesuffix(".weight"), codes.numpy(), beta.numpy()
