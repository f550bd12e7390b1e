"""The API reference documents every public name, each with an example.

The site is built here (as ``make docs`` builds it) and read as a user meets
it. For each public face (``resilience``, the modules it exports, the other
public modules, every contrib module) and each name in its ``__all__``:

- the name is in the site's inventory (``objects.inv``, which mkdocstrings
  writes for what it rendered, under the path users import it by as well as
  the path it is documented at), pointing into ``reference/``;
- the docstring rendered at that place shows a code block of its own (its
  ``Example::`` block, fenced in the page by tools/griffe_rest.py), not
  counting its signature or the docstrings of its members.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import griffe
import pytest

import resilience
import resilience.contrib

ROOT = Path(__file__).resolve().parent.parent

# Wider than this overflows the content column at 1,280 px, as in the other pages.
MAX_WIDTH = 88

# The faces besides resilience, the modules it exports and the contrib modules.
OTHER_FACES = ["resilience.errors", "resilience.lowlevel", "resilience.saga"]


def faces() -> list[str]:
    exported = [
        f"resilience.{name}"
        for name in resilience.__all__
        if isinstance(getattr(resilience, name), ModuleType)
    ]
    contrib = [
        f"resilience.contrib.{info.name}"
        for info in pkgutil.iter_modules(resilience.contrib.__path__)
        if not info.name.startswith("_")
    ]
    return sorted({"resilience", *exported, *OTHER_FACES, *contrib})


class DocstringCode(HTMLParser):
    """Which documented objects of a page show a code block in their own docstring.

    mkdocstrings renders an object as its anchor (a heading, or an empty
    ``<a id>`` for a page's root module), then ``div.doc-contents`` holding
    the docstring and a ``div.doc-children`` with the members. A ``<pre>``
    belongs to the nearest enclosing contents, unless a children block comes
    first (a member's signature).
    """

    def __init__(self) -> None:
        super().__init__()
        self.documented: set[str] = set()
        self.with_code: set[str] = set()
        self._pending: str | None = None
        # Each open div: the object whose contents it is, or "children", or None.
        self._divs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        anchor = attributes.get("id")
        if anchor and ("doc-heading" in classes or (tag == "a" and "href" not in attributes)):
            self._pending = anchor
        elif tag == "div":
            owner: str | None = None
            if "doc-contents" in classes and self._pending is not None:
                owner, self._pending = self._pending, None
                self.documented.add(owner)
            elif "doc-children" in classes:
                owner = "children"
            self._divs.append(owner)
        elif tag == "pre":
            for owner in reversed(self._divs):
                if owner == "children":
                    break
                if owner is not None:
                    self.with_code.add(owner)
                    break

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._divs:
            self._divs.pop()


def read_inventory(path: Path) -> dict[str, str]:
    """Name -> "page/#anchor" from a Sphinx inventory (version 2)."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    entries: dict[str, str] = {}
    for line in zlib.decompress(data[header_end:]).decode().splitlines():
        name, _domain, _priority, uri, *_ = line.split(" ", 4)
        entries[name] = uri[:-1] + name if uri.endswith("$") else uri
    return entries


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return out


@pytest.fixture(scope="module")
def inventory(site: Path) -> dict[str, str]:
    return read_inventory(site / "objects.inv")


@pytest.fixture(scope="module")
def pages(site: Path) -> dict[str, DocstringCode]:
    parsed: dict[str, DocstringCode] = {}
    for page in (site / "reference").glob("*/index.html"):
        parser = DocstringCode()
        parser.feed(page.read_text(encoding="utf-8"))
        parsed[f"reference/{page.parent.name}/"] = parser
    return parsed


@pytest.mark.parametrize("face", faces())
def test_every_public_name_is_documented_with_an_example(
    face: str, inventory: dict[str, str], pages: dict[str, DocstringCode]
) -> None:
    module = importlib.import_module(face)
    names = [face] + [f"{face}.{name}" for name in module.__all__]
    problems = []
    for name in names:
        page, _, anchor = inventory.get(name, "").partition("#")
        if not page.startswith("reference/"):
            problems.append(
                f"{name}: not in the API reference (a page in docs/reference/ and in"
                " mkdocs.yml's nav; for resilience, the members list of its page)"
            )
        elif anchor not in pages[page].documented:
            problems.append(f"{name}: no docstring at {inventory[name]}")
        elif anchor not in pages[page].with_code:
            where = "" if anchor == name else f" (documented as {anchor})"
            problems.append(f"{name}{where}: no Example:: block in its docstring")
    assert not problems, "\n".join(problems)


def test_code_blocks_fit_the_column(site: Path) -> None:
    too_wide = []
    for page in sorted((site / "reference").glob("*/index.html")):
        for block in re.findall(r"<pre[^>]*>(.*?)</pre>", page.read_text(encoding="utf-8"), re.S):
            for line in html.unescape(re.sub(r"<[^>]+>", "", block)).splitlines():
                if len(line) > MAX_WIDTH:
                    too_wide.append(f"{page.parent.name}: {line.strip()[:60]}... ({len(line)})")
    assert not too_wide, f"lines over {MAX_WIDTH} characters:\n" + "\n".join(too_wide)


def test_every_face_has_its_own_page() -> None:
    for face in faces():
        page = ROOT / "docs" / "reference" / f"{face.rsplit('.', 1)[-1]}.md"
        assert f"::: {face}" in page.read_text(encoding="utf-8"), page


def test_the_example_rule_can_fail() -> None:
    parser = DocstringCode()
    parser.feed(
        '<h2 id="m.A" class="doc doc-heading">A</h2>'
        '<div class="doc-signature highlight"><pre>A()</pre></div>'
        '<div class="doc doc-contents"><p>No example.</p>'
        '<div class="doc doc-children">'
        '<h3 id="m.A.f" class="doc doc-heading">f</h3>'
        '<div class="doc-signature"><pre>f()</pre></div>'
        '<div class="doc doc-contents"><div class="highlight"><pre>a.f()</pre></div></div>'
        "</div></div>"
        '<a id="m.B"></a><div class="doc doc-contents first"><pre>B()</pre></div>'
    )
    assert parser.documented == {"m.A", "m.A.f", "m.B"}
    assert parser.with_code == {"m.A.f", "m.B"}


@pytest.fixture(scope="module")
def rest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("griffe_rest", ROOT / "tools" / "griffe_rest.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("docstring", "markdown"),
    [
        ("Example::\n\n    f()\n", "Example:\n\n```python\nf()\n```\n"),
        ("Two ::\n\n    f()", "Two\n\n```python\nf()\n```"),
        ("- item::\n\n      f()\n\n  more", "- item:\n\n  ```python\n  f()\n  ```\n\n  more"),
        ("Table::\n\n    ===\n    a\n", "Table:\n\n```text\n===\na\n```\n"),
        ("Example::\n    f()", "Example::\n    f()"),  # no blank line: not a literal block
        ("Example::\n\nNot code.", "Example::\n\nNot code."),
    ],
)
def test_literal_blocks_become_fenced(rest: ModuleType, docstring: str, markdown: str) -> None:
    assert rest.literal_blocks(docstring) == markdown


def test_roles_become_optional_references(rest: ModuleType) -> None:
    scope = griffe.load("resilience", search_paths=[str(ROOT)])["retry"]
    text = ":class:`~resilience.Timeout`, :meth:`Retry.start` and :func:`a <b.c>`"
    assert rest.roles(text, scope) == (
        '<autoref identifier="resilience.Timeout" optional><code>Timeout</code></autoref>, '
        '<autoref identifier="resilience.retry.Retry.start" optional><code>Retry.start</code>'
        '</autoref> and <autoref identifier="b.c" optional><code>a</code></autoref>'
    )
