"""Every Python block in docs/ runs.

A page's ```python blocks run in order, in one namespace per page (a later
block may use an earlier block's names), on one asyncio event loop, with
top-level ``await`` allowed, in a process of their own (a page's policies
and listeners must not be seen by other tests, nor theirs by the page's),
with warnings as errors. A failure names the page and the line of the
block's code in it: the code is compiled with the page as its file name and
at its own line numbers, so the traceback points into the Markdown.
``python -m tests.test_docs_blocks docs/PAGE.md`` runs one page so.

A block is exempt only when it is nothing but snippet lines
(``--8<-- "examples/foo.py"``): those files are run by tests/test_examples.py,
which this test checks they are.

The one escape, for setup a reader need not see (a fake server, a seeded
clock): an HTML comment right before a block,

    <!-- docs: setup
    clock = FakeClock()
    -->

is not rendered, and its code runs in the page's namespace before the block
that follows it. Prefer a block the reader can run as it stands; code that
needs something outside the process (a server, the network) belongs in an
example file instead.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

# A fence's opening line: its indent, backticks and language.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SETUP = re.compile(r"^[ \t]*<!--\s*docs:\s*setup\s*$")
SNIPPET = re.compile(r'^\s*-{1,}8<-{1,}\s*"(?P<path>[^"]+)"')
PYTHON = {"python", "py", "python3"}
# Wider than this overflows the content column at 1,280 px (docs/release.md says
# how it was measured on screenshots of the built site).
MAX_WIDTH = 88


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # the line number of the block's first line of code in the page
    lang: str
    code: str
    hidden: bool = False  # a <!-- docs: setup --> comment

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(page: Path) -> str:
    """The page's path as failures name it: from the repository's root."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def blocks(page: Path) -> Iterator[Block]:
    """The page's fenced blocks and setup comments, in order (any language)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if SETUP.match(lines[i]):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            code = textwrap.dedent("\n".join(lines[i + 1 : end]))
            yield Block(page, i + 2, "python", code, hidden=True)
            i = end + 1
            continue
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks = m["indent"], m["ticks"]
        close = re.compile(rf"^{re.escape(indent)}{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
        assert end is not None, f"{shown(page)}:{i + 1}: unclosed fence"
        body = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]
        ]
        yield Block(page, i + 2, m["lang"].lower(), "\n".join(body))
        i = end + 1


def included(block: Block) -> list[str]:
    """The files a block includes with snippet lines; [] when it includes none."""
    return [m["path"] for line in block.code.splitlines() if (m := SNIPPET.match(line))]


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in PYTHON and not included(b)]


def run_page(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    with asyncio.Runner() as runner:
        for block in python_blocks(page):
            source = "\n" * (block.line - 1) + block.code
            try:
                code = compile(
                    source,
                    shown(block.page),
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )
            except SyntaxError as exc:
                raise AssertionError(f"{block.where}: does not compile: {exc}") from exc
            try:
                result = eval(code, namespace)  # a coroutine when the block awaits
                if asyncio.iscoroutine(result):
                    runner.run(result)
            except Exception as exc:
                raise AssertionError(f"{block.where}: {type(exc).__name__}: {exc}") from exc


RUNNABLE = [p for p in PAGES if python_blocks(p)]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_blocks_run(page: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.test_docs_blocks", str(page.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_a_page_runs_as_one_namespace_and_failures_name_their_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n"
        "<!-- docs: setup\nimport asyncio\nx = 1\n-->\n\n"  # lines 3-6: hidden, runs first
        "```python\nawait asyncio.sleep(0)\ny = x + 1\n```\n\n"  # lines 8-11
        "```python\nassert y == 2\nassert y == 3\n```\n",  # lines 13-16
        encoding="utf-8",
    )
    assert [(b.line, b.hidden) for b in python_blocks(page)] == [(4, True), (9, False), (14, False)]
    with pytest.raises(AssertionError, match=r"page\.md:14: AssertionError") as failed:
        run_page(page)
    # The traceback points at the failing line of the page itself.
    assert failed.value.__cause__.__traceback__.tb_next.tb_lineno == 15


def main(page: str) -> None:
    warnings.simplefilter("error")
    # Peers' own deprecations (aiobreaker's utcnow) are theirs, not the page's.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="aiobreaker")
    run_page(ROOT / page)


def test_included_files_are_run_examples() -> None:
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")}
    for page in PAGES:
        for block in blocks(page):
            for path in included(block):
                name = path.split(":")[0]
                assert name in examples, f"{block.where}: includes {name}, not an example"
                assert not Path(name).name.startswith("_"), f"{block.where}: {name} is not run"
                assert all(SNIPPET.match(x) for x in block.code.splitlines() if x.strip()), (
                    f"{block.where}: a block either includes files or holds code, not both"
                )


def test_code_lines_fit_the_column() -> None:
    too_wide = []
    for page in PAGES:
        for block in blocks(page):
            texts = [block.code]
            for path in included(block):
                name, _, section = path.partition(":")
                texts.append(snippet_text(ROOT / name, section))
            too_wide += [
                f"{block.where}: {len(line)} chars: {line.strip()[:40]}..."
                for text in texts
                for line in text.splitlines()
                if len(line) > MAX_WIDTH and not block.hidden
            ]
    assert not too_wide, "\n".join(too_wide)


def snippet_text(path: Path, section: str) -> str:
    """What a snippet line shows: the whole file, a line range or a named section."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not section:
        return "\n".join(x for x in lines if "--8<--" not in x)
    if re.fullmatch(r"[\d:,-]+", section):
        start, _, end = section.partition(":")
        return "\n".join(lines[int(start or 1) - 1 : int(end) if end else None])
    inside, out = False, []
    for line in lines:
        if f"--8<-- [start:{section}]" in line:
            inside = True
        elif f"--8<-- [end:{section}]" in line:
            inside = False
        elif inside:
            out.append(line)
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1])
