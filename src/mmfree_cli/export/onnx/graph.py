"""The HGRN-Bit forward pass written out as ONNX graphs: prefill (a whole sequence) and decode
(one token), both with explicit per-layer state (`state.{i}` in, `present_state.{i}` out).

Every op mirrors `mmfree_cli.model` and `kernels.bitlinear.naive` in float32 (or float64 for
reference graphs), including the
activation fake-quant (per-token absmax int8, round half away from zero written as
sign(x)·floor(|x| + 0.5), since ONNX `Round` is half-to-even). The recurrence is an ONNX `Scan`
over time in the prefill graph and one multiply-add in the decode graph.

    prefill: input_ids [batch, sequence] int64, state.{i} [batch, d] → logits [batch, sequence, V], present_state.{i}
    decode:  input_ids [batch] int64,           state.{i} [batch, d] → logits [batch, V],           present_state.{i}
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto, helper

from ...kernels.bitlinear import ACT_SCALE_FLOOR, BITLINEAR_NORM_EPS
from ...model.config import HGRNBitConfig
from .weights import NBITS_BLOCK, NBITS_REAL, ExternalWeights, nbits_blocks

OPSET = {"nbits": 21, "dq": 25}
"""ai.onnx opset per weight format: INT2 tensors need opset 25; MatMulNBits graphs run on 21."""
MS_DOMAIN = "com.microsoft"


FLOAT_TYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}
"""Activation precision of a graph → (numpy dtype, ONNX element type)."""


class Graph:
    """A small ONNX graph builder: `op` appends a node and returns its output name(s)."""

    def __init__(self, weights: ExternalWeights, rank: int, precision: str = "float32"):
        self.weights, self.rank = weights, rank
        self.dtype, self.elem = FLOAT_TYPES[precision]
        self.nodes: list = []
        self.used: list[str] = []
        self.consts: dict[tuple, str] = {}
        self._count = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", name: str = "", **attrs):
        """Append a node; its outputs are named `name` (one output) or numbered."""
        names = [name] if name else [f"{op_type.lower()}_{self._count}_{k}" for k in range(outputs)]
        self._count += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), names, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=None) -> str:
        """An inline constant (deduplicated by value), in the graph's float type unless given."""
        arr = np.asarray(value, dtype or self.dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.consts:
            name = f"const_{len(self.consts)}"
            self.consts[key] = name
            self.nodes.insert(0, helper.make_node("Constant", [], [name], value=helper.make_tensor(
                name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape, arr.reshape(-1).tolist())))
        return self.consts[key]

    def weight(self, name: str) -> str:
        if name not in self.weights:
            raise KeyError(f"graph reads {name!r}, which the exporter did not register")
        if name not in self.used:
            self.used.append(name)
        return name

    def model(self, name: str, inputs: list, outputs: list, fmt: str) -> ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs,
                                  [self.weights.proto(n) for n in self.used])
        opsets = [helper.make_opsetid("", OPSET[fmt])]
        if fmt == "nbits":
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        return helper.make_model(graph, opset_imports=opsets, producer_name="mmfree",
                                 ir_version=10 if fmt == "nbits" else 11)


def rms_norm(g: Graph, x: str, weight: str, eps: float) -> str:
    """x · (1 / sqrt(mean(x²) + eps)) · γ over the last dim."""
    mean_sq = g.op("ReduceMean", g.op("Mul", x, x), g.const([-1], np.int64), keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean_sq, g.const(eps))))
    return g.op("Mul", g.op("Mul", x, inv), g.weight(weight))


def silu(g: Graph, x: str) -> str:
    return g.op("Mul", x, g.op("Sigmoid", x))


def bitlinear(g: Graph, x: str, prefix: str, k: int, fmt: str) -> str:
    """RMSNorm (eps 1e-6) → int8 activations per token → × ternary weights (packed)."""
    xn = rms_norm(g, x, f"{prefix}.norm.weight", BITLINEAR_NORM_EPS)
    amax = g.op("ReduceMax", g.op("Abs", xn), g.const([-1], np.int64), keepdims=1)
    scale = g.op("Div", g.const(127.0), g.op("Max", amax, g.const(ACT_SCALE_FLOOR)))
    scaled = g.op("Mul", xn, scale)
    rounded = g.op("Mul", g.op("Sign", scaled), g.op("Floor", g.op("Add", g.op("Abs", scaled), g.const(0.5))))
    x_int = g.op("Clip", rounded, g.const(-128.0), g.const(127.0))
    if fmt == "dq":  # exactly the fake-quant model's x_q @ (t·β)ᵀ
        codes, beta = g.weight(f"{prefix}.weight.int2"), g.weight(f"{prefix}.weight.beta")
        if g.dtype == np.float32:
            w = g.op("DequantizeLinear", codes, beta)
        else:  # DequantizeLinear has no float64 scale
            w = g.op("Mul", g.op("Cast", codes, to=g.elem), beta)
        return g.op("MatMul", g.op("Div", x_int, scale), w)
    n = g.weights.shape(f"{prefix}.weight.packed")[0]
    acc = g.op("MatMulNBits", _pad_blocks(g, x_int, k), g.weight(f"{prefix}.weight.packed"),
               g.weight(f"{prefix}.weight.scales"), domain=MS_DOMAIN, K=nbits_blocks(k) * NBITS_BLOCK,
               N=int(n), bits=2, block_size=NBITS_BLOCK, accuracy_level=4)
    return g.op("Div", acc, scale)


def _pad_blocks(g: Graph, x: str, k: int) -> str:
    """[..., K] → [..., n_blocks · 128]: 127 real columns then one 127 in every block (weights.py)."""
    blocks = nbits_blocks(k)
    lead = [0] * (g.rank - 1)  # Reshape's 0 keeps a leading dim as it is
    axis = g.const([-1], np.int64)
    x = g.op("Pad", x, g.const([0, blocks * NBITS_REAL - k], np.int64), g.const(0.0), axis)
    x = g.op("Reshape", x, g.const(lead + [blocks, NBITS_REAL], np.int64))
    x = g.op("Pad", x, g.const([0, 1], np.int64), g.const(127.0), axis)
    return g.op("Reshape", x, g.const(lead + [blocks * NBITS_BLOCK], np.int64))


def recurrence(g: Graph, i: str, f: str, state: str) -> tuple[str, str]:
    """h_t = f_t ⊙ h_{t-1} + i_t → (h for every position, last h). Decode: one step; prefill: Scan."""
    if g.rank == 2:
        h = g.op("Add", g.op("Mul", f, state), i)
        return h, h
    d = "d"
    body = helper.make_graph(
        [helper.make_node("Mul", ["f_t", "h_prev"], ["fh"]), helper.make_node("Add", ["fh", "i_t"], ["h_next"]),
         helper.make_node("Identity", ["h_next"], ["h_out"])],
        "hgrn_step",
        [helper.make_tensor_value_info(n, g.elem, ["batch", d]) for n in ("h_prev", "i_t", "f_t")],
        [helper.make_tensor_value_info(n, g.elem, ["batch", d]) for n in ("h_next", "h_out")])
    last, seq = g.op("Scan", state, i, f, outputs=2, body=body, num_scan_inputs=2,
                     scan_input_axes=[1, 1], scan_output_axes=[1])
    return seq, last


def block(g: Graph, x: str, layer: int, state: str, cfg: HGRNBitConfig, fmt: str) -> tuple[str, str]:
    """One pre-norm block: x += attn(attn_norm(x)); x += mlp(mlp_norm(x)) → (x, new state)."""
    p, d, inner = f"model.layers.{layer}", cfg.hidden_size, cfg.intermediate_size
    h = rms_norm(g, x, f"{p}.attn_norm.weight", cfg.rms_norm_eps)
    f = g.op("Sigmoid", bitlinear(g, h, f"{p}.attn.f_proj", d, fmt))
    if f"{p}.attn.lower_bound" in g.weights:  # f = lb + (1 - lb)·f
        f = g.op("Add", g.weight(f"{p}.attn.lower_bound"),
                 g.op("Mul", g.weight(f"{p}.attn.one_minus_lower_bound"), f))
    i = g.op("Mul", silu(g, bitlinear(g, h, f"{p}.attn.i_proj", d, fmt)), g.op("Sub", g.const(1.0), f))
    hs, new_state = recurrence(g, i, f, state)
    gate = rms_norm(g, bitlinear(g, h, f"{p}.attn.g_proj", d, fmt), f"{p}.attn.g_norm.weight", cfg.rms_norm_eps)
    x = g.op("Add", x, bitlinear(g, g.op("Mul", gate, silu(g, hs)), f"{p}.attn.o_proj", d, fmt))
    h2 = rms_norm(g, x, f"{p}.mlp_norm.weight", cfg.rms_norm_eps)
    glu_gate, up = g.op("Split", bitlinear(g, h2, f"{p}.mlp.gate_proj", d, fmt), axis=-1, outputs=2, num_outputs=2)
    x = g.op("Add", x, bitlinear(g, g.op("Mul", silu(g, glu_gate), up), f"{p}.mlp.down_proj", inner, fmt))
    return x, new_state


def build(weights: ExternalWeights, cfg: HGRNBitConfig, kind: str, fmt: str,
          precision: str = "float32") -> ModelProto:
    """The prefill or decode graph of the model whose tensors `weights` holds."""
    rank = {"prefill": 3, "decode": 2}[kind]
    g = Graph(weights, rank, precision)
    ids_shape = ["batch", "sequence"] if rank == 3 else ["batch"]
    x = g.op("Gather", g.weight("model.embeddings.weight"), "input_ids")
    for layer in range(cfg.num_hidden_layers):
        x, new_state = block(g, x, layer, f"state.{layer}", cfg, fmt)
        g.op("Identity", new_state, name=f"present_state.{layer}")
    x = rms_norm(g, x, "model.norm.weight", cfg.rms_norm_eps)
    g.op("Identity", bitlinear(g, x, "lm_head", cfg.hidden_size, fmt), name="logits")
    state_shape = ["batch", cfg.hidden_size]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids_shape)]
    inputs += [helper.make_tensor_value_info(f"state.{i}", g.elem, state_shape)
               for i in range(cfg.num_hidden_layers)]
    outputs = [helper.make_tensor_value_info("logits", g.elem, ids_shape + [cfg.vocab_size])]
    outputs += [helper.make_tensor_value_info(f"present_state.{i}", g.elem, state_shape)
                for i in range(cfg.num_hidden_layers)]
    return g.model(f"hgrn_bit_{kind}", inputs, outputs, fmt)
