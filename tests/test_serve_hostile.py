"""`mmfree serve` under hostile and careless clients: an API key, a Host allow-list, a body-size
limit, request limits, abandoned requests, malformed text — each refused with a 4xx and an
OpenAI error body that shows no internals, on a connection that stays open."""

from __future__ import annotations

import http.client
import json
import socket
import time

import httpx
import openai
import pytest

from helpers import MMFREE, free_port  # noqa: F401
from helpers import serving as helper_serving
from test_generate import make_model_dir

KEY = "sk-test-key"
MODEL = "hostile"


def serving(model_dir, *flags, env=None):
    return helper_serving(model_dir, "--model-name", MODEL, "--dtype", "float64", *flags, env=env)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("hostile-model"), printable=True)


@pytest.fixture(scope="module")
def server(model_dir):
    with serving(model_dir, "--max-batch", "4", "--max-tokens", "100000", "--max-prompt-tokens", "2000",
                 "--max-body-bytes", "200000", "--max-stop-chars", "64", env={"MMFREE_API_KEY": KEY}) as url:
        yield url


AUTH = {"Authorization": f"Bearer {KEY}"}


def wait_idle(url: str, limit_s: float = 60) -> int:
    """Poll /health until no request is active; returns how many stayed active at the deadline."""
    deadline = time.time() + limit_s
    while True:
        active = httpx.get(url + "/health", timeout=5).json()["active"]
        if active == 0 or time.time() > deadline:
            return active
        time.sleep(0.2)


def test_api_key_from_the_environment_is_required(server):
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(server + "/v1/completions", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
    assert httpx.get(server + "/v1/models").status_code == 401
    assert httpx.get(server + "/health").status_code == 200  # probes need no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [MODEL]
    text = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=8, temperature=0).choices[0].text
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, stream=True))
    assert len(text) > 0 and len(streamed) > 0


def test_api_key_flag(model_dir):
    with serving(model_dir, "--api-key", "flag-key") as url:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer flag-key"}).status_code == 200


@pytest.mark.parametrize("host, ok", [("localhost", True), ("localhost:8000", True), ("127.0.0.1:1", True),
                                      ("[::1]:8000", True), ("evil.example", False), ("evil.example:80", False),
                                      ("localhost.evil.example", False)])
def test_host_allow_list_against_dns_rebinding(server, host, ok):
    r = httpx.get(server + "/health", headers={"Host": host})
    assert (r.status_code == 200) == ok, r.text
    if not ok:
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"


def raw_request(url: str, head: bytes, body_part: bytes = b"") -> bytes:
    """Send a request head (and maybe part of its body) on a raw socket; the response bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + body_part)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_a_huge_body_is_refused_before_it_is_read(server):
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {50 << 20}\r\n\r\n").encode()
    answer = raw_request(server, head, b'{"model": "hostile", "prompt": "')  # and never the other 50 MB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer
    # without a Content-Length (chunked), the body is read up to the limit only
    r = httpx.post(server + "/v1/completions", headers=AUTH, content=iter([b"x" * 100_000] * 3))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


LONE = '"\\ud800"'
BAD_BODIES = {
    "seed 2**63": ('{"model": "hostile", "prompt": "x", "seed": ' + str(2 ** 63) + '}', "seed"),
    "seed below int64": ('{"model": "hostile", "prompt": "x", "seed": ' + str(-(2 ** 63 + 1)) + '}', "seed"),
    "lone surrogate prompt": ('{"model": "hostile", "prompt": ' + LONE + '}', "Unicode"),
    "lone surrogate stop": ('{"model": "hostile", "prompt": "x", "stop": ' + LONE + '}', "Unicode"),
    "NaN temperature": ('{"model": "hostile", "prompt": "x", "temperature": NaN}', "temperature"),
    "max_tokens 0": ('{"model": "hostile", "prompt": "x", "max_tokens": 0}', "max_tokens"),
    "max_tokens -1": ('{"model": "hostile", "prompt": "x", "max_tokens": -1}', "max_tokens"),
    "five stops": ('{"model": "hostile", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    "long stop": ('{"model": "hostile", "prompt": "x", "stop": ["' + "s" * 5000 + '"]}', "stop"),
    "long prompt": ('{"model": "hostile", "prompt": "' + "p" * 5000 + '"}', "2000"),
    "long id prompt": ('{"model": "hostile", "prompt": [' + ", ".join(["65"] * 2001) + ']}', "2000"),
    "nested prompt": ('{"model": "hostile", "prompt": [[1, 2]]}', "prompt"),
}
BAD_CHATS = {
    "numeric text part": ('{"model": "hostile", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
                          "messages"),
    "image part": ('{"model": "hostile", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": '
                   '{"url": "http://x"}}]}]}', "image_url"),
    "lone surrogate message": ('{"model": "hostile", "messages": [{"role": "user", "content": ' + LONE + '}]}', "Unicode"),
    "content object": ('{"model": "hostile", "messages": [{"role": "user", "content": {"a": 1}}]}', "messages"),
    "long chat": ('{"model": "hostile", "messages": [{"role": "user", "content": "' + "q" * 3000 + '"}]}', "2000"),
}


def test_client_errors_are_400_without_internals_on_a_kept_connection(server):
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    cases = [("/v1/completions", name, body, needle) for name, (body, needle) in BAD_BODIES.items()]
    cases += [("/v1/chat/completions", name, body, needle) for name, (body, needle) in BAD_CHATS.items()]
    for path, name, body, needle in cases:
        conn.request("POST", path, body=body.encode(), headers={**AUTH, "Content-Type": "application/json"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        assert r.status == 400, (name, answer)
        message = answer["error"]["message"]
        assert needle in message, (name, message)
        assert not any(w in message for w in ("Traceback", "Error:", "File \"", "internal")), (name, message)
        assert r.getheader("connection", "").lower() != "close", name
    conn.request("GET", "/health")  # the same connection, still open
    assert conn.getresponse().status == 200


def start_raw(url: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    return s


def test_abandoned_requests_free_their_batch_slots(server):
    long = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 100000, "temperature": 0}
    plain = [start_raw(server, long) for _ in range(4)]
    streamed = start_raw(server, {**long, "stream": True})
    assert streamed.recv(100).startswith(b"HTTP/1.1 200")  # streaming has begun
    time.sleep(1.0)
    assert httpx.get(server + "/health").json()["active"] >= 4
    for s in [*plain, streamed]:
        s.close()
    assert wait_idle(server) == 0  # 100,000 tokens each would take many minutes
    r = httpx.post(server + "/v1/completions", headers=AUTH, json={"model": MODEL, "prompt": "x", "max_tokens": 4},
                   timeout=60)
    assert r.status_code == 200


def test_a_long_prompt_does_not_change_other_streams(server):
    """While one client sends the longest prompt allowed, a streaming client gets its solo greedy text."""
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)

    def stream() -> str:
        return "".join(c.choices[0].text for c in client.completions.create(
            model=MODEL, prompt="To be, or not", max_tokens=48, temperature=0, stream=True))
    solo = stream()
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(3) as pool:
        long = pool.submit(client.completions.create, model=MODEL, prompt="ab " * 666, max_tokens=4, temperature=0)
        stops = pool.submit(client.completions.create, model=MODEL, prompt="x", max_tokens=32, temperature=0,
                            stop=["q" * 64, "w" * 64, "e" * 64, "r" * 64])
        busy = pool.submit(stream)
        assert busy.result() == solo
        assert long.result().choices[0].finish_reason == "length" and stops.result().choices[0].text is not None
