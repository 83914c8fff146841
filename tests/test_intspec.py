"""The integer spec: tables pinned, each unit against its real-valued meaning, the whole reference
against the float model (float64, so only the integer approximation differs)."""

import numpy as np
import pytest
import torch

from mmfree_cli.kernels.bitlinear import bitlinear_naive, ternarize, weight_scale
from mmfree_cli.quant import intref, intspec
from mmfree_cli.quant.intmodel import int_model_from_float

TABLE_SHA256 = "f41d4ee11888f7004ac0d897c28989a9b86237916d236d36dd5d9feb38d7f053"


def test_tables_are_pinned():
    # the FPGA core and every exported model carry these exact tables
    assert intspec.table_digest() == TABLE_SHA256
    assert intspec.SIGMOID_TABLE.shape == (1025,) and intspec.RSQRT_TABLE.shape == (385,)
    assert intspec.SIGMOID_TABLE[0] == 1 << 19 and intspec.RSQRT_TABLE[0] == 1 << 16


def test_rshift_round_is_half_up_and_left_shift_for_nonpositive():
    x = np.array([5, -5, 6, -6, 7, -7])
    assert intref.rshift_round(x, 1).tolist() == [3, -2, 3, -3, 4, -3]
    assert intref.rshift_round(np.array([3, -3]), np.array([0, -2])).tolist() == [3, -12]


def test_bit_length_matches_python():
    vals = np.array([0, 1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**62 + 5])
    assert intref.bit_length(vals).tolist() == [int(v).bit_length() for v in vals]


def test_normalize16_keeps_direction_in_int16():
    rng = np.random.default_rng(0)
    for scale in (1, 100, 2**20, 2**40):
        v = rng.integers(-scale, scale + 1, size=(3, 50))
        v16, k = intref.normalize16(v)
        top = np.abs(v16).max(-1)
        assert ((top >= 2**14) & (top < 2**15)).all()
        np.testing.assert_allclose(v16 * 2.0 ** k[:, None], v, atol=2.0 ** k.max())
    v16, k = intref.normalize16(np.zeros((2, 4), dtype=np.int64))
    assert not v16.any() and not k.any()


def test_rsqrt_relative_error_below_1e4():
    s = np.unique(np.concatenate([np.arange(1, 5000), np.geomspace(1, 2**56, 3000).astype(np.int64)]))
    r, e = intref.rsqrt_fixed(s)
    approx = r * 2.0 ** (-(23 + e / 2))
    assert np.abs(approx * np.sqrt(s) - 1).max() < 1e-4
    assert intref.rsqrt_fixed(np.array([0])) == (0, 0)


def test_sigmoid_and_silu_within_table_precision():
    y = np.linspace(-40, 40, 20001)
    yq = np.round(y * 2**16).astype(np.int64)
    sig = 1 / (1 + np.exp(-yq / 2**16))
    assert np.abs(intref.sigmoid_q(yq, 16) / 2**20 - sig).max() < 1e-5
    assert np.abs(intref.silu_q(yq, 16) / 2**16 - yq / 2**16 * sig).max() < 1e-3 * 40
    yq20 = np.round(y * 2**20).astype(np.int64)
    assert np.abs(intref.sigmoid_q(yq20, 20) / 2**20 - 1 / (1 + np.exp(-y))).max() < 1e-5


def test_quantize_int8_rounds_half_away_like_the_float_quantiser():
    u = np.array([[127 * 200, 100, -100, 301, -301, 299, 0]])  # a = 25400 (no shift): codes u/200
    q, a, k = intref.quantize_int8(u)
    assert k[0] == 0 and a[0] == 25400
    assert q.tolist() == [[127, 1, -1, 2, -2, 1, 0]]  # ±0.5 → ±1, ±1.505 → ±2, 1.495 → 1
    assert np.abs(q).max() <= 127
    q0, a0, _ = intref.quantize_int8(np.zeros((1, 5), dtype=np.int64))
    assert not q0.any() and a0[0] == 0


def test_eps_term_saturates_and_is_exact_for_moderate_shifts():
    assert intref.eps_term(np.array([1000]), np.array([-40]))[0] == intspec.EPS_TERM_MAX
    e = intref.eps_term(np.array([2**20]), np.array([-5]))[0]
    assert abs(e - 1e-6 * 2**20 * 2**10) <= 1


def test_bitlinear_int_matches_float_bitlinear():
    torch.manual_seed(0)
    K, N = 96, 70
    w = torch.randn(N, K, dtype=torch.float64) * 0.05
    g = torch.rand(K, dtype=torch.float64) + 0.5
    x = torch.randn(5, K, dtype=torch.float64)
    beta = weight_scale(w)
    proj = intspec.projection_constants(ternarize(w, beta).numpy(), float(beta), g.numpy())
    y = intref.bitlinear_int(np.round(x.numpy() * 2**16).astype(np.int64), proj) / 2**16
    ref = bitlinear_naive(x, g, w).numpy()
    # an int8 level flips now and then (the integer input has 15 bits): allow one flip's worth
    assert np.abs(y - ref).max() < 0.02 * np.abs(ref).max()
    assert np.median(np.abs(y - ref)) < 1e-4 * np.abs(ref).max()


def test_reference_tracks_the_float64_model(small_model):
    model = small_model(torch.float64, vocab_size=97, hidden_size=64, intermediate_size=128)
    im = int_model_from_float(model)
    tokens = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(tokens).logits.numpy()
    logits, state = intref.prefill(im, tokens.numpy(), intref.new_state(im, 2))
    assert logits.dtype == np.int32 and state.dtype == np.int32 and state.shape == (3, 2, 64)
    got = intspec.logits_to_float(logits)
    corr = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    assert corr > 0.999
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_prefill_equals_repeated_steps(small_model):
    im = int_model_from_float(small_model())
    tokens = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    logits, state = intref.prefill(im, tokens, intref.new_state(im, 2))
    s = intref.new_state(im, 2)
    for t in range(5):
        step_logits, s = intref.step(im, intref.embed(im, tokens[:, t]), s)
        assert np.array_equal(step_logits, logits[:, t])
    assert np.array_equal(s, state)


def test_constants_keep_the_float_models_ternary_codes(small_model):
    model = small_model()
    im = int_model_from_float(model)
    lin = model.model.layers[1].attn.f_proj
    want = ternarize(lin.weight.detach(), weight_scale(lin.weight.detach())).to(torch.int8).numpy()
    assert np.array_equal(im["layers.1.f.codes"], want)
    assert im["layers.0.lower_bound"].max() == 0 and im["layers.2.lower_bound"].max() > 0
    cm, cs = im["layers.1.f.scale"]
    assert 2**30 <= cm < 2**31


def test_float_model_that_is_not_ternary_is_refused(small_model):
    with pytest.raises(ValueError, match="not ternary"):
        int_model_from_float(small_model(ternary=False))
