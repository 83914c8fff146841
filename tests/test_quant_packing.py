"""Bit layouts of packed ternary weights: exact round trips, documented bytes, transformers parity."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_cli.quant.packing import (
    LAYOUTS,
    pack,
    pack_hf_bitnet,
    pack_i2,
    pack_tq1,
    packed_shape,
    unpack,
    unpack_hf_bitnet,
    unpack_i2,
    unpack_tq1,
)

dims = st.integers(min_value=1, max_value=23)  # covers sizes not divisible by 4 or 5


def ternary(shape):
    return arrays(np.int8, shape, elements=st.sampled_from([-1, 0, 1]))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=st.lists(dims, min_size=1, max_size=3).map(tuple))
def test_i2_and_tq1_round_trip_any_shape(data, shape):
    w = data.draw(ternary(shape))
    for layout in ("i2", "tq1"):
        packed = pack(w, layout)
        assert packed.dtype == np.uint8 and packed.shape == packed_shape(shape, layout)
        assert np.array_equal(unpack(packed, layout, shape), w)
        assert torch.equal(unpack(torch.from_numpy(packed), layout, shape), torch.from_numpy(w))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=dims, k=dims)
def test_hf_bitnet_round_trip_any_shape(data, n, k):
    w = data.draw(ternary((n, k)))
    packed = pack_hf_bitnet(torch.from_numpy(w))
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == packed_shape((n, k), "hf-bitnet")
    assert torch.equal(unpack_hf_bitnet(packed, n), torch.from_numpy(w))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=dims, k=dims)
def test_padding_is_code_one_weight_zero(data, n, k):
    w = data.draw(ternary((n, k)))
    # unpack without slicing: every padded slot must read back as weight 0
    i2 = unpack_i2(pack_i2(w), packed_shape((n, k), "i2")[-1] * 4)
    tq1 = unpack_tq1(pack_tq1(w), packed_shape((n, k), "tq1")[-1] * 5)
    hf = unpack_hf_bitnet(pack_hf_bitnet(w), packed_shape((n, k), "hf-bitnet")[0] * 4)
    assert not i2[:, k:].any() and not tq1[:, k:].any() and not hf[n:].any()


def test_documented_byte_values():
    # i2: element 4j+i in bits 2i..2i+1, code w+1; padding code 1
    assert pack_i2(np.array([-1, 0, 1, 1, 0], np.int8)).tolist() == [0b10_10_01_00, 0b01_01_01_01]
    # tq1: c0 + 3 c1 + 9 c2 + 27 c3 + 81 c4; padding code 1
    assert pack_tq1(np.array([1, -1, 0], np.int8)).tolist() == [2 + 0 + 9 + 27 + 81]
    # hf-bitnet: R = 1, output row i in bits 2i..2i+1
    w = np.array([[-1, 1], [0, 1], [1, -1]], np.int8)
    assert pack_hf_bitnet(w).tolist() == [[0 | 1 << 2 | 2 << 4 | 1 << 6, 2 | 2 << 2 | 0 << 4 | 1 << 6]]


def test_accepts_float_codes_and_refuses_non_ternary():
    w = torch.tensor([[1.0, -1.0, 0.0]])
    assert torch.equal(unpack_i2(pack_i2(w), 3), w.to(torch.int8))
    for bad in (torch.tensor([0.5]), torch.tensor([2]), torch.tensor([-2.0])):
        for packer in (pack_i2, pack_tq1):
            with pytest.raises(ValueError):
                packer(bad)
    with pytest.raises(ValueError):
        pack_hf_bitnet(torch.zeros(4))


def test_unpack_refuses_impossible_bytes_and_sizes():
    with pytest.raises(ValueError, match="code 3"):
        unpack_i2(torch.tensor([0b11], dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match="242"):
        unpack_tq1(torch.tensor([243], dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_i2(torch.zeros(2, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_tq1(torch.zeros(2, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="unknown layout"):
        pack(torch.zeros(3), "i3")


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(1, 19), k=st.integers(1, 9))
def test_hf_bitnet_unpacks_with_transformers(data, n, k):
    """Our hf-bitnet bytes read back through transformers' own unpacker give the same weights."""
    from transformers.integrations.bitnet import unpack_weights

    w = torch.from_numpy(data.draw(ternary((n, k))))
    packed = pack_hf_bitnet(w)
    # unpack_weights is wrapped in torch.compile; run the same function eagerly (no C++ toolchain)
    with torch._dynamo.config.patch(disable=True):
        theirs = unpack_weights(packed, dtype=torch.float32)
    assert theirs.shape == (packed.shape[0] * 4, k)
    assert torch.equal(theirs[:n], w.float())


def test_transformers_packs_to_our_bytes_when_rows_divide_by_four():
    from transformers.integrations.bitnet import pack_weights

    w = torch.randint(-1, 2, (12, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pack_weights(w.clone()), pack_hf_bitnet(w))


def test_layout_names():
    assert LAYOUTS == ("i2", "tq1", "hf-bitnet")
