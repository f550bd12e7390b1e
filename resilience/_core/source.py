"""Source text written once and compiled in several places: a mechanism's
hot path as text, which its own methods and the plans that inline it both
compile (see resilience._codegen)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["method", "snippet"]


def snippet(text: str, indent: str, **names: str) -> str:
    r"""``text`` with its ``{placeholder}``\ s named and every line indented.

    Example::

        snippet("{q}.live += 1", "    ", q="self")   # '    self.live += 1'
    """
    for placeholder, name in names.items():
        text = text.replace("{" + placeholder + "}", name)
    return "\n".join(indent + line for line in text.split("\n"))


def method(
    name: str, source: str, scope: dict[str, Any], owner: type, doc: str
) -> Callable[..., Any]:
    """The function ``name`` that ``source`` (our own text) defines, with
    ``scope`` as its globals, named and documented as ``owner``'s method."""
    namespace: dict[str, Any] = {}
    exec(source, scope, namespace)
    function: Callable[..., Any] = namespace[name]
    function.__module__ = owner.__module__
    function.__qualname__ = f"{owner.__qualname__}.{name}"
    function.__doc__ = doc
    return function
