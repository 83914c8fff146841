"""Packed model directories: logits of the fake-quant model, transformers-readable hf-bitnet files,
re-packing, and the `mmfree quantize` / `mmfree info` CLI including corrupt and truncated files."""

import json

import pytest
import torch
from safetensors import safe_open

from mmfree_cli.errors import UserError
from mmfree_cli.export.packed import quantize
from mmfree_cli.formats.packed import is_packed, read_packed
from mmfree_cli.formats.ternary import open_model
from mmfree_cli.kernels.bitlinear import ternarize, weight_scale
from mmfree_cli.model.frozen import FrozenBitLinear
from mmfree_cli.model.layers import BitLinear
from tests.helpers import mmfree, one_error_line

LAYOUTS = ("i2", "tq1", "hf-bitnet")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_model_gives_fake_quant_logits(toy_run, tmp_path, layout):
    model, path = toy_run
    out, report = quantize(path, tmp_path / f"p-{layout}", layout, float_dtype="float32")
    packed = open_model(out)
    assert isinstance(packed.lm_head, FrozenBitLinear)
    ids = torch.randint(0, model.config.vocab_size, (2, 29), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(ids).logits, packed(ids).logits
    assert (got - want).abs().max().item() <= 1e-5
    assert report["layout"] == layout and (out / "mmfree_tokenizer.json").is_file()


def test_bf16_floats_match_the_model_with_bf16_floats(toy_run, tmp_path):
    model, path = toy_run
    out, _ = quantize(path, tmp_path / "p", "tq1")  # default: floats kept as bf16
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("proj.weight") and name != "lm_head.weight":
                p.copy_(p.to(torch.bfloat16).float())
        ids = torch.arange(40)[None] % model.config.vocab_size
        diff = (open_model(out)(ids).logits - model(ids).logits).abs().max().item()
    assert diff <= 1e-5


def test_beta_is_kept_exactly_and_codes_match_the_quantizer(toy_run, tmp_path):
    model, path = toy_run
    packed = read_packed(quantize(path, tmp_path / "p", "i2")[0])
    for name, module in model.named_modules():
        if isinstance(module, BitLinear):
            beta = weight_scale(module.weight.detach())
            assert torch.equal(packed.betas[f"{name}.weight"], beta)
            assert torch.equal(packed.codes[f"{name}.weight"], ternarize(module.weight.detach(), beta).to(torch.int8))


def test_hf_bitnet_file_reads_with_transformers(toy_run, tmp_path):
    from transformers import BitNetQuantConfig
    from transformers.integrations.bitnet import unpack_weights

    model, path = toy_run
    out, _ = quantize(path, tmp_path / "hf", "hf-bitnet")
    config = json.loads((out / "config.json").read_text())
    assert BitNetQuantConfig.from_dict(config["quantization_config"]).linear_class == "bitlinear"
    checked = 0
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        for name, module in model.named_modules():
            if not isinstance(module, BitLinear):
                continue
            w = module.weight.detach()
            beta = weight_scale(w)
            packed = f.get_tensor(f"{name}.weight")
            assert packed.dtype == torch.uint8 and packed.shape == (-(-w.shape[0] // 4), w.shape[1])
            with torch._dynamo.config.patch(disable=True):  # the same function, run eagerly
                theirs = unpack_weights(packed, dtype=torch.float32)[: w.shape[0]]
            assert torch.equal(theirs, ternarize(w, beta).float())
            assert torch.equal(f.get_tensor(f"{name}.weight_scale"), (1.0 / beta).reshape(1))
            assert torch.equal(f.get_tensor(f"{name}.weight_beta"), beta.reshape(1))
            checked += 1
    assert checked == 3 * 6 + 1


def test_repack_from_a_packed_directory_is_lossless(toy_run, tmp_path):
    _, path = toy_run
    first = read_packed(quantize(path, tmp_path / "a", "hf-bitnet", "float32")[0])
    second = read_packed(quantize(tmp_path / "a", tmp_path / "b", "tq1", "float32")[0])
    assert second.layout == "tq1" and second.manifest["source"]["packed_layout"] == "hf-bitnet"
    for name in first.codes:
        assert torch.equal(first.codes[name], second.codes[name])
        assert torch.equal(first.betas[name], second.betas[name])
    for name in first.floats:
        assert torch.equal(first.floats[name], second.floats[name])


def test_load_model_takes_both_kinds(toy_run, tmp_path):
    _, path = toy_run
    out, _ = quantize(path, tmp_path / "p", "i2")
    assert is_packed(out) and is_packed(out / "model.safetensors") and not is_packed(path)
    assert isinstance(open_model(out).lm_head, FrozenBitLinear)
    assert isinstance(open_model(path).lm_head, BitLinear)


def test_cli_quantize_info_and_refusals(toy_run, tmp_path):
    """The real CLI end to end: newest run → packed dir → info; then a corrupt and a truncated file."""
    _, path = toy_run
    root = path.parent.parent
    one_error_line(mmfree("quantize", "--layout", "i3", cwd=root), "i3")
    r = mmfree("quantize", "--layout", "tq1", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "bits per ternary weight" in r.stdout and "smaller than bf16" in r.stdout
    out = root / "exports" / "packed" / "toy-tq1"
    assert (root / "exports" / "packed" / "latest").resolve() == out.resolve()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["layout"] == "tq1"
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "mmfree_tokenizer.json"}
    info = mmfree("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "loads: yes" in info.stdout and "layout tq1" in info.stdout

    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # a flipped bit in a tensor
    weights.write_bytes(bytes(data))
    assert "sha256" in one_error_line(mmfree("info", str(out)), str(weights))
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert "truncated" in one_error_line(mmfree("info", str(weights)), str(weights))


def test_library_refusals_name_the_file(toy_run, tmp_path):
    _, path = toy_run
    out, _ = quantize(path, tmp_path / "p", "i2")
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        read_packed(weights)  # a bare file: the safetensors checksum catches it
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(UserError, match=str(weights)):
        quantize(out, tmp_path / "q")
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q*"))
    for bad in ({"layout": "i2", "float_dtype": "int8"}, {"out": path}, {"out": out}):
        with pytest.raises(UserError):
            quantize(path, **bad)
    with pytest.raises(UserError, match="nope"):
        quantize(tmp_path / "nope")
    with pytest.raises(UserError, match="mmfree train"):
        quantize(root=tmp_path / "runs")
