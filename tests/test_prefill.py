"""Chunked prompt reading gives the whole read's state and logits; long CLI prompts are bounded."""

from __future__ import annotations

import torch

from mmfree_cli.engines import load_engine
from mmfree_cli.prefill import PromptFeed, prefill_chunked
from test_generate import make_model_dir
from test_generate_cli import mmfree, project  # noqa: F401  (fixture)


def test_chunks_equal_one_read(tmp_path):
    engine = load_engine("torch", make_model_dir(tmp_path / "m"), dtype="float64")
    ids = list(range(3, 203))
    whole, whole_state = engine.prefill(torch.tensor([ids]), engine.new_state(1))
    for chunk in (1, 7, 64, 500):
        logits, state = prefill_chunked(engine, ids, engine.new_state(1), chunk=chunk)
        torch.testing.assert_close(logits, whole[0, -1], rtol=0, atol=1e-10)
        torch.testing.assert_close(state, whole_state, rtol=0, atol=1e-10)
    feed = PromptFeed(engine, ids)
    steps = 0
    while not feed.done:
        feed.advance(13)
        steps += 1
    assert steps == 16
    torch.testing.assert_close(feed.logits, whole[0, -1], rtol=0, atol=1e-10)


def test_long_cli_prompts_are_refused_in_one_line_or_read_in_chunks(project):  # noqa: F811
    r = mmfree("generate", "-n", "2", cwd=project, stdin="x" * 40_000)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--max-prompt-tokens 32768" in r.stderr, r.stderr
    r = mmfree("generate", "-n", "2", "--max-prompt-tokens", "50000", "--json", cwd=project, stdin="x" * 40_000)
    assert r.returncode == 0, r.stderr
    assert '"prompt_tokens": 40000' in r.stdout
    r = mmfree("chat", "--template", "none", "-n", "2", "--max-prompt-tokens", "10", cwd=project, stdin="y" * 11 + "\nhi\n")
    assert r.returncode == 0 and "error: the prompt has 11 tokens" in r.stdout and r.stdout.count("tokens/s") == 1
