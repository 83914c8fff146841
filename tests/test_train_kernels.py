"""The training kernels that keep activation memory down (gated scan, GLU BitLinear, fused head +
cross-entropy), forward and backward, against their PyTorch twins.

Without a GPU they run in Triton's interpreter (TRITON_INTERPRET=1) on small, awkward shapes;
`-m gpu` runs model-sized shapes on CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from mmfree_cli.kernels import bitlinear as bl_pkg  # noqa: E402
from mmfree_cli.kernels import hgrn as hgrn_pkg
from mmfree_cli.kernels.bitlinear import head_ce  # noqa: E402
from mmfree_cli.kernels.bitlinear.glu import glu_bitlinear_fused  # noqa: E402
from mmfree_cli.kernels.bitlinear.naive import bitlinear_naive  # noqa: E402
from mmfree_cli.kernels.hgrn.gated import hgrn_gated_fused  # noqa: E402
from mmfree_cli.kernels.hgrn.naive import hgrn_gated_naive  # noqa: E402
from mmfree_cli.model import HGRNBitForCausalLM  # noqa: E402
from mmfree_cli.model.config import HGRNBitConfig  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
gpu = pytest.mark.gpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def leaf(*shape, scale=1.0, shift=0.0, dtype=torch.float32):
    return (torch.randn(*shape, device=DEVICE) * scale + shift).to(dtype).requires_grad_()


def run_both(fns, inputs, make_loss):
    """Forward + backward of each fn on the same leaves → [[outputs..., grads...], ...]."""
    results = []
    for fn in fns:
        outs = fn(*inputs)
        make_loss(outs).backward()
        outs = outs if isinstance(outs, tuple) else (outs,)
        results.append([o.detach().clone() for o in outs] +
                       [t.grad.clone() for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad])
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.grad = None
    return results


@pytest.mark.parametrize("B,T,D", [(2, 70, 50), (1, 5, 33), pytest.param(4, 2048, 1024, marks=gpu)])
@pytest.mark.parametrize("with_lb,with_h0", [(True, False), (False, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_scan_matches_twin(B, T, D, with_lb, with_h0, dtype):
    torch.manual_seed(3)
    yi, yf, yg = leaf(B, T, D, dtype=dtype), leaf(B, T, D, scale=2, shift=1, dtype=dtype), leaf(B, T, D, dtype=dtype)
    lb = torch.rand(D, device=DEVICE).requires_grad_() if with_lb else None
    gain = (torch.rand(D, device=DEVICE) + 0.5).requires_grad_()
    h0 = leaf(B, D) if with_h0 else None
    do = torch.randn(B, T, D, device=DEVICE).to(dtype)
    dlast = torch.randn(B, D, device=DEVICE)
    inputs = [yi, yf, yg, lb, gain, 1e-6, h0]
    fns = (lambda *a: hgrn_gated_fused(*a), lambda *a: hgrn_gated_naive(*a))
    fused, naive = run_both(fns, inputs, lambda o: (o[0].float() * do).sum() + (o[1].float() * dlast).sum())
    assert fused[0].dtype == dtype and fused[1].dtype == torch.float32
    names = ["o", "h_T", "dyi", "dyf", "dyg"] + (["dlb"] if with_lb else []) + ["dγ"] + (["dh0"] if with_h0 else [])
    for name, a, b in zip(names, fused, naive, strict=True):
        assert rel(a, b) <= TOL[dtype], name


def under_autocast(fn, dtype):
    def run(*a):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return fn(*a)
    return run


@pytest.mark.parametrize("M,K,N", [(37, 45, 24), (5, 64, 70), pytest.param(8192, 2816, 1024, marks=gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_glu_bitlinear_matches_twin(M, K, N, dtype):
    torch.manual_seed(4)
    y = leaf(2, M, 2 * K)
    g = (torch.rand(K, device=DEVICE) + 0.5).requires_grad_()
    w = leaf(N, K, scale=0.05)
    dout = torch.randn(2, M, N, device=DEVICE)

    def naive(y, g, w):
        gate, up = y.chunk(2, dim=-1)
        return bitlinear_naive(F.silu(gate) * up, g, w)

    fused, twin = run_both((under_autocast(glu_bitlinear_fused, dtype), under_autocast(naive, dtype)), [y, g, w],
                           lambda o: (o.float() * dout).sum())
    assert fused[0].dtype == twin[0].dtype == dtype
    for name, a, b in zip(("out", "dy", "dγ", "dW"), fused, twin, strict=True):
        assert rel(a, b) <= TOL[dtype], name


@pytest.mark.parametrize("M,K,V", [(45, 40, 61), (9, 64, 130), pytest.param(16384, 1024, 32000, marks=gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_cross_entropy_matches_twin(M, K, V, dtype, monkeypatch):
    monkeypatch.setattr(head_ce, "CHUNK_BYTES", 4 * V * 7 if M < 1000 else head_ce.CHUNK_BYTES)  # several chunks
    torch.manual_seed(5)
    x = leaf(M, K, dtype=dtype)
    g = (torch.rand(K, device=DEVICE) + 0.5).requires_grad_()
    w = leaf(V, K, scale=0.05)
    targets = torch.randint(0, V, (M,), device=DEVICE)
    targets[::4] = -100

    def naive(x, g, w, t):
        return F.cross_entropy(bitlinear_naive(x, g, w).float(), t, reduction="sum", ignore_index=-100)

    fused, twin = run_both((under_autocast(head_ce.head_ce_fused, dtype), under_autocast(naive, dtype)),
                           [x, g, w, targets], lambda o: o * 0.5)
    assert fused[0].dtype == torch.float32
    for name, a, b in zip(("loss", "dx", "dγ", "dW"), fused, twin, strict=True):
        assert rel(a, b) <= TOL[dtype], name


def test_head_cross_entropy_without_grad_returns_the_loss():
    torch.manual_seed(6)
    x, g, w = torch.randn(20, 32, device=DEVICE), torch.ones(32, device=DEVICE), torch.randn(50, 32, device=DEVICE)
    t = torch.randint(0, 50, (20,), device=DEVICE)
    with torch.no_grad():
        loss = head_ce.head_ce_fused(x, g, w, t)
    expected = F.cross_entropy(bitlinear_naive(x, g, w).float(), t, reduction="sum")
    assert rel(loss, expected) <= 1e-5


def small_model(seed=0):
    torch.manual_seed(seed)
    config = HGRNBitConfig(vocab_size=67, hidden_size=48, num_hidden_layers=2, intermediate_size=80,
                           max_position_embeddings=128)
    return HGRNBitForCausalLM(config).to(DEVICE)


def model_grads(model, ids, autocast: bool):
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _fused_on(monkeypatch, on: bool):
    for pkg in (bl_pkg, hgrn_pkg):
        monkeypatch.setattr(pkg, "USE_TRITON", on)
        monkeypatch.setattr(pkg, "TRITON_ON_CPU", on)
        monkeypatch.setattr(pkg, "USE_CPU_TRAINING", False)


@pytest.mark.slow  # ~1 min a mode in the interpreter
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_model_training_path_matches_the_twin_path(mode, monkeypatch):
    """The whole model with every fused kernel (and each checkpointing mode) against the plain PyTorch path."""
    model = small_model()
    ids = torch.randint(0, 67, (2, 70), device=DEVICE)
    _fused_on(monkeypatch, False)
    loss_twin, grads_twin = model_grads(model, ids, autocast=False)
    _fused_on(monkeypatch, True)
    model.set_activation_checkpointing(mode)
    out = model(ids, labels=ids)
    assert out.logits is None  # the fused head never built them
    loss, grads = model_grads(model, ids, autocast=False)
    assert rel(loss, loss_twin) <= 1e-4
    for name, g in grads_twin.items():
        assert rel(grads[name], g) <= 1e-3, name


def test_residual_stream_is_bf16_under_autocast(monkeypatch):
    _fused_on(monkeypatch, True)
    model = small_model()
    seen = []
    model.model.layers[1].register_forward_hook(lambda m, a, out: seen.append(out[0].dtype))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        model(torch.randint(0, 67, (1, 9), device=DEVICE), labels=torch.randint(0, 67, (1, 9), device=DEVICE))
    assert seen == [torch.bfloat16]


def test_unknown_checkpointing_mode_is_a_user_error():
    from mmfree_cli.errors import UserError
    with pytest.raises(UserError, match="selective"):
        small_model().set_activation_checkpointing("some")
