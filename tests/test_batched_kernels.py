"""The batched-decode kernels (kernels/ternary_gemm/batched.py) against their PyTorch twins.

Without a GPU they run in Triton's interpreter on small shapes; `-m gpu` adds model-sized ones.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="Triton is not installed on this platform")

from mmfree_cli.kernels.ternary_gemm import batched, naive  # noqa: E402
from mmfree_cli.quant.packing import pack_i2  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def _codes_agree(qa, sa, qb, sb):
    """int8 codes equal except (rarely) one level where float32 rounding lands on a tie."""
    assert qa.shape == qb.shape and qa.dtype == torch.int8
    assert rel(sa, sb) <= 1e-6
    diff = (qa.int() - qb.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3


def test_planar_order_round_trips():
    q = torch.arange(2 * 7, dtype=torch.int8).reshape(2, 7)
    p = naive.to_planar(q)
    assert p.shape == (2, 8) and p[0].tolist() == [0, 4, 1, 5, 2, 6, 3, 0]
    assert naive.from_planar(p)[:, :7].equal(q)


@pytest.mark.parametrize("G,M,K,ng", [(3, 5, 300, 16), (1, 3, 70, 40), (3, 17, 64, 32),
                                      pytest.param(3, 64, 2048, 2048, marks=gpu),
                                      pytest.param(1, 256, 5632, 2048, marks=gpu),
                                      pytest.param(1, 100, 2048, 32000, marks=gpu)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_planar_gemm_matches_twin(G, M, K, ng, accumulate):
    torch.manual_seed(4)
    q = naive.to_planar(torch.randint(-128, 128, (G, M, K), dtype=torch.int8, device=DEVICE))
    s = torch.rand(G, M, device=DEVICE) + 0.5
    packed = pack_i2(torch.randint(-1, 2, (G * ng, K), device=DEVICE))
    beta = torch.rand(G, device=DEVICE) + 0.1
    base = torch.randn(M, G * ng, device=DEVICE) * 100
    fused = batched.planar_gemm(q, s, packed, beta, base.clone() if accumulate else None, accumulate)
    twin = naive.planar_gemm_naive(q, s, packed, beta, base.clone() if accumulate else None, accumulate)
    assert rel(fused, twin) <= 1e-6


@pytest.mark.parametrize("M,D,I", [(5, 70, 90), (2, 64, 128), pytest.param(64, 2048, 5632, marks=gpu)])
def test_row_kernels_match_twins(M, D, I):
    torch.manual_seed(5)
    dev = DEVICE
    x = torch.randn(M, D, device=dev) * 3
    gains, pre = torch.rand(3, D, device=dev) + 0.5, torch.rand(D, device=dev) + 0.5
    _codes_agree(*batched.rows_norm(x, pre, 1e-5, gains), *naive.rows_norm_naive(x, pre, 1e-5, gains))
    _codes_agree(*batched.rows_norm(x, None, 1e-6, gains[:1]), *naive.rows_norm_naive(x, None, 1e-6, gains[:1]))
    y, lb = torch.randn(M, 3 * D, device=dev) * 2, torch.rand(D, device=dev)
    gn, on = torch.rand(D, device=dev) + 0.5, torch.rand(D, device=dev) + 0.5
    for bound in (lb, None):
        # the state as the engine holds it: one layer's rows of a wider [L, B, d] buffer
        state = torch.randn(2, M + 3, D, device=dev)
        state_a, state_b = state.clone(), state.clone()
        qa, sa = batched.rows_step(y, state_a[1, :M], bound, gn, on, 1e-6)
        qb, sb = naive.rows_step_naive(y, state_b[1, :M], bound, gn, on, 1e-6)
        assert rel(state_a, state_b) <= 1e-6 and state_a[:, M:].equal(state[:, M:]) and state_a[0].equal(state[0])
        _codes_agree(qa, sa, qb, sb)
    yg, dn = torch.randn(M, 2 * I, device=dev), torch.rand(I, device=dev) + 0.5
    _codes_agree(*batched.rows_glu(yg, dn), *naive.rows_glu_naive(yg, dn))


def test_rows_do_not_depend_on_the_batch():
    """A row's codes and products are bit-identical alone and among others (serving relies on it)."""
    torch.manual_seed(6)
    K, ng = 70, 48
    x = torch.randn(6, K, device=DEVICE)
    gains = torch.rand(1, K, device=DEVICE) + 0.5
    packed, beta = pack_i2(torch.randint(-1, 2, (ng, K), device=DEVICE)), torch.rand(1, device=DEVICE) + 0.1
    q, s = batched.rows_norm(x, None, 1e-6, gains)
    all_rows = batched.planar_gemm(q, s, packed, beta)
    q1, s1 = batched.rows_norm(x[4:5], None, 1e-6, gains)
    assert q1.equal(q[:, 4:5]) and s1.equal(s[:, 4:5])
    assert batched.planar_gemm(q1, s1, packed, beta).equal(all_rows[4:5])
