"""One keyed request running under its lease: the ``send`` that copies the
response and ends the lease (stored or released) before the last byte goes
out, and the ``receive`` that hands the app the body read for the
fingerprint."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio

from resilience.lowlevel import running_loop

from ._idempotency_stats import IdempotencyLeaseTakenOver
from ._idempotency_store import IdempotencyRecord, Lease
from ._request import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ._idempotency import IdempotencyMiddleware

__all__ = ["Run", "replaying", "run_leased"]


class _Replaying:
    """``receive`` for the app: the body read whole first, then the
    server's own messages (a disconnect, once the client goes away)."""

    __slots__ = ("body", "receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        body = self.body
        if body is None:
            return await self.receive()
        self.body = None
        return {"type": "http.request", "body": body, "more_body": False}


def replaying(body: bytes, receive: Receive) -> Receive:
    return _Replaying(body, receive)


class Run:
    """The response of one request that holds a key's lease."""

    __slots__ = (
        "chunks",
        "done",
        "downstream",
        "fingerprint",
        "headers",
        "key",
        "lost",
        "middleware",
        "size",
        "status",
        "storable",
        "task",
        "timer",
        "token",
        "trailers",
    )

    def __init__(
        self, middleware: IdempotencyMiddleware, key: str, fingerprint: str, token: int, send: Send
    ) -> None:
        self.middleware = middleware
        self.key = key
        self.fingerprint = fingerprint
        self.token = token
        self.downstream = send
        self.storable = False
        self.trailers = False
        self.done = False  # the lease is ended (or being ended): no renewal after
        self.lost = False  # the store said the lease is no longer ours
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.headers: Any = ()
        self.timer: asyncio.TimerHandle | None = None  # asyncio: when to start renewing
        self.task: asyncio.Task[None] | None = None  # asyncio: the renewer, once started

    def stop(self) -> None:
        """No more renewals (asyncio; on trio the task group ends the renewer)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            more = message.get("more_body", False)
            if self.storable:
                body = message.get("body", b"")
                self.size += len(body)
                if self.size > self.middleware._max_body:
                    self.storable = False  # too large: passes through, unstored
                    self.chunks = []
                else:
                    self.chunks.append(body)
            if not more and not self.trailers:
                await self.finish(store=self.storable)
        elif kind == "http.response.start":
            middleware = self.middleware
            self.status = status = message["status"]
            self.headers = headers = message.get("headers", ())
            self.trailers = trailers = message.get("trailers", False)
            self.storable = (
                status in middleware._statuses
                and not trailers
                and (middleware._cookies or not any(n.lower() == b"set-cookie" for n, _ in headers))
            )
        elif kind == "http.response.trailers":
            if not message.get("more_trailers", False):
                await self.finish(store=False)
        elif not message.get("more_body", False):  # pathsend, zerocopysend
            await self.finish(store=False)
        await self.downstream(message)

    async def finish(self, *, store: bool) -> None:
        """End the lease: the response stored, or the key freed."""
        if self.done:
            return
        self.done = True
        if self.lost:
            return
        middleware = self.middleware
        backend = middleware._store
        try:
            if store:
                record = IdempotencyRecord(
                    self.fingerprint,
                    self.status,
                    tuple((bytes(name), bytes(value)) for name, value in self.headers),
                    b"".join(self.chunks),
                )
                self.chunks = []
                kept = await backend.complete(self.key, self.token, record, middleware._expiry)
                if kept:
                    middleware.stats.stored += 1
            else:
                kept = await backend.release(self.key, self.token)
        except Exception as exc:
            middleware.store_failed("complete" if store else "release", exc)
            return
        if not kept:
            middleware.lease_lost(self)


async def run_leased(
    middleware: IdempotencyMiddleware,
    scope: Scope,
    receive: Receive,
    send: Send,
    key: str,
    mark: str,
    lease: Lease,
) -> None:
    """Run the request under its lease, renewed until the response ends."""
    stats = middleware.stats
    stats.ran += 1
    if lease.taken_over:
        stats.taken_over += 1
        middleware._tell(IdempotencyLeaseTakenOver, stats.name)
    run = Run(middleware, key, mark, lease.token, send)
    loop = running_loop()
    try:
        if loop is not None:
            # asyncio: a timer, and a renewal task only for a request that
            # outlives a third of its lease (most never do): no task group,
            # which would cost several times the rest of the request.
            run.timer = loop.call_later(middleware._lease / 3, _renew_later, run, loop)
            await middleware.app(scope, receive, run.send)
        else:
            await _run_in_group(scope, receive, run)
    finally:
        run.stop()
        if not run.done:
            # The app raised or returned without a whole response: free the
            # key now (shielded: even when cancelled), so the retry runs
            # again at once instead of after the lease.
            with anyio.CancelScope(shield=True):
                await run.finish(store=False)


async def _run_in_group(scope: Scope, receive: Receive, run: Run) -> None:
    """trio: the renewer in a task group beside the app."""
    error: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_renew, run, True)
        try:
            await run.middleware.app(scope, receive, run.send)
        except BaseException as exc:
            # Raised outside the group: anyio would wrap it in an
            # ExceptionGroup, which outer middleware cannot catch as is.
            error = exc
        group.cancel_scope.cancel()
    if error is not None:
        try:
            raise error
        finally:
            error = None


def _renew_later(run: Run, loop: asyncio.AbstractEventLoop) -> None:
    if not run.done:
        run.task = loop.create_task(_renew(run, False))


async def _renew(run: Run, wait_first: bool) -> None:
    """Renew the lease every third of it until the response ends, or the
    store says the lease is no longer ours."""
    middleware = run.middleware
    lease = middleware._lease
    while True:
        if wait_first:
            await anyio.sleep(lease / 3)
        wait_first = True
        if run.done:
            return
        try:
            kept = await middleware._store.renew(run.key, run.token, lease)
        except Exception as exc:
            middleware.store_failed("renew", exc)
            continue  # the next renewal may still be in time
        if not kept:
            middleware.lease_lost(run)
            return
