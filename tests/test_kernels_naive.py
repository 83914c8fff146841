"""The plain-PyTorch twins: quantizer rounding rules, STE, and the two forms of the HGRN scan."""

import torch

from mmfree_cli.kernels.bitlinear import (
    activation_scale,
    bitlinear_naive,
    quantize_activations,
    quantize_weights,
    round_half_away,
    ternarize,
    weight_scale,
)
from mmfree_cli.kernels.hgrn import hgrn_recurrent_naive, hgrn_scan_naive


def test_round_half_away_from_zero():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, -0.51, 0.0])
    assert torch.equal(round_half_away(x), torch.tensor([1.0, 2, 3, -1, -2, -3, 0, -1, 0]))


def test_weight_rounding_is_half_to_even():
    w = torch.tensor([[0.5, 1.5, -0.5, -1.5, 0.25, 3.0]])
    beta = torch.tensor(1.0)
    assert torch.equal(ternarize(w, beta), torch.tensor([[0.0, 1, -0, -1, 0, 1]]))


def test_activation_quant_levels_and_saturation():
    x = torch.tensor([[1.0, -1.0, 0.5, 0.0]])
    s = activation_scale(x)
    assert torch.equal(s, torch.tensor([[127.0]]))
    q = quantize_activations(x) * s
    assert torch.equal(q, torch.tensor([[127.0, -127, 64, 0]]))  # 63.5 rounds away from zero
    # the floor on the absmax makes tiny rows round to small levels, not blow up
    tiny = torch.full((1, 3), 1e-7)
    assert torch.all(quantize_activations(tiny).abs() <= 1e-5)


def test_activation_quant_clamps_to_int8_range():
    # a single-token row: after scaling, values land in [-127, 127]; clamp keeps -128..127 always
    x = torch.randn(1000, 64) * 10
    q = torch.round(quantize_activations(x) * activation_scale(x))
    assert q.min() >= -128 and q.max() <= 127
    assert (q.abs().amax(-1) == 127).all()


def test_weight_scale_is_kept_not_rederived():
    torch.manual_seed(0)
    w = torch.randn(16, 24)
    beta = weight_scale(w)
    wq = quantize_weights(w)
    assert torch.allclose(wq.abs().max(), beta)
    # re-deriving β from already ternary weights would rescale the layer (reference issue #18)
    assert not torch.allclose(weight_scale(wq), beta)
    assert torch.equal(ternarize(wq, beta) * beta, wq)
    assert torch.equal(weight_scale(torch.zeros(3, 3)), torch.tensor(1e-5))


def test_ste_gradients_equal_unquantized_path():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 24, requires_grad=True)
    g = torch.rand(24) + 0.5
    w = torch.randn(16, 24, requires_grad=True)
    upstream = torch.randn(4, 5, 16)
    # the STE backward is the backward of x_q Wqᵀ with the quantizers treated as identity:
    # dL/dx̂ = upstream · W_q, dL/dW = upstreamᵀ · x_q (both evaluated at the quantized values)
    (bitlinear_naive(x, g, w, quantize=True) * upstream).sum().backward()
    gx_q, gw_q = x.grad.clone(), w.grad.clone()
    x2 = x.detach().clone().requires_grad_()
    from mmfree_cli.kernels.bitlinear import rms_norm
    xn = rms_norm(x2, g, 1e-6)
    xq = xn + (quantize_activations(xn) - xn).detach()
    y = torch.nn.functional.linear(xq, quantize_weights(w.detach()))
    (y * upstream).sum().backward()
    gw_expected = (upstream.reshape(-1, 16).T @ quantize_activations(xn.detach()).reshape(-1, 24))
    assert torch.allclose(gx_q, x2.grad, atol=1e-6)
    assert torch.allclose(gw_q, gw_expected, atol=1e-5)


def test_scan_matches_loop_float64():
    torch.manual_seed(0)
    for T in (1, 2, 3, 17, 64, 129):
        i = torch.randn(2, T, 7, dtype=torch.float64)
        f = torch.rand(2, T, 7, dtype=torch.float64)
        h0 = torch.randn(2, 7, dtype=torch.float64)
        for init in (None, h0):
            a, a_last = hgrn_scan_naive(i, f, init)
            b, b_last = hgrn_recurrent_naive(i, f, init)
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
            assert torch.allclose(a_last, b_last, atol=1e-12, rtol=0)


def test_scan_gradients_match_loop():
    torch.manual_seed(1)
    i = torch.randn(2, 33, 5, dtype=torch.float64, requires_grad=True)
    f = torch.rand(2, 33, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 33, 5, dtype=torch.float64)
    grads = []
    for fn in (hgrn_scan_naive, hgrn_recurrent_naive):
        (fn(i, f, h0)[0] * up).sum().backward()
        grads.append([t.grad.clone() for t in (i, f, h0)])
        for t in (i, f, h0):
            t.grad = None
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)
