"""On-GPU token choice (kernels/sampling.py): the Triton kernel in the interpreter against its twin
and against the host sampler's rules (`generate.choose_token`)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="Triton is not installed on this platform")

from mmfree_cli.generate import SamplingParams, choose_token  # noqa: E402
from mmfree_cli.kernels import sampling  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_greedy_rows_pick_the_first_maximum_like_torch():
    torch.manual_seed(0)
    logits = torch.randn(5, 300, device=DEVICE)
    logits[2, 7] = logits[2, 200] = 50.0  # a tie: the first wins
    temp = torch.zeros(5, device=DEVICE)
    seeds, counters = torch.arange(5, device=DEVICE), torch.zeros(5, dtype=torch.long, device=DEVICE)
    got = sampling.choose_tokens_kernel(logits, logits, temp, seeds, counters, block=64)
    assert got.tolist() == logits.argmax(-1).tolist() and got[2] == 7
    assert counters.tolist() == [1] * 5


@pytest.mark.slow  # 300 programs in the interpreter: ~40 s
def test_sampled_rows_follow_softmax_and_do_not_depend_on_their_row():
    """300 draws (one row each) of a 6-token distribution at temperature 0.7 match
    softmax(logits / 0.7) within a few standard errors; the same (seed, counter) draws the same token
    in another row of another batch."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0], device=DEVICE)
    n = 300
    rows = logits.repeat(n, 1)
    temp = torch.full((n,), 0.7, device=DEVICE)
    seeds, counters = torch.arange(n, device=DEVICE) * 7919, torch.full((n,), 3, dtype=torch.long, device=DEVICE)
    got = sampling.choose_tokens_kernel(rows, rows / 0.7, temp, seeds, counters.clone(), block=4)
    freq = torch.bincount(got.cpu(), minlength=6).double() / n
    p = torch.softmax(logits.cpu().double() / 0.7, 0)
    assert ((freq - p).abs() <= 4.5 * (p * (1 - p) / n).sqrt() + 1e-3).all(), (freq, p)
    one = sampling.choose_tokens_kernel(rows[:1], rows[:1] / 0.7, temp[:1], seeds[123:124], counters[:1].clone(),
                                        block=4)
    assert one.item() == got[123].item()


def test_filters_keep_what_the_host_sampler_keeps():
    """Rows with top-k / top-p / min-p: every kept token is one the host sampler can draw, and the
    host's support is kept (checked through the probabilities choose_token would use)."""
    torch.manual_seed(1)
    logits = torch.randn(4, 50, device=DEVICE) * 2
    top_k = torch.tensor([0, 5, 0, 3], device=DEVICE)
    top_p = torch.tensor([0.9, 1.0, 1.0, 0.5], device=DEVICE)
    min_p = torch.tensor([0.0, 0.0, 0.2, 0.1], device=DEVICE)
    scores = sampling.filter_scores(logits, top_k, top_p, min_p)
    for r in range(4):
        params = SamplingParams(temperature=1.0, top_k=int(top_k[r]), top_p=float(top_p[r]), min_p=float(min_p[r]))
        drawn = {choose_token(logits[r].cpu(), params, [], torch.Generator().manual_seed(s)) for s in range(400)}
        kept = set(torch.nonzero(torch.isfinite(scores[r])).flatten().tolist())
        assert drawn <= kept and len(kept) <= len(drawn) + 1, (r, drawn, kept)


def test_repetition_penalty_matches_the_host_rule():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    got = sampling.apply_penalty(logits, seen, torch.tensor([2.0]))
    assert got.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert choose_token(logits[0], SamplingParams(repetition_penalty=2.0), [0, 1], torch.Generator()) == 3
