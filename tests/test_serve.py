"""`mmfree serve` as a subprocess on a free loopback port, driven with the official openai client."""

from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from helpers import MMFREE, serving
from mmfree_cli.chat import builtin_template
from mmfree_cli.engines import load_engine
from mmfree_cli.generate import Generation, SamplingParams, complete
from test_generate import make_model_dir

MODEL_ID = "tiny-test"
PROMPTS = ["Hello", "ROMEO:", "The quick brown fox", "x", "Once upon a time", "é", "42", "To be, or not"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("servemodel"), printable=True)


@pytest.fixture(scope="module")
def engine(model_dir):
    torch.set_num_threads(1)
    return load_engine("torch", model_dir, dtype="float64")


@pytest.fixture(scope="module")
def server(model_dir):
    """float64, so that a request decoded in a batch of 8 rounds exactly as one decoded alone
    (in float32 a batched matmul may flip a near-tied token of a random model: docs/design.md §2)."""
    with serving(model_dir, "--model-name", MODEL_ID, "--dtype", "float64", "--max-batch", "8",
                 "--max-tokens", "64", timeout=90) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_completions_plain_and_streamed(client, engine):
    want = complete(engine, "ROMEO:", max_new_tokens=20)
    got = client.completions.create(model=MODEL_ID, prompt="ROMEO:", max_tokens=20, temperature=0)
    assert got.choices[0].text == want and got.choices[0].finish_reason == "length"
    assert got.usage.completion_tokens == 20 and got.usage.prompt_tokens == len("ROMEO:")  # bytes, no BOS
    chunks = list(client.completions.create(model=MODEL_ID, prompt="ROMEO:", max_tokens=20, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completion_stop_and_seeded_sampling(client, engine):
    full = complete(engine, "Hello", max_new_tokens=30)
    stop = full[10:12]
    got = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=30, temperature=0, stop=[stop])
    assert got.choices[0].text == full[:full.index(stop)] and got.choices[0].finish_reason == "stop"
    kw = dict(model=MODEL_ID, prompt="Hello", max_tokens=20, temperature=0.9, top_p=0.9, seed=5)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text == complete(engine, "Hello", 20, 0.9, 5, top_p=0.9)
    del kw["seed"]  # without one, each request draws its own
    assert len({client.completions.create(**kw).choices[0].text for _ in range(4)}) > 1


def test_chat_plain_and_streamed(client, engine, server):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}]
    template = builtin_template("dialogue")
    rendered = template.render(messages, add_generation_prompt=True)
    want = Generation(engine, rendered, SamplingParams(max_new_tokens=24, stop=template.stop)).run()
    got = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24, temperature=0)
    assert got.choices[0].message.role == "assistant" and got.choices[0].message.content == want
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens
    assert httpx.get(server + "/health").json()["prefix_cache_hits"] >= 1  # the system prompt was read once


def test_eight_concurrent_clients_get_their_own_answers(client, server):
    def ask(i: int, stream: bool) -> str:
        kw = dict(model=MODEL_ID, prompt=PROMPTS[i], max_tokens=40, temperature=0)
        if stream:
            return "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
        return client.completions.create(**kw).choices[0].text
    alone = [ask(i, False) for i in range(8)]
    assert len(set(alone)) == 8
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8), [i % 2 == 0 for i in range(8)]))
    assert together == alone
    assert httpx.get(server + "/health").json()["batch_peak"] > 1  # they were decoded together


@pytest.mark.parametrize("body, status, needle", [
    ({"model": MODEL_ID, "prompt": "x", "max_tokens": 65}, 400, "more than this server allows"),
    ({"model": MODEL_ID, "prompt": "x" * 40000}, 400, "prompt has"),
    ({"model": MODEL_ID, "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": MODEL_ID, "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL_ID, "prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"model": MODEL_ID, "prompt": "x", "n": 3}, 400, "n=3"),
    ({"model": MODEL_ID, "prompt": [7, 99999]}, 400, "vocabulary"),
    ({"model": MODEL_ID}, 400, "prompt"),
])
def test_bad_completion_requests_get_4xx_bodies(server, body, status, needle):
    r = httpx.post(server + "/v1/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"] and r.json()["error"]["type"]


def test_the_model_field_may_be_missing_or_any_name(server, client):
    """One model per server: no need to learn its id first."""
    plain = httpx.post(server + "/v1/completions", json={"prompt": "Hello", "max_tokens": 8, "temperature": 0},
                       timeout=30)
    assert plain.status_code == 200, plain.text
    assert plain.json()["model"] == MODEL_ID
    other = client.completions.create(model="gpt-4", prompt="Hello", max_tokens=8, temperature=0)
    assert other.choices[0].text == plain.json()["choices"][0]["text"]


def test_bad_requests_through_the_openai_client(client):
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL_ID, messages=[])
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "wizard", "content": "x"}])


def test_malformed_json_and_unknown_routes(server):
    r = httpx.post(server + "/v1/chat/completions", content=b'{"model": "tiny-test", "messages": [',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(server + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(server + "/health").status_code == 200  # still up after all of the above


def test_serve_cli_errors_are_one_line(model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([MMFREE, "serve", str(model_dir), "--port", str(port)], capture_output=True,
                           text=True, timeout=90, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "pick another --port" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([MMFREE, "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert r.returncode == 2 and "mmfree train" in r.stderr
