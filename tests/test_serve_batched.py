"""serve_batch.BatchedScheduler: continuous batching over the cuda engine's batched decoder.

On a machine without a GPU the cuda engine runs on its kernels' PyTorch twins (device="cpu"), which
is enough to hold the scheduling to its promises: requests join and leave between steps, more wait
when the slots are full, each request's tokens equal the ones it gets alone (greedy and sampled),
a cancelled request frees its slot, and a full queue refuses at once. `-m gpu` runs it on CUDA.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from conftest import perturb, small_config
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines.cuda import CudaEngine
from mmfree_cli.generate import SamplingParams, complete
from mmfree_cli.model import HGRNBitForCausalLM
from mmfree_cli.model.checkpoint import save_pretrained
from mmfree_cli.serve import APIError, Job, make_scheduler, submit
from mmfree_cli.serve_batch import PREFILL_TOKENS, BatchedScheduler, ServerBusy

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
PROMPTS = ["Hello", "ROMEO:", "The quick", "x", "Once upon", "42", "To be,", "é"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = small_config(vocab_size=260, hidden_size=64, intermediate_size=128, bos_token_id=256, eos_token_id=257)
    model = HGRNBitForCausalLM(config)
    perturb(model)
    path = tmp_path_factory.mktemp("runs") / "tiny"
    save_pretrained(model, path)
    ByteTokenizer().save(path)
    return path


def _serve(engine, requests, max_batch, cancel_after=None, scheduler=None):
    """Submit (prompt, params) requests at once → their texts (None for a cancelled one)."""
    async def main():
        sched = scheduler or BatchedScheduler(engine, max_batch)
        loop = asyncio.get_running_loop()
        jobs = [Job(engine.tokenizer.encode(p), params, loop) for p, params in requests]
        for job in jobs:
            sched.submit(job)

        async def collect(i, job):
            parts = []
            while True:
                kind, value = await asyncio.wait_for(job.events.get(), 120)
                if kind == "text":
                    parts.append(value)
                    if cancel_after == i:
                        job.cancelled = True
                        return None
                elif kind == "error":
                    raise value
                else:
                    return "".join(parts)
        texts = await asyncio.gather(*(collect(i, j) for i, j in enumerate(jobs)))
        return texts, sched
    return asyncio.run(main())


@pytest.mark.parametrize("device", DEVICES)
def test_batched_requests_get_their_solo_text(run_dir, device):
    engine = CudaEngine.load(run_dir, device=device)
    greedy = [(p, SamplingParams(max_new_tokens=6 + i, temperature=0.0, ignore_eos=True)) for i, p in enumerate(PROMPTS)]
    sampled = [(p, SamplingParams(max_new_tokens=9, temperature=0.9, top_p=0.9, seed=i, ignore_eos=True))
               for i, p in enumerate(PROMPTS[:3])]
    penalised = [(PROMPTS[1], SamplingParams(max_new_tokens=9, temperature=0.0, repetition_penalty=1.5,
                                             ignore_eos=True))]
    requests = greedy + sampled + penalised
    together, sched = _serve(engine, requests, max_batch=4)  # 12 requests through 4 slots
    assert sched.batch_peak == 4
    alone = [_serve(engine, [r], max_batch=1)[0][0] for r in requests]
    assert together == alone
    assert all(len(t) > 0 for t in together)
    if device == "cpu":  # the batched twins compute as the one-token path's twins: same greedy text
        assert together[0] == complete(engine, PROMPTS[0], max_new_tokens=6, ignore_eos=True)


def test_make_scheduler_picks_the_batched_one_for_the_cuda_engine(run_dir):
    engine = CudaEngine.load(run_dir, device="cpu")
    assert isinstance(make_scheduler(engine, 2), BatchedScheduler)


def test_a_cancelled_request_frees_its_slot(run_dir):
    engine = CudaEngine.load(run_dir, device="cpu")
    params = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    texts, _ = _serve(engine, [(p, params) for p in PROMPTS[:3]], max_batch=1, cancel_after=0)
    assert texts[0] is None and all(texts[1:])
    assert texts[1:] == [_serve(engine, [(p, params)], 1)[0][0] for p in PROMPTS[1:3]]


def test_a_full_queue_refuses_at_once(run_dir):
    engine = CudaEngine.load(run_dir, device="cpu")
    sched = BatchedScheduler(engine, max_batch=1, max_queue=0)
    job = Job([1, 2], SamplingParams(max_new_tokens=2), asyncio.new_event_loop())
    with pytest.raises(ServerBusy):
        sched.submit(job)
    with pytest.raises(APIError) as e:  # what the HTTP handlers answer
        submit(sched, job)
    assert e.value.status == 503


def test_a_long_prompt_is_read_a_chunk_between_the_others_steps(run_dir):
    """A prompt longer than PREFILL_TOKENS is read a chunk at a time between decode steps (others
    keep getting tokens), and gives the text it gives alone and through `complete`."""
    engine = CudaEngine.load(run_dir, device="cpu")
    long_prompt = "To be, or not to be: " * 40  # 840 tokens: four chunks of at most 256
    params = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    sched = BatchedScheduler(engine, max_batch=2)
    order = []
    step, prefill = sched.decoder.step, engine.prefill
    sched.decoder.step = lambda n: order.append("step") or step(n)
    engine.prefill = lambda tokens, state: order.append(tokens.shape[1]) or prefill(tokens, state)
    texts, _ = _serve(engine, [("x", params), (long_prompt, SamplingParams(max_new_tokens=4, temperature=0.0,
                                                                           ignore_eos=True))],
                      max_batch=2, scheduler=sched)
    chunks = [i for i, e in enumerate(order) if e != "step" and e > 1]
    assert len(chunks) == 4 and all(order[i] <= PREFILL_TOKENS for i in chunks)
    assert all("step" in order[a:b] for a, b in zip(chunks, chunks[1:]))  # the short one stepped between
    engine.prefill = prefill
    assert texts[1] == _serve(engine, [(long_prompt, SamplingParams(max_new_tokens=4, temperature=0.0,
                                                                    ignore_eos=True))], 1)[0][0]
    assert texts[1] == complete(engine, long_prompt, max_new_tokens=4, ignore_eos=True)
