"""The hostile load scenario of bench/serve_hostile.py, asserting its behaviour only: under a 50 MB
body, a 32k-token prompt and long stop strings, 16 streaming clients get exactly their solo
greedy texts and the hostile requests get their documented statuses. (Timings are recorded by
the benchmark, never asserted.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serve_hostile import make_model, run_attack  # noqa: E402


@pytest.mark.slow
def test_sixteen_clients_keep_their_texts_under_attack(tmp_path):
    out = run_attack(make_model(tmp_path / "m"), clients=16, max_tokens=32)
    assert out["busy_texts"] == out["solo_texts"]
    assert all(len(t) > 0 for t in out["solo_texts"])
    hostile = out["hostile"]
    assert hostile["body_50MB"]["status"] == 413 and hostile["body_50MB"]["bytes_sent"] < 50 << 20
    assert hostile["prompt_32768"] == 200
    assert hostile["stops_4x100000"] == 400 and hostile["stops_4x256"] == 200
