"""The protocol between :class:`IdempotencyMiddleware` and the store that
holds its keys: leases with fencing tokens, and stored responses.

A key's life in a store::

    (absent) --claim--> leased(token, fingerprint, until)
    leased --renew(token)--> leased (until pushed on)
    leased --complete(token, record)--> completed(record, until now + expiry)
    leased --release(token)--> (absent)
    leased, past until --claim--> leased(new token)      (a lease takeover)
    completed, past until --claim--> leased(new token)   (expired: a new request)

The middleware runs a request only while it holds the key's lease, renews
it while the handler runs, and writes the response with the token it was
given: a process that stalled or died loses the key once its lease runs
out, and what it writes after that is refused.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "Claim",
    "Completed",
    "IdempotencyRecord",
    "IdempotencyStore",
    "InFlight",
    "Lease",
]

Headers: TypeAlias = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A response stored under an idempotency key, and the fingerprint of
    the request that produced it (a retry whose fingerprint differs is
    answered 422, never this response).

    ``headers`` are the response's, as ASGI sends them (lower-case names,
    bytes). :meth:`encode` and :meth:`decode` give a store that keeps bytes
    (Redis) one plain, versioned format: JSON, never pickle.

    Example::

        record = IdempotencyRecord("9f2c...", 201, ((b"location", b"/orders/7"),), b"{}")
        assert IdempotencyRecord.decode(record.encode()) == record
    """

    fingerprint: str
    status: int
    headers: Headers
    body: bytes

    def encode(self) -> bytes:
        """The record as bytes: a JSON object with the body in base64 and the
        headers as latin-1 text (what HTTP header bytes are)."""
        return json.dumps(
            {
                "v": 1,
                "f": self.fingerprint,
                "s": self.status,
                "h": [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in self.headers
                ],
                "b": base64.b64encode(self.body).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> IdempotencyRecord:
        """The record :meth:`encode` made. Raises ``ValueError`` for anything
        else (a store treats a corrupt value as absent)."""
        try:
            found = json.loads(data)
            if found["v"] != 1:
                raise ValueError(f"unknown record version {found['v']!r}")
            fingerprint, status, headers, body = found["f"], found["s"], found["h"], found["b"]
            if not (
                isinstance(fingerprint, str)
                and isinstance(status, int)
                and isinstance(body, str)
                and isinstance(headers, list)
            ):
                raise ValueError("wrong field types")
            return cls(
                fingerprint,
                status,
                tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
                base64.b64decode(body, validate=True),
            )
        except (KeyError, TypeError, AttributeError, UnicodeError, ValueError) as exc:
            raise ValueError(f"not an idempotency record: {exc}") from None


@dataclass(slots=True)
class Lease:
    """:meth:`IdempotencyStore.claim` gave this caller the key: run the
    request, then ``complete`` or ``release`` with ``token``.
    ``taken_over`` says the key was held by a lease that had run out (a
    stalled or dead holder).

    Example::

        claim = await store.claim(key, fingerprint, 10.0)
        if isinstance(claim, Lease):
            ...  # run the request, then store.complete(key, claim.token, record, 86400)
    """

    token: int
    taken_over: bool = False


@dataclass(slots=True)
class Completed:
    """The key has a stored response, kept ``expires_in`` more seconds.

    Example::

        if isinstance(claim, Completed) and claim.record.fingerprint == fingerprint:
            ...  # replay claim.record
    """

    record: IdempotencyRecord
    expires_in: float


@dataclass(slots=True)
class InFlight:
    """Another caller holds the key's live lease: its request, whose
    fingerprint is ``fingerprint``, is running; the lease runs out in
    ``expires_in`` seconds unless renewed.

    Example::

        if isinstance(claim, InFlight):
            status = 409 if claim.fingerprint == fingerprint else 422
    """

    fingerprint: str
    expires_in: float


Claim: TypeAlias = Lease | Completed | InFlight
"""What a claim finds. Its three classes are plain slotted dataclasses, not
frozen ones, only because a store builds one per request and a frozen
dataclass costs several times more to build: treat them as immutable.

Example::

    claim: Claim = await store.claim(key, fingerprint, 10.0)
    match claim:
        case Lease(token=token): ...
        case Completed(record=record): ...
        case InFlight(fingerprint=running): ...
"""
"""What :meth:`IdempotencyStore.claim` answers: run the request, replay, or wait.

Example::

    match await store.claim(key, fingerprint, lease=30.0):
        case Lease(token=token):
            ...  # this request runs; complete(key, token, record, expiry) after
        case Completed(record=record):
            ...  # replay the stored response
        case InFlight():
            ...  # another request holds the key
"""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where :class:`IdempotencyMiddleware` keeps its keys: a lease per
    running request, a stored response per finished one.

    The contract, which every store keeps (:class:`MemoryIdempotencyStore`
    in one process, ``resilience.contrib.redis.RedisIdempotencyStore``
    across many):

    - **Keys** are opaque strings of 64 lower-case hex digits (the
      middleware hashes the caller's identity with the client's key): a
      store may put them in its own key names as they are.
    - **Atomicity.** Each method is one atomic step on one key: two
      concurrent ``claim`` calls on an absent key give exactly one
      :class:`Lease`; no call sees a half-written record.
    - **Time.** A lease is *live* while the store's clock is before its
      deadline (``claim``/``renew`` time plus ``lease`` seconds); a record
      expires ``expiry`` seconds after ``complete``. Expired entries behave
      as absent and must not be kept forever: nothing a store writes lives
      without an expiry (a Redis store sets one on every key, fencing
      counters included).
    - **Fencing.** Every :class:`Lease` carries a token that no earlier
      claim of the same key was given (a counter, or a random 63-bit
      number). ``renew``, ``complete`` and ``release`` act only when the key
      still holds the *live* lease of that token, and return False, changing
      nothing, otherwise: a holder whose lease ran out and was taken over
      can never overwrite the new holder's result or free its key.
    - **Failure.** A store that cannot answer raises (any ``Exception``;
      it bounds its own calls with a timeout): the middleware then fails
      closed (503) or open, as configured. A store never blocks a request
      for longer than its own timeout.

    ``claim(key, fingerprint, lease)``: if the key is absent, expired, or
    held by a lease that is no longer live, make a new lease for
    ``fingerprint`` (``taken_over=True`` in the last case) and return it;
    if it has a stored response, return :class:`Completed`; if a live lease
    holds it, return :class:`InFlight` with that lease's fingerprint.

    ``renew(key, token, lease)``: push the live lease's deadline to now
    plus ``lease``.

    ``complete(key, token, record, expiry)``: replace the live lease with
    ``record``, kept ``expiry`` seconds.

    ``release(key, token)``: delete the live lease (the request was not
    stored: the next claim runs it again).

    Example::

        class Store:
            async def claim(self, key, fingerprint, lease): return Lease(1)
            async def renew(self, key, token, lease): return True
            async def complete(self, key, token, record, expiry): return True
            async def release(self, key, token): return True

        assert isinstance(Store(), IdempotencyStore)
    """

    async def claim(self, key: str, fingerprint: str, lease: float) -> Claim: ...

    async def renew(self, key: str, token: int, lease: float) -> bool: ...

    async def complete(
        self, key: str, token: int, record: IdempotencyRecord, expiry: float
    ) -> bool: ...

    async def release(self, key: str, token: int) -> bool: ...
