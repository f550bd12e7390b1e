"""Source text written once and compiled in several places: a mechanism's
hot path as text, which its own methods and the plans that inline it both
compile (see resilience._codegen)."""

from __future__ import annotations

__all__ = ["snippet"]


def snippet(text: str, indent: str, **names: str) -> str:
    r"""``text`` with its ``{placeholder}``\ s named and every line indented.

    Example::

        snippet("{q}.live += 1", "    ", q="self")   # '    self.live += 1'
    """
    for placeholder, name in names.items():
        text = text.replace("{" + placeholder + "}", name)
    return "\n".join(indent + line for line in text.split("\n"))
