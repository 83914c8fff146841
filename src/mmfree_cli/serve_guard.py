"""The server's front door, checked before a request reaches FastAPI: the Host header, the API key
and the size of the body. A refusal is an OpenAI-style JSON error body with a 4xx status.

- Host allow-list, against DNS rebinding: a web page on evil.example whose name is re-pointed at
  127.0.0.1 reaches a loopback server from the victim's browser, but its requests still say
  `Host: evil.example`. Such an attack always arrives under a DNS name, so IP literals and
  `localhost` are allowed, plus the names given with `--allowed-host` (`*` allows any name).
- API key (`--api-key` or MMFREE_API_KEY): every /v1/ request needs `Authorization: Bearer KEY`
  (compared in constant time); /health stays open for probes.
- Body size: a declared Content-Length over the limit is refused before one byte is read; a body
  without one is read up to the limit and refused there. The body is then handed to the app from
  memory, so no parser ever sees more than the limit.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a Host header value (name or IP literal, maybe with a port) may reach the server."""
    if "*" in allowed:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    host = host.rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or host in allowed


async def send_error(send: Send, status: int, message: str, code: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: Host allow-list, API key on /v1/, body-size limit (see the module doc)."""

    def __init__(self, app, max_body_bytes: int, api_key: str | None = None,
                 allowed_hosts: frozenset[str] = frozenset()):
        self.app, self.max_body_bytes, self.api_key = app, max_body_bytes, api_key
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not host_allowed(headers.get("host", ""), self.allowed_hosts):
            return await send_error(send, 400, "this Host is not allowed — start the server with "
                                    "--allowed-host NAME to serve under that name", "invalid_host")
        if self.api_key is not None and scope.get("path", "").startswith("/v1/"):
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not secrets.compare_digest(token.encode(), self.api_key.encode()):
                return await send_error(send, 401, "Incorrect or missing API key — send "
                                        "`Authorization: Bearer <key>`", "invalid_api_key",
                                        [(b"www-authenticate", b"Bearer")])
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_body_bytes):
            return await self._too_large(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self._too_large(send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the disconnect, when the client leaves
        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_error(send, 413, f"the request body is larger than this server allows ({self.max_body_bytes} "
                         "bytes) — send a shorter prompt, or start the server with a larger --max-body-bytes",
                         "request_too_large", [(b"connection", b"close")])
