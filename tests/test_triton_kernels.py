"""Every Triton kernel against its PyTorch twin, forward and backward, on awkward sizes.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before Triton
is imported) on small shapes; `-m gpu` runs the same checks on model-sized shapes on CUDA.
Tolerances (relative L2 error of the whole tensor): float32 ≤ 1e-4, bfloat16 ≤ 1e-2.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="Triton is not installed on this platform (pyproject installs it on linux x86-64)")

from mmfree_cli.kernels.bitlinear import fused as bl_fused  # noqa: E402
from mmfree_cli.kernels.bitlinear.naive import bitlinear_naive  # noqa: E402
from mmfree_cli.kernels.bitlinear.naive import rms_norm as rms_norm_naive
from mmfree_cli.kernels.hgrn.chunk import hgrn_chunk  # noqa: E402
from mmfree_cli.kernels.hgrn.fused_recurrent import hgrn_fused_recurrent  # noqa: E402
from mmfree_cli.kernels.hgrn.naive import hgrn_recurrent_naive  # noqa: E402
from mmfree_cli.kernels.rowwise import fused as rw_fused  # noqa: E402
from mmfree_cli.kernels.rowwise import naive as rw_naive
from mmfree_cli.kernels.ternary_gemm import decode as tg_decode  # noqa: E402
from mmfree_cli.kernels.ternary_gemm.naive import gemv_glu_naive, gemv_norm_naive, gemv_step_naive, ternary_gemm_naive  # noqa: E402
from mmfree_cli.kernels.ternary_gemm.packed import ternary_gemm_packed  # noqa: E402
from mmfree_cli.quant.packing import pack_i2  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
gpu = pytest.mark.gpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def sizes(small, big):
    """Small shapes everywhere (the interpreter is slow); model-sized ones on the GPU only."""
    return [small, pytest.param(*big, marks=gpu)]


def _bitlinear_case(shape, n, quantize, dtype, mode, monkeypatch):
    monkeypatch.setattr(bl_fused, "FORWARD_MATMUL", mode)
    torch.manual_seed(1)
    k = shape[-1]
    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    g = (torch.rand(k, device=DEVICE) + 0.5).requires_grad_()
    w = (torch.randn(n, k, device=DEVICE) * 0.05).requires_grad_()
    results = []
    for fn in (bl_fused.bitlinear_fused, bitlinear_naive):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = fn(x, g, w, quantize)
        dy = torch.randn(y.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(2)).to(y.dtype)
        y.backward(dy)
        results.append([y.detach()] + [t.grad.clone() for t in (x, g, w)])
        for t in (x, g, w):
            t.grad = None
    return results


@pytest.mark.parametrize("shape,n", sizes(((2, 9, 50), 40), ((4, 512, 1024), 2816)))
@pytest.mark.parametrize("quantize,mode", [(True, "int8"), (True, "float"), (False, "float")])
def test_bitlinear_fp32_matches_twin(shape, n, quantize, mode, monkeypatch):
    fused, naive = _bitlinear_case(shape, n, quantize, torch.float32, mode, monkeypatch)
    assert fused[0].dtype == torch.float32 and fused[0].shape == naive[0].shape
    for name, a, b in zip(("y", "dx", "dγ", "dW"), fused, naive):
        assert rel(a, b) <= TOL[torch.float32], name


@pytest.mark.parametrize("shape,n", sizes(((3, 5, 64), 48), ((2, 2048, 1024), 1024)))
@pytest.mark.parametrize("mode", ["int8", "float"])
def test_bitlinear_bf16_autocast_matches_twin(shape, n, mode, monkeypatch):
    fused, naive = _bitlinear_case(shape, n, True, torch.bfloat16, mode, monkeypatch)
    assert fused[0].dtype == naive[0].dtype == torch.bfloat16
    for name, a, b in zip(("y", "dx", "dγ", "dW"), fused, naive):
        assert rel(a, b) <= TOL[torch.bfloat16], name


@pytest.mark.parametrize("shape", [(3, 7, 70), pytest.param((8, 2048, 1024), marks=gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_twin(shape, dtype):
    torch.manual_seed(6)
    x = torch.randn(*shape, device=DEVICE).to(dtype).requires_grad_()
    g = (torch.rand(shape[-1], device=DEVICE) + 0.5).requires_grad_()
    dy = torch.randn(*shape, device=DEVICE).to(dtype)
    outs = []
    for fn in (bl_fused.rms_norm_fused, rms_norm_naive):
        y = fn(x, g, 1e-6)
        y.backward(dy)
        outs.append([y.detach(), x.grad.clone(), g.grad.clone()])
        x.grad = g.grad = None
    assert outs[0][0].dtype == outs[1][0].dtype == dtype
    for name, a, b in zip(("y", "dx", "dγ"), *outs):
        assert rel(a, b) <= TOL[dtype], name


def test_ternary_codes_round_half_to_even_at_ties():
    w = torch.tensor([0.5, -0.5, 0.50001, -0.50001, 1.7, -3.0, 0.0], device=DEVICE)
    codes = bl_fused.ternary_codes(w, torch.ones(1, device=DEVICE), torch.int8)
    assert codes.tolist() == [0, 0, 1, -1, 1, -1, 0]


@pytest.mark.parametrize("fn,chunk", [(hgrn_chunk, 16), (hgrn_fused_recurrent, None)])
@pytest.mark.parametrize("B,T,D", sizes((2, 63, 70), (4, 2048, 1024)))
@pytest.mark.parametrize("with_h0", [True, False])
def test_hgrn_scan_matches_twin(fn, chunk, B, T, D, with_h0):
    torch.manual_seed(3)
    i = torch.randn(B, T, D, device=DEVICE, requires_grad=True)
    f = torch.rand(B, T, D, device=DEVICE).requires_grad_()
    h0 = torch.randn(B, D, device=DEVICE, requires_grad=True) if with_h0 else None
    dh, dT = torch.randn(B, T, D, device=DEVICE), torch.randn(B, D, device=DEVICE)
    outs = []
    kernel = (lambda a, b, c: fn(a, b, c, chunk)) if chunk and D < 1000 else fn
    for scan in (kernel, hgrn_recurrent_naive):
        h, last = scan(i, f, h0)
        # without h0, leave the final state out of the loss: its gradient then never materialises
        ((h * dh).sum() + ((last * dT).sum() if with_h0 else 0)).backward()
        leaves = [i, f] + ([h0] if with_h0 else [])
        outs.append([h.detach(), last.detach()] + [t.grad.clone() for t in leaves])
        for t in leaves:
            t.grad = None
    for name, a, b in zip(("h", "h_T", "di", "df", "dh0"), *outs):
        assert rel(a, b) <= TOL[torch.float32], name


@pytest.mark.parametrize("G,M,K,ng", [(3, 5, 300, 16), (3, 2, 300, 16), (1, 1, 70, 40), (3, 1, 300, 16),
                                      pytest.param(3, 64, 2048, 2048, marks=gpu),
                                      pytest.param(1, 2048, 5632, 2048, marks=gpu),
                                      pytest.param(1, 1, 2048, 32000, marks=gpu)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_ternary_gemm_matches_twin(G, M, K, ng, accumulate):
    torch.manual_seed(4)
    q = torch.randint(-128, 128, (G, M, K), dtype=torch.int8, device=DEVICE)
    s = torch.rand(G, M, device=DEVICE) + 0.5
    packed = pack_i2(torch.randint(-1, 2, (G * ng, K), device=DEVICE))
    beta = torch.rand(G, device=DEVICE) + 0.1
    base = torch.randn(M, G * ng, device=DEVICE) * 100
    out_fused = ternary_gemm_packed(q, s, packed, beta, base.clone() if accumulate else None, accumulate)
    out_naive = ternary_gemm_naive(q, s, packed, beta, base.clone() if accumulate else None, accumulate)
    assert rel(out_fused, out_naive) <= 1e-6


def _gemv_agree(a, b):
    """A fused one-token GEMV against its twin. Both quantise in float32; where their roundings differ
    (rarely, at a tie) one int8 level moves, which moves the outputs by ~1e-3 relative: so most rows
    agree to 1e-5 and all to 1e-2."""
    assert torch.isfinite(a).all()
    err = (a.double() - b.double()).abs() / b.double().abs().clamp(min=1e-3 * b.double().abs().max().item())
    assert (err <= 1e-5).float().mean() >= 0.95 and err.max() <= 1e-2, err.max()


@pytest.mark.parametrize("G,K,ng", [(3, 70, 16), (1, 300, 40), (3, 64, 32), pytest.param(3, 2048, 2048, marks=gpu),
                                    pytest.param(1, 2048, 32000, marks=gpu)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_decode_gemv_norm_matches_twin(G, K, ng, accumulate):
    torch.manual_seed(7)
    x = torch.randn(1, K, device=DEVICE) * 3
    pre, gains = torch.rand(K, device=DEVICE) + 0.5, torch.rand(G, K, device=DEVICE) + 0.5
    packed = pack_i2(torch.randint(-1, 2, (G * ng, K), device=DEVICE))
    beta = torch.rand(G, device=DEVICE) + 0.1
    base = torch.randn(1, G * ng, device=DEVICE) * 10
    out = base.clone() if accumulate else torch.full((1, G * ng), float("nan"), device=DEVICE)
    fused = tg_decode.decode_gemv(tg_decode.MODE_NORM, x, pre, gains, packed, beta, K, 1e-5, out=out,
                                  accumulate=accumulate)
    naive = gemv_norm_naive(x, pre, 1e-5, gains, packed, beta, base.clone() if accumulate else None, accumulate)
    _gemv_agree(fused, naive)


@pytest.mark.parametrize("D,I,N", [(70, 90, 24), (64, 128, 64), pytest.param(2048, 5632, 2048, marks=gpu)])
@pytest.mark.parametrize("bound", [True, False])
def test_decode_gemv_step_and_glu_match_twins(D, I, N, bound):
    torch.manual_seed(8)
    dev = DEVICE
    y, h0 = torch.randn(1, 3 * D, device=dev) * 2, torch.randn(D, device=dev)
    lb = torch.rand(D, device=dev) if bound else None
    gn, on = torch.rand(D, device=dev) + 0.5, torch.rand(D, device=dev) + 0.5
    packed, beta = pack_i2(torch.randint(-1, 2, (N, D), device=dev)), torch.rand(1, device=dev) + 0.1
    base = torch.randn(1, N, device=dev) * 10
    h1a, h1b = torch.full_like(h0, float("nan")), torch.full_like(h0, float("nan"))
    fused = tg_decode.decode_gemv(tg_decode.MODE_STEP, y, gn, on[None], packed, beta, D, 1e-6, lb=lb, h0=h0,
                                  h1=h1a, out=base.clone(), accumulate=True)
    naive = gemv_step_naive(y, h0, h1b, lb, gn, 1e-6, on, packed, beta, base.clone(), True)
    assert rel(h1a, h1b) <= 1e-5
    _gemv_agree(fused, naive)
    yg, dn = torch.randn(1, 2 * I, device=dev) * 2, torch.rand(I, device=dev) + 0.5
    packed = pack_i2(torch.randint(-1, 2, (N, I), device=dev))
    fused = tg_decode.decode_gemv(tg_decode.MODE_GLU, yg, None, dn[None], packed, beta, I,
                                  out=torch.full((1, N), float("nan"), device=dev))
    _gemv_agree(fused, gemv_glu_naive(yg, dn, packed, beta))


def _codes_agree(qa, sa, qb, sb):
    """int8 codes: equal except (rarely) one level where float32 rounding lands on a tie."""
    assert rel(sa, sb) <= 1e-6
    diff = (qa.int() - qb.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3


@pytest.mark.parametrize("M,D,I", sizes((5, 70, 90), (64, 2048, 5632)))
def test_rowwise_kernels_match_twins(M, D, I):
    torch.manual_seed(5)
    dev = DEVICE
    x = torch.randn(M, D, device=dev) * 3
    gains, pre = torch.rand(3, D, device=dev) + 0.5, torch.rand(D, device=dev) + 0.5
    _codes_agree(*rw_fused.norm_quant_fused(x, gains, pre, 1e-5), *rw_naive.norm_quant_naive(x, gains, pre, 1e-5))
    _codes_agree(*rw_fused.norm_quant_fused(x, gains[:1]), *rw_naive.norm_quant_naive(x, gains[:1]))
    y, lb = torch.randn(M, 3 * D, device=dev) * 2, torch.rand(D, device=dev)
    for bound in (lb, None):
        a, b = rw_fused.hgrn_gates_fused(y, bound), rw_naive.hgrn_gates_naive(y[:, :D], y[:, D:2 * D], bound)
        assert rel(a[0], b[0]) <= 1e-5 and rel(a[1], b[1]) <= 1e-5
    h, gn, on = torch.randn(M, D, device=dev), torch.rand(D, device=dev) + 0.5, torch.rand(D, device=dev) + 0.5
    _codes_agree(*rw_fused.hgrn_output_fused(y, h, gn, on, 1e-6), *rw_naive.hgrn_output_naive(y[:, 2 * D:], h, gn, on, 1e-6))
    state_a, state_b = h.clone(), h.clone()
    qa, sa = rw_fused.hgrn_step_fused(y, state_a, lb, gn, on, 1e-6)
    qb, sb = rw_naive.hgrn_step_naive(y, state_b, lb, gn, on, 1e-6)
    assert rel(state_a, state_b) <= 1e-5
    _codes_agree(qa, sa, qb, sb)
    yg = torch.randn(M, 2 * I, device=dev)
    dn = torch.rand(I, device=dev) + 0.5
    _codes_agree(*rw_fused.glu_quant_fused(yg, dn), *rw_naive.glu_quant_naive(yg, dn))


def test_dispatch_sends_cpu_tensors_to_the_twins():
    from mmfree_cli.kernels.bitlinear import bitlinear, rms_norm
    assert torch.equal(rms_norm(torch.ones(2, 4), torch.ones(4), 1e-6), rms_norm_naive(torch.ones(2, 4), torch.ones(4), 1e-6))
    from mmfree_cli.kernels.hgrn import hgrn_scan
    x, g, w = torch.randn(2, 3, 8), torch.ones(8), torch.randn(4, 8)
    assert torch.equal(bitlinear(x, g, w), bitlinear_naive(x, g, w))
    i, f = torch.randn(1, 5, 8), torch.rand(1, 5, 8)
    assert torch.equal(hgrn_scan(i, f)[0], hgrn_recurrent_naive(i, f)[0]) or rel(hgrn_scan(i, f)[0], hgrn_recurrent_naive(i, f)[0]) < 1e-6
