"""`mmfree export --target onnx`: a prefill graph and a one-token decode graph for onnxruntime.

Output directory:

    prefill.onnx  decode.onnx   the two graphs (graph.py); they share every weight through
    weights.bin                  one external-data file, so the weights are stored once
    onnx_config.json             inputs, outputs, opset, weight format, tokenizer, chat template
    config.json, tokenizer files the model config (reference format) and its tokenizer
    manifest.json                "target": "onnx", versions, and the sha256 of every file above

Why the graphs are built with `onnx.helper` rather than `torch.onnx.export`: the exporter would
unroll our parallel scan for one fixed sequence length and cannot emit packed ternary weights or
ORT's `MatMulNBits`, and the rounding of the activation fake-quant must be spelled out op by op to
match the PyTorch model. A small builder keeps every op visible and one-to-one with the model code.

Why `MatMulNBits` (bits=2, accuracy_level=4) is the default weight format, "nbits": measured on
this project's CPU machine (ORT 1.32, one thread, a 1024 × 2816 GEMV): MatMulNBits 2-bit with
block 128 and int8 compute ≈ 70 µs; standard `DequantizeLinear` on INT2 + MatMul ≈ 760 µs (ORT
either folds the weights to float32 at load — exact, a float GEMV, 16× the weight memory — or, with
its QDQ fusion on, turns the pair into MatMulNBits with blockwise int8 activations, which is not
exact); MatMulNBits in float32 compute ≈ 11–23 ms (it unpacks the weights on every call). The int8
compute path requantizes activations per 128-block with scale absmax/127, so every block carries one
pad column fixed at 127 (weights.py): the scale is then exactly 1 and the integer accumulators equal
the fake-quant model's. "dq" stays available (`weights="dq"`), standard ONNX only (opset 25), for
runtimes without the com.microsoft ops; the engine turns ORT's QDQ fusion off for it to stay exact.
bench/onnx_decode.py measures both on whole models.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from ...data.tokenizer import copy_tokenizer_files
from ...errors import UserError
from ...fileio import read_json, write_bytes, write_json
from ...formats.onnx import FORMAT_VERSION, write_onnx_manifest
from ...formats.ternary import open_model
from .graph import FLOAT_TYPES, OPSET, build
from .weights import ExternalWeights, add_model

WEIGHT_FORMATS = ("nbits", "dq")
GRAPH_FILES = {"prefill": "prefill.onnx", "decode": "decode.onnx"}
WEIGHTS_FILE = "weights.bin"
CONFIG_FILE = "onnx_config.json"


def export(model_dir: Path, out_dir: Path, weights: str = "nbits", precision: str = "float32",
           **options) -> None:
    """Fill `out_dir` with the ONNX export of the model (run or quantize directory) at `model_dir`.

    `weights`: "nbits" (default) or "dq" (see the module docstring). `precision`: "float32", or
    "float64" (with "dq" only) for reference graphs that check parity with the PyTorch model
    without int8 rounding flips (docs/design.md §2, Parity).
    """
    if options:
        raise UserError(f"--target onnx does not take {', '.join('--' + k for k in options)}")
    if weights not in WEIGHT_FORMATS:
        raise UserError(f"unknown onnx weight format {weights!r} — choose one of {', '.join(WEIGHT_FORMATS)}")
    if precision not in FLOAT_TYPES or (precision == "float64" and weights != "dq"):
        raise UserError(f"onnx precision {precision!r} with weights {weights!r} is not available — use "
                        "float32, or float64 with dq weights")
    model = _load_model(model_dir, torch.float64 if precision == "float64" else torch.float32)
    store = ExternalWeights(WEIGHTS_FILE)
    add_model(store, model, weights, FLOAT_TYPES[precision][0])
    store.write(out_dir)
    for kind, filename in GRAPH_FILES.items():
        graph = build(store, model.config, kind, weights, precision)
        write_bytes(out_dir / filename, graph.SerializeToString())
        onnx.checker.check_model(str(out_dir / filename))
    model.config.save(out_dir / "config.json")
    tokenizer_files = copy_tokenizer_files(model_dir, out_dir, required=True)
    write_json(out_dir / CONFIG_FILE, _onnx_config(model.config, weights, precision, tokenizer_files, model_dir))
    write_onnx_manifest(out_dir, source=str(model_dir), weights=weights, precision=precision,
                        opset=OPSET[weights], **_versions())

def _load_model(model_dir: Path, dtype: torch.dtype):
    """A run directory (latent weights) or a `mmfree quantize` output (packed codes and β)."""
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json — give a run, quantize output or model directory")
    model = open_model(model_dir, dtype)
    if not model.config.ternary:
        raise UserError(f"{model_dir}: the model is not ternary (ternary: false) — the onnx export "
                        "packs ternary weights; export a ternary model")
    return model


def _chat_template(model_dir: Path) -> str | None:
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if (model_dir / "tokenizer_config.json").is_file():
        return read_json(model_dir / "tokenizer_config.json").get("chat_template")
    return None


def _io(name: str, dtype: str, shape: list) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


def _onnx_config(cfg, weights: str, precision: str, tokenizer_files: list[str], model_dir: Path) -> dict:
    """What a program needs to drive the graphs without reading our code."""
    layers, d, v, p = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, precision
    states = [_io(f"state.{i}", p, ["batch", d]) for i in range(layers)]
    presents = [_io(f"present_state.{i}", p, ["batch", d]) for i in range(layers)]
    return {
        "format_version": FORMAT_VERSION, "opset": OPSET[weights], "weights": weights, "precision": p,
        **_versions(),
        "graphs": {
            "prefill": {"file": GRAPH_FILES["prefill"],
                        "inputs": [_io("input_ids", "int64", ["batch", "sequence"])] + states,
                        "outputs": [_io("logits", p, ["batch", "sequence", v])] + presents},
            "decode": {"file": GRAPH_FILES["decode"],
                       "inputs": [_io("input_ids", "int64", ["batch"])] + states,
                       "outputs": [_io("logits", p, ["batch", v])] + presents},
        },
        "state": {"layers": layers, "hidden_size": d, "dtype": p, "initial": "zeros",
                  "feed": "present_state.{i} of one call is state.{i} of the next"},
        "tokenizer": {"files": tokenizer_files, "bos_token_id": cfg.bos_token_id,
                      "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id},
        "chat_template": _chat_template(model_dir),
    }


def _versions() -> dict:
    import onnxruntime
    return {"onnx_version": onnx.__version__, "onnxruntime_version": onnxruntime.__version__}
