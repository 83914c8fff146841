"""Packed size of a full 370M-shape model (random weights): slow, it builds and packs 374M parameters."""

import pytest
import torch

from mmfree_cli.export.packed import quantize
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained


@pytest.mark.slow
def test_370m_packs_to_its_theoretical_size(tmp_path):
    """i2 and tq1 with bf16 floats, then tq1 with an int8 embedding: ≥ 7× smaller than bf16."""
    torch.manual_seed(0)
    save_pretrained(HGRNBitForCausalLM(preset("370m")), tmp_path / "m", dtype=torch.bfloat16)
    bf16_file = (tmp_path / "m" / "model.safetensors").stat().st_size
    for layout, bits in (("i2", 2.0), ("tq1", 1.6)):
        out, report = quantize(tmp_path / "m", tmp_path / layout, layout)
        file_bytes = (out / "model.safetensors").stat().st_size
        assert file_bytes == report["file_bytes"] and file_bytes <= 1.10 * report["theoretical_bytes"]
        ternary = report["groups"]["ternary weights"]
        assert ternary["params"] == 24 * (4 * 1024 * 1024 + 3 * 1024 * 2816) + 32000 * 1024
        assert 2 * ternary["params"] / ternary["bytes"] >= 7  # the ternary weights alone: 8x / ~10x
        assert abs(report["bits_per_ternary_weight"] - bits) < 0.01
        assert bf16_file / file_bytes > 4.9  # whole file: bf16 embeddings (65.5 MB) bound the ratio
    # the whole-file target needs the embedding table in 8 bits (32.9 MB with its row scales)
    out, report = quantize(tmp_path / "m", tmp_path / "tq1-int8", "tq1", embedding_dtype="int8")
    file_bytes = (out / "model.safetensors").stat().st_size
    assert report["groups"]["embeddings"]["bytes"] == 32000 * 1024 + 4 * 32000
    assert file_bytes <= 1.10 * report["theoretical_bytes"] and bf16_file / file_bytes >= 7
