"""`mmfree quantize --embedding-dtype int8`: the embedding table as per-row-scaled int8.

Round-trip (scale kept exactly, values within half a step), lossless re-packing, the manifest, the
size report and `mmfree info` naming it, every reader of packed directories, and the CLI refusal.
"""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from mmfree_cli.errors import UserError
from mmfree_cli.export.packed import quantize
from mmfree_cli.formats.cuda import tensors_of
from mmfree_cli.formats.packed import read_packed
from mmfree_cli.formats.ternary import open_model, open_ternary
from mmfree_cli.model import save_pretrained
from mmfree_cli.model.frozen import FrozenBitLinear
from mmfree_cli.quant.rowint8 import dequantize_rows, quantize_rows
from tests.helpers import mmfree, one_error_line

EMB = "model.embeddings.weight"


def _row_bounds(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale each row must get (absmax / 127 in float32) and the rounding bound, half a step."""
    scale = w.float().abs().amax(dim=1) / 127
    return scale, scale[:, None] / 2 * (1 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 70), seed=st.integers(0, 2**31 - 1),
       zero_row=st.booleans())
def test_rows_round_trip_within_half_a_step(rows, cols, seed, zero_row):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 10 ** (seed % 5 - 3)
    if zero_row:
        w[0] = 0
    codes, scale = quantize_rows(w)
    want_scale, bound = _row_bounds(w)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32
    assert torch.equal(scale, want_scale) and codes.abs().max() <= 127
    assert ((dequantize_rows(codes, scale) - w).abs() <= bound).all()
    assert torch.equal(codes.abs().amax(dim=1)[scale > 0], torch.full_like(scale[scale > 0], 127, dtype=torch.int8))


def test_pack_load_round_trip(toy_run, tmp_path):
    model, path = toy_run
    out, report = quantize(path, tmp_path / "p", "tq1", embedding_dtype="int8")
    emb = model.model.embeddings.weight.detach()
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        codes, scale = f.get_tensor(EMB), f.get_tensor(EMB + "_row_scale")
        assert f.metadata()["mmfree.embedding_dtype"] == "int8"
        assert f.get_tensor("model.norm.weight").dtype == torch.bfloat16  # the other floats keep --float-dtype
    want_scale, bound = _row_bounds(emb)
    assert codes.dtype == torch.int8 and codes.shape == emb.shape and torch.equal(scale, want_scale)
    packed = read_packed(out)
    assert packed.embedding_dtype == "int8" and packed.floats[EMB].dtype == torch.float32
    assert torch.equal(packed.floats[EMB], codes.float() * scale[:, None])
    assert ((packed.floats[EMB] - emb).abs() <= bound).all()
    loaded = open_model(out)
    assert torch.equal(loaded.model.embeddings.weight, packed.floats[EMB])
    assert isinstance(loaded.lm_head, FrozenBitLinear)
    ids = torch.arange(30)[None] % model.config.vocab_size
    with torch.no_grad():
        assert torch.isfinite(loaded(ids).logits).all()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedding_dtype"] == "int8" and manifest["float_dtype"] == "bfloat16"
    assert report["embedding_dtype"] == "int8" and manifest["report"]["embedding_dtype"] == "int8"
    v, d = emb.shape
    assert report["groups"]["embeddings"]["bytes"] == v * d + 4 * v


def test_repack_keeps_int8_rows_exactly_and_readers_dequantise(toy_run, tmp_path):
    _, path = toy_run
    first = read_packed(quantize(path, tmp_path / "a", "i2", embedding_dtype="int8")[0])
    second = read_packed(quantize(tmp_path / "a", tmp_path / "b", "hf-bitnet", embedding_dtype="int8")[0])
    for got, want in zip(second.int8_rows[EMB], first.int8_rows[EMB]):
        assert torch.equal(got, want)
    assert second.manifest["source"]["packed_embedding_dtype"] == "int8"
    as_float = read_packed(quantize(tmp_path / "a", tmp_path / "c", "i2", "float32")[0])
    assert as_float.embedding_dtype == "float32" and not as_float.int8_rows
    assert torch.equal(as_float.floats[EMB], first.floats[EMB])
    cuda = tensors_of(open_ternary(tmp_path / "a"))  # the cuda export/engine reader: a bf16 embedding
    assert torch.equal(cuda[EMB], first.floats[EMB].to(torch.bfloat16))


def test_default_embedding_dtype_follows_float_dtype(toy_run, tmp_path):
    _, path = toy_run
    out, report = quantize(path, tmp_path / "p", "i2", "float16")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor(EMB).dtype == torch.float16 and EMB + "_row_scale" not in f.keys()
    assert report["embedding_dtype"] == "float16" and read_packed(out).embedding_dtype == "float16"


def test_library_refuses_bad_embedding_dtype_and_non_finite_rows(toy_run, tmp_path):
    model, path = toy_run
    with pytest.raises(UserError, match="float8"):
        quantize(path, tmp_path / "p", embedding_dtype="float8")
    with torch.no_grad():
        model.model.embeddings.weight[3, 1] = float("inf")
    save_pretrained(model, tmp_path / "inf")
    with pytest.raises(UserError, match="inf or NaN"):
        quantize(tmp_path / "inf", tmp_path / "q", embedding_dtype="int8")


def test_cli_embedding_dtype_and_info(toy_run, tmp_path):
    _, path = toy_run
    root = path.parent.parent
    line = one_error_line(mmfree("quantize", "--embedding-dtype", "fp4", cwd=root), "fp4")
    assert "int8" in line and not (root / "exports").exists()
    r = mmfree("quantize", "--layout", "tq1", "--embedding-dtype", "int8", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "embeddings int8 (per-row scale)" in r.stdout
    info = mmfree("info", str(root / "exports" / "packed" / "latest"))
    assert info.returncode == 0, info.stderr
    assert "embeddings int8 (per-row scale)" in info.stdout and "loads: yes" in info.stdout
