"""The FPGA program compiler, held to the integer reference: the core's instruction set run by its
numpy golden model (hardware/machine.py) must give intref.step's logits and state, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_cli.export.fpga.compiler import VEC_MAX, CoreParams, compile_model, state_stride
from mmfree_cli.hardware.image import pack_ternary_rows, unpack_ternary_rows
from mmfree_cli.hardware.isa import assemble, disassemble
from mmfree_cli.hardware.machine import Machine
from mmfree_cli.hardware.regmap import card_memory_map
from mmfree_cli.quant import intref
from mmfree_cli.quant.intmodel import int_model_from_float


def card(compiled, params):
    dims = compiled.dims
    layout = card_memory_map(len(compiled.image), dims["d"], dims["vocab"], dims["layers"],
                             state_stride=state_stride(dims["d"]))
    mem = bytearray(layout["end"]["offset"])
    mem[:len(compiled.image)] = compiled.image
    bases = {"WEIGHTS": 0, "IN": layout["in"]["offset"], "OUT": layout["out"]["offset"],
             "STATE": layout["state"]["offset"]}
    return mem, bases


@pytest.mark.parametrize("lanes, inner", [(16, 48), (32, 48), (32, 40)])
def test_program_matches_intref(small_model, lanes, inner):
    """inner = 40: the gate's second half does not start on a row of 16, so it gets its own MATVEC."""
    model = int_model_from_float(small_model(intermediate_size=inner))
    params = CoreParams(lanes=lanes)
    compiled = compile_model(model, params)
    assert all(b.offset % 4096 == 0 for b in compiled.blocks)
    # the core's element passes, LOADs and STOREs read and write whole rows of VEC (<= 16) words
    for i in compiled.program:
        if i.op in ("LOAD", "STORE", "ROW", "NORM"):
            assert all(f % VEC_MAX == 0 for f in (i.dst, i.a, i.b, i.c)), i
    mem, bases = card(compiled, params)
    machine = Machine(mem, bases, params.lanes, params.mem_w, 1 << params.saddr_w)
    d, vocab = compiled.dims["d"], compiled.dims["vocab"]
    state = intref.new_state(model, 1)
    for token in [1, 5, 60, 0, 33, 33, 2, 17]:
        x = intref.embed(model, [token])
        want, state = intref.step(model, x, state)
        mem[bases["IN"]:bases["IN"] + 4 * d] = x.astype("<i4").tobytes()
        machine.run(bases["WEIGHTS"] + compiled.program_offset)
        got = np.frombuffer(bytes(mem[bases["OUT"]:bases["OUT"] + 4 * vocab]), "<i4")
        np.testing.assert_array_equal(got, want[0])
        stride = state_stride(d)
        for l in range(state.shape[0]):
            h = np.frombuffer(bytes(mem[bases["STATE"] + l * stride:][:4 * d]), "<i4")
            np.testing.assert_array_equal(h, state[l, 0])


def test_image_and_isa_round_trip():
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (5, 37))
    assert np.array_equal(unpack_ternary_rows(pack_ternary_rows(w, 16), 5, 37, 16), w)
    prog = compile_model(int_model_from_float(_tiny()), CoreParams()).program
    assert disassemble(assemble(prog, 64), 64) == prog


def _tiny():
    import torch

    from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM
    torch.manual_seed(0)
    return HGRNBitForCausalLM(HGRNBitConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                            intermediate_size=32)).eval()


def test_model_too_large_for_core_is_a_user_error():
    from mmfree_cli.errors import UserError
    with pytest.raises(UserError, match="does not fit this core"):
        compile_model(int_model_from_float(_tiny()), CoreParams(lanes=16, saddr_w=7))
