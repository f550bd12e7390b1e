"""A griffe extension that renders our docstrings' bits of reST in Markdown.

The docstrings are Markdown read by people in an editor, with two habits of
reST that mkdocstrings would otherwise show raw: roles (``:class:`Retry```)
and literal blocks (a paragraph ending in ``::`` followed by an indented
block, as in every ``Example::``). Roles become cross-references to the
API reference, resolved in the docstring's own scope as Python resolves names
there; literal blocks become fenced blocks, highlighted as Python.

A role whose target is not documented (a private module, another project's
class) becomes plain code rather than a broken link: the references are
marked optional, so ``mkdocs build --strict`` stays quiet about them.

Loaded by mkdocs.yml (``extensions: [tools/griffe_rest.py]``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

__all__ = ["MAX_VALUE", "RestToMarkdown", "literal_blocks", "roles"]

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`"
)
# "Example::", "the table::" or a lone "::" ending a paragraph.
_LITERAL = re.compile(r"^(?P<indent>[ ]*)(?P<text>.*?)(?P<space>[ ]?)::[ ]*$")
# A list item's text starts after its marker: its literal block is indented past that.
_ITEM = re.compile(r"[ ]*(?:[-*+]|\d+\.)[ ]+")


def _resolve(target: str, scope: griffe.Object) -> str:
    """The full path of ``target`` as named in ``scope``, or ``target`` unchanged."""
    head, dot, tail = target.partition(".")
    try:
        return scope.resolve(head) + dot + tail
    except (griffe.NameResolutionError, AttributeError):
        return target


def roles(text: str, scope: griffe.Object) -> str:
    """Replace ``:class:`x``` (and its kin) by an optional autorefs reference.

    Example::

        roles(":class:`~resilience.Timeout`", module)
        # '<autoref identifier="resilience.Timeout" optional><code>Timeout</code></autoref>'
    """

    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        shown = target
        if "<" in target and target.endswith(">"):  # :class:`title <path>`
            shown, target = (part.strip() for part in target[:-1].split("<", 1))
        elif target.startswith("~"):
            target = target[1:]
            shown = target.rsplit(".", 1)[-1]
        identifier = html.escape(_resolve(target, scope), quote=True)
        code = f"<code>{html.escape(shown)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


def literal_blocks(text: str) -> str:
    """Turn each reST literal block into a fenced code block.

    Example::

        literal_blocks("Example::\\n\\n    f()\\n")   # 'Example:\\n\\n```python\\nf()\\n```\\n'
    """
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _LITERAL.match(line)
        index += 1
        if match is None:
            out.append(line)
            continue
        item = _ITEM.match(line)
        base = item.end() if item else len(match["indent"])
        block_start = index
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > base
        ):
            index += 1
        block = lines[block_start:index]
        while block and not block[-1].strip():
            block.pop()
            index -= 1
        body = [entry for entry in block if entry.strip()]
        if not body or block[0].strip():
            out.append(line)  # no blank line then indented text: not a literal block
            index = block_start
            continue
        text_part = match["text"]
        # reST: "text::" shows "text:", "text ::" and a lone "::" show nothing.
        shown = text_part + ":" if text_part and not match["space"] else text_part
        if shown.strip():
            out.append(match["indent"] + shown)
        out.append("")
        cut = min(len(entry) - len(entry.lstrip()) for entry in body)
        language = "text" if body[0].lstrip().startswith("==") else "python"
        # At the text's indentation, so that a block in a list item stays in it.
        margin = " " * base
        fence = margin + "```"
        out.append(fence + language)
        out.extend(margin + entry[cut:] if entry.strip() else "" for entry in block[1:])
        out.append(fence)
    return "\n".join(out)


# An attribute's value longer than this is left out of its heading (RATE_ADMIT's
# source, a mapping of levels): it would overflow the column and says less than
# the docstring.
MAX_VALUE = 60


class RestToMarkdown(griffe.Extension):
    """Rewrite each docstring of a package once it is loaded (names then resolve),
    and leave out attribute values longer than :data:`MAX_VALUE` characters.

    Example::

        griffe.load("resilience", extensions=griffe.load_extensions(RestToMarkdown))
    """

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        pending: list[griffe.Object] = [pkg]
        while pending:
            obj = pending.pop()
            if obj.docstring is not None:
                obj.docstring.value = roles(literal_blocks(obj.docstring.value), obj)
            if isinstance(obj, griffe.Attribute) and len(str(obj.value)) > MAX_VALUE:
                obj.value = None
            # Aliases are skipped: their targets are rewritten where they are defined.
            pending.extend(m for m in obj.members.values() if isinstance(m, griffe.Object))
