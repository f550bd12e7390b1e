"""The middleware's settings that are collections or names: checked once,
at construction, with errors that name the parameter and the bad value."""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["header_name", "invalid", "methods", "prefixes", "statuses", "wrong"]


def invalid(parameter: str, value: object, expected: str) -> ValueError:
    return ValueError(f"{parameter} must be {expected}, got {value!r}")


def wrong(parameter: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{parameter} must be {expected}, got {value!r}")


def statuses(parameter: str, value: Collection[int]) -> frozenset[int]:
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Iterable)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        raise wrong(parameter, value, "a collection of HTTP statuses")
    if not all(100 <= s <= 599 for s in value):
        raise invalid(parameter, value, "HTTP statuses (100 to 599)")
    return frozenset(value)


def prefixes(parameter: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        # A lone "/health" would otherwise become the prefixes "/", "h", ...
        raise wrong(parameter, value, "a collection of path prefixes")
    found = tuple(value)
    if not all(isinstance(prefix, str) for prefix in found):
        raise wrong(parameter, value, "a collection of path prefixes (str)")
    if not all(prefix.startswith("/") for prefix in found):
        raise invalid(parameter, value, "path prefixes starting with '/'")
    return found


def methods(parameter: str, value: Iterable[str]) -> frozenset[str]:
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Iterable)
        or not all(isinstance(m, str) for m in value)
    ):
        raise wrong(parameter, value, "a collection of HTTP methods (str)")
    found = frozenset(value)
    if not all(method.isalpha() and method.isupper() for method in found):
        raise invalid(parameter, value, "upper-case HTTP methods")
    return found


def header_name(parameter: str, value: object) -> bytes:
    """A header name as the ASGI scope has it: lower-case bytes."""
    if not isinstance(value, str):
        raise wrong(parameter, value, "a header name (str) or None")
    if not value or not value.isascii() or any(c in value for c in ' \t:()<>@,;"/[]?={}'):
        raise invalid(parameter, value, "a header name or None")
    return value.lower().encode()
