"""The HTTP side of idempotency keys: the header's syntax, the request's
fingerprint, the caller's scope, and the problem responses (RFC 9457).

The header is draft-ietf-httpapi-idempotency-key-header's: an RFC 9651
Item whose value is a String, so ``Idempotency-Key: "8e03978e-40d5"``
(quoted). Many clients send the bare value (``8e03978e-40d5``): any
visible ASCII without quotes is accepted too, as the same key, so the quotes
of a conformant client never become part of the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Final

from ._answers import _Response, fixed_response
from ._request import Scope

__all__ = [
    "BAD_KEY",
    "HEADER",
    "IDENTITY_FAILED",
    "LONG_KEY",
    "MAX_KEY",
    "MISMATCH",
    "MISSING_KEY",
    "TWO_KEYS",
    "Identity",
    "authorization",
    "conflict",
    "fingerprint",
    "parse_key",
    "problem",
    "scoped_key",
    "too_large",
    "unavailable",
]

MAX_KEY: Final = 255  # characters, as Stripe's and the draft's examples
HEADER: Final = b"idempotency-key"

# An sf-string: printable ASCII, with `"` and `\` escaped (RFC 9651 3.3.3).
_STRING = re.compile(rb'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
# Unquoted, liberally: any visible ASCII but `"`. Wider than an sf-token,
# which may not start with a digit (most UUIDs do).
_BARE = re.compile(rb"[\x21\x23-\x7e]+")
_UNESCAPE = re.compile(rb'\\(["\\])')
# The characters an sf-string holds unescaped: printable ASCII but `"` and `\`.
_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')

# What ``identity=`` is: the caller's scope from the request (None: anonymous).
Identity = Callable[[Scope], "bytes | str | None"]


def parse_key(value: bytes) -> bytes | None:
    """The key in an ``Idempotency-Key`` value, or None if it is malformed
    (an empty string is malformed: it cannot tell requests apart)."""
    if value[:1] == b'"' and value[-1:] == b'"':
        key = value[1:-1]
        # Nothing but plain string characters (deleted, nothing is left):
        # the usual case, decided in C without the regular expression.
        if key and not key.translate(None, _PLAIN):
            return key
    value = value.strip(b" \t")
    if value[:1] == b'"':
        found = _STRING.fullmatch(value)
        if found is None:
            return None
        key = found.group(1)
        if b"\\" in key:
            key = _UNESCAPE.sub(rb"\1", key)
        return key or None
    return value if _BARE.fullmatch(value) else None


def authorization(scope: Scope) -> bytes | None:
    """The default identity: the request's ``Authorization`` header (hashed
    with the key, never stored), or None: callers without one share one
    anonymous scope."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


# BLAKE2s: a 256-bit cryptographic hash, at half the cost of SHA-256 here
# (CPython's own, no OpenSSL context to set up for each request).
_hash = hashlib.blake2s


def scoped_key(identity: bytes | None, key: bytes) -> str:
    """The store's key: the caller's identity and its key, hashed together
    (64 hex digits, as the store contract promises), so two callers'
    identical keys never meet and no credential reaches the store."""
    if identity is None:
        return _hash(b"\x00" + key).hexdigest()
    return _hash(b"%d:%s\x00%s" % (len(identity), identity, key)).hexdigest()


def fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same request: method, path, query and
    body (a digest, length-prefixed so that no two requests share one)."""
    method = scope["method"].encode()
    path = scope["path"].encode("utf-8", "surrogateescape")
    query = scope.get("query_string", b"")
    head = b"%d:%d:%d:%s%s%s" % (len(method), len(path), len(query), method, path, query)
    return _hash(head + body).hexdigest()


def problem(
    status: int, title: str, code: str, detail: str, retry_after: int | None = None
) -> _Response:
    """An ``application/problem+json`` response (RFC 9457). ``type`` is
    ``about:blank``, so ``title`` is the status phrase; ``code`` names the
    case for programs (the names the Agentic Commerce Protocol uses)."""
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "code": code, "detail": detail},
        separators=(",", ":"),
    ).encode()
    return fixed_response(status, body, b"application/problem+json", retry_after)


_KEY_SYNTAX = (
    f'a structured-field string: quoted ("8e03978e-40d5-43e8"), 1 to {MAX_KEY} '
    "printable ASCII characters"
)
MISSING_KEY: Final = problem(
    400,
    "Bad Request",
    "idempotency_key_required",
    f"This request needs an Idempotency-Key header, {_KEY_SYNTAX}.",
)
BAD_KEY: Final = problem(
    400,
    "Bad Request",
    "idempotency_key_invalid",
    f"The Idempotency-Key header is malformed: it must be {_KEY_SYNTAX}.",
)
LONG_KEY: Final = problem(
    400,
    "Bad Request",
    "idempotency_key_invalid",
    f"The Idempotency-Key is longer than {MAX_KEY} characters.",
)
TWO_KEYS: Final = problem(
    400,
    "Bad Request",
    "idempotency_key_invalid",
    "The request has more than one Idempotency-Key header.",
)
MISMATCH: Final = problem(
    422,
    "Unprocessable Content",
    "idempotency_conflict",
    "This Idempotency-Key was used for a different request (method, path, query or "
    "body). Use a new key for a new request.",
)
IDENTITY_FAILED: Final = problem(
    500, "Internal Server Error", "idempotency_identity_failed", "The request was not run."
)


def conflict(retry_after: int) -> _Response:
    """409: the first request with this key is still running."""
    return problem(
        409,
        "Conflict",
        "idempotency_in_flight",
        "A request with this Idempotency-Key is still being processed. "
        "Retry after it has finished to get its response.",
        retry_after,
    )


def unavailable(retry_after: int) -> _Response:
    """503: the store of keys did not answer; the request was not run."""
    return problem(
        503,
        "Service Unavailable",
        "idempotency_unavailable",
        "Idempotency keys cannot be checked right now; the request was not run.",
        retry_after,
    )


def too_large(max_body: int) -> _Response:
    """413: a keyed request body is read whole to fingerprint it, up to ``max_body``."""
    return problem(
        413,
        "Content Too Large",
        "idempotency_body_too_large",
        f"A request with an Idempotency-Key may have a body of at most {max_body} bytes.",
    )
