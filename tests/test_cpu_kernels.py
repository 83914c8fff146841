"""The CPU training fast paths held to their PyTorch twins, forward and backward, on awkward sizes.

Forward of BitLinear and RMSNorm must be bit-exact with the twin in float32 (same arithmetic in the
same order); gradients are the twin's STE gradients up to rounding: 1e-5 relative in float32 (another
summation order), 1e-12 in float64. The scan is held to the plain loop `hgrn_recurrent_naive`.
"""

import pytest
import torch

from mmfree_cli import kernels
from mmfree_cli.kernels import bitlinear as bl
from mmfree_cli.kernels import hgrn
from mmfree_cli.kernels.bitlinear.cpu import bitlinear_cpu, rms_norm_cpu
from mmfree_cli.kernels.bitlinear.naive import bitlinear_naive
from mmfree_cli.kernels.bitlinear.naive import rms_norm as rms_norm_naive
from mmfree_cli.kernels.hgrn.cpu import hgrn_scan_cpu
from mmfree_cli.kernels.hgrn.naive import hgrn_recurrent_naive

GRAD_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}
SHAPES = [((3, 63, 500), 77), ((1, 1, 7), 5), ((2, 5, 24), 16), ((130, 33), 260)]


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    a, b = a.detach(), b.detach()
    return bool(torch.isfinite(a).all()) and float((a - b).abs().max()) <= GRAD_RTOL[dtype] * float(b.abs().max())


def _inputs(shape, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g, dtype=dtype) * 3).requires_grad_()
    gamma = (torch.rand(shape[-1], generator=g, dtype=dtype) + 0.5).requires_grad_()
    w = (torch.randn(n, shape[-1], generator=g, dtype=dtype) * 0.05).requires_grad_()
    return x, gamma, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("shape,n", SHAPES)
def test_bitlinear_cpu_matches_twin(shape, n, quantize, dtype):
    x, gamma, w = _inputs(shape, n, dtype)
    fast, ref = bitlinear_cpu(x, gamma, w, quantize), bitlinear_naive(x, gamma, w, quantize)
    assert fast.shape == ref.shape and torch.equal(fast, ref)
    dy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(fast, (x, gamma, w), dy), torch.autograd.grad(ref, (x, gamma, w), dy)):
        assert a.shape == b.shape and _close(a, b, dtype)


def test_bitlinear_cpu_strided_input_and_partial_grads():
    x, gamma, w = _inputs((4, 9, 40), 12, torch.float32)
    xt = x.transpose(0, 1)  # non-contiguous [9, 4, 40]
    assert torch.equal(bitlinear_cpu(xt, gamma, w), bitlinear_naive(xt, gamma, w))
    frozen = w.detach()  # only x needs a gradient: the weight gradient is skipped, x's still right
    dy = torch.randn(9, 4, 12)
    (dx_fast,) = torch.autograd.grad(bitlinear_cpu(xt, gamma.detach(), frozen), x, dy)
    (dx_ref,) = torch.autograd.grad(bitlinear_naive(xt, gamma.detach(), frozen), x, dy)
    assert _close(dx_fast, dx_ref, torch.float32)


def test_bitlinear_cpu_rounding_ties_and_tiny_rows():
    # a row whose scaled values hit .5 exactly (127·k/254) and a row under the absmax floor
    x = torch.tensor([[254.0, 1.0, -1.0, 3.0, -3.0, 0.0], [1e-7, -2e-7, 0.0, 0.0, 5e-8, 0.0]], requires_grad=True)
    gamma, w = torch.ones(6), torch.randn(3, 6)
    assert torch.equal(bitlinear_cpu(x, gamma, w), bitlinear_naive(x, gamma, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_cpu_matches_twin(dtype):
    x, gamma, _ = _inputs((3, 63, 500), 1, dtype)
    fast, ref = rms_norm_cpu(x, gamma, 1e-6), rms_norm_naive(x, gamma, 1e-6)
    assert torch.equal(fast, ref)
    dy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(fast, (x, gamma), dy), torch.autograd.grad(ref, (x, gamma), dy)):
        assert _close(a, b, dtype)


def _scan_inputs(b, t, d, dtype, gates):
    g = torch.Generator().manual_seed(1)
    i = torch.randn(b, t, d, generator=g, dtype=dtype)
    f = {"uniform": torch.rand(b, t, d, generator=g, dtype=dtype),
         "extreme": torch.randint(0, 3, (b, t, d), generator=g).to(dtype) / 2}[gates]  # 0, 0.5, 1
    if gates == "extreme":
        f[:, ::7] = 1e-30  # gates near zero: nothing here may divide by a product of gates
    return i.requires_grad_(), f.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,t,d,gates", [(3, 63, 50, "uniform"), (2, 1, 500, "uniform"), (2, 200, 17, "extreme")])
@pytest.mark.parametrize("with_h0", [True, False])
def test_hgrn_scan_cpu_matches_loop(b, t, d, gates, with_h0, dtype):
    i, f = _scan_inputs(b, t, d, dtype, gates)
    h0 = torch.randn(b, d, dtype=dtype, requires_grad=True) if with_h0 else None
    (h, last), (h_ref, last_ref) = hgrn_scan_cpu(i, f, h0), hgrn_recurrent_naive(i, f, h0)
    assert _close(h, h_ref, dtype) and _close(last, last_ref, dtype)
    dh, dlast = torch.randn_like(h_ref), torch.randn_like(last_ref)
    inputs = (i, f) if h0 is None else (i, f, h0)
    fast = torch.autograd.grad((h * dh).sum() + (last * dlast).sum(), inputs)
    ref = torch.autograd.grad((h_ref * dh).sum() + (last_ref * dlast).sum(), inputs)
    for a, r in zip(fast, ref):
        assert a.shape == r.shape and _close(a, r, dtype)


def test_hgrn_scan_cpu_only_last_state_used():
    i, f = _scan_inputs(2, 10, 8, torch.float64, "uniform")
    (di, df) = torch.autograd.grad(hgrn_scan_cpu(i, f)[1].sum(), (i, f))
    (ri, rf) = torch.autograd.grad(hgrn_recurrent_naive(i, f)[1].sum(), (i, f))
    assert _close(di, ri, torch.float64) and _close(df, rf, torch.float64)


def test_dispatch_takes_fast_path_only_for_cpu_training():
    x, gamma, w = _inputs((2, 5, 24), 16, torch.float32)
    assert type(bl.bitlinear(x, gamma, w).grad_fn).__name__ == "BitLinearCPUBackward"
    assert type(bl.rms_norm(x, gamma, 1e-6).grad_fn).__name__ == "RMSNormCPUBackward"
    i, f = _scan_inputs(2, 5, 24, torch.float32, "uniform")
    assert type(hgrn.hgrn_scan(i, f)[0].grad_fn).__name__ == "HGRNScanCPUBackward"
    with torch.no_grad():  # inference keeps the twin: bit-identical anyway, and no Function overhead
        assert torch.equal(bl.bitlinear(x, gamma, w), bitlinear_naive(x, gamma, w))
    x64, g64, w64 = _inputs((2, 5, 24), 16, torch.float64)
    assert type(bl.bitlinear(x64, g64, w64).grad_fn).__name__ != "BitLinearCPUBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(bl.bitlinear(x, gamma, w).grad_fn).__name__ != "BitLinearCPUBackward"


def test_model_training_step_matches_twin(small_model, monkeypatch):
    """A whole training step of a small model: same loss, same gradients, through either path."""
    ids = torch.randint(0, 61, (3, 40), generator=torch.Generator().manual_seed(2))

    def step():
        model = small_model(torch.float32).train()
        out = model(ids, labels=ids)
        out.loss.backward()
        return out.loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss_fast, grad_fast = step()
    monkeypatch.setattr(kernels.bitlinear, "USE_CPU_TRAINING", False)
    monkeypatch.setattr(kernels.hgrn, "USE_CPU_TRAINING", False)
    loss_ref, grad_ref = step()
    # the scan sums in another order (last-bit differences can flip an int8 level downstream),
    # so the step is compared as a whole, not element by element
    assert abs(float(loss_fast - loss_ref)) <= 1e-4 * float(loss_ref)
    cos = torch.nn.functional.cosine_similarity(grad_fast, grad_ref, dim=0)
    assert cos > 0.999 and torch.isfinite(grad_fast).all()
