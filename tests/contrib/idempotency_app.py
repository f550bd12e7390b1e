"""The app the idempotency tests run behind IdempotencyMiddleware: an orders
endpoint that counts its runs, and can be told to hang, fail or answer
differently, from the test's thread or the server's."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Gate:
    """A run waits here until the test opens it (from any thread)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def open(self) -> None:
        self.opened.set()

    async def wait(self) -> None:
        self.entered.set()
        await anyio.to_thread.run_sync(self.opened.wait, abandon_on_cancel=True)

    async def reached(self) -> None:
        """Until a run waits at the gate (no fixed sleep)."""
        await anyio.to_thread.run_sync(self.entered.wait)


class Orders:
    """``POST /orders``: ``201 Created`` with a ``Location`` and a JSON body
    echoing the run's number and the request body.

    ``gates``: the next runs wait at these, one each, in order. ``status``,
    ``size`` (a body of that many bytes instead), ``cookie``, ``fail`` (raise
    before answering), ``chunks`` (stream the body in that many messages)
    change the next answers.
    """

    def __init__(self) -> None:
        self.runs = 0
        self.gates: list[Gate] = []
        self.status = 201
        self.size: int | None = None
        self.cookie = False
        self.fail = False
        self.chunks = 1

    def gate(self) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        return gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.runs += 1
        run = self.runs
        if self.gates:
            await self.gates.pop(0).wait()
        if self.fail:
            raise RuntimeError("the handler crashed")
        if self.size is not None:
            answer = b"x" * self.size
        else:
            answer = json.dumps({"run": run, "body": body.decode(), "path": scope["path"]}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer)).encode()),
            (b"location", b"/orders/%d" % run),
        ]
        if self.cookie:
            headers.append((b"set-cookie", b"session=abc"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        step = -(-len(answer) // self.chunks) or 1
        parts = [answer[i : i + step] for i in range(0, len(answer), step)] or [b""]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await send({"type": "http.response.body", "body": part, "more_body": not last})
