"""The public faces: what each one exports, in what order, and how it is documented.

Rules, for every face in ``FACES``:

- ``__all__`` has no duplicates and is in ruff's isort-style order (RUF022):
  SCREAMING_CASE constants, then CamelCase classes, then everything else,
  each group in natural order.
- ``__all__`` names exactly the public names of the face, as httpx's
  tests/test_exported_members.py requires of httpx. A public name is one not
  starting with ``_`` that the face's own top-level code binds: it defines it
  (``def``, ``class``, assignment) or re-exports it (an import from inside
  the ``resilience`` package, ``from . import backoff`` included). Imports
  from outside the package (``annotations``, typing names, ``math``,
  ``prometheus_client``) are implementation details, and so are the
  submodules the import system binds on the package as a side effect
  (``resilience.breaker``). Dunders may be exported (``__version__``).
  ``NOT_EXPORTED`` lists the few unexported public-looking names we know of.
- Every name in ``__all__`` whose value is a class or a function of this
  library carries its own docstring with an ``Example::`` literal block
  (the line ``Example::``, a blank line, then indented code). Modules,
  constants (``WAIT``, ``IDEMPOTENT_METHODS``), type aliases (``Jitter``,
  ``Listener``) and aliases of C functions (``lowlevel.running_loop``),
  which cannot carry a docstring of ours, are exempt.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import resilience

# Each public face, with the optional dependency it needs (None: always importable).
FACES = {
    "resilience": None,
    "resilience.lowlevel": None,
    "resilience.events": None,
    "resilience.backoff": None,
    "resilience.testing": None,
    "resilience.errors": None,
    "resilience.saga": None,
    "resilience.contrib.httpx": "httpx",
    "resilience.contrib.asgi": "anyio",
    "resilience.contrib.prometheus": "prometheus_client",
    "resilience.contrib.redis": "redis",
    "resilience.contrib.temporal": "temporalio",
}

# Public-looking names a face binds for its own use and deliberately does not
# export. Each entry must exist and must stay out of ``__all__``; a new
# unexported name fails the test instead of joining this list silently.
NOT_EXPORTED = {
    # The policies' hook into the global listeners.
    "resilience.events": {"dispatch", "global_listeners", "logger"},
    # Imported from the private _durations module for instrument()'s use.
    "resilience.contrib.prometheus": {"Durations", "add_store", "remove_store"},
}


def face(name: str) -> ModuleType:
    dependency = FACES[name]
    if dependency is not None:
        pytest.importorskip(dependency)
    return importlib.import_module(name)


def isort_key(name: str) -> tuple[int, list[str | int]]:
    """ruff's RUF022 order: constants, classes, the rest; natural order within."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    parts = re.split(r"(\d+)", name)
    return group, [int(part) if i % 2 else part for i, part in enumerate(parts)]


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run at import time, through ``if`` and ``try`` blocks."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                out += _top_level(handler.body)
    return out


def _assigned(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in _assigned(element)]
    return []


def bound_names(module: ModuleType) -> set[str]:
    """The names the module's own top-level code defines or imports from this package."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(name for target in node.targets for name in _assigned(target))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            names.update(_assigned(node.target))
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0 or (node.module or "").split(".")[0] == "resilience":
                names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "resilience":
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def public_names(module: ModuleType) -> set[str]:
    return {name for name in bound_names(module) if not name.startswith("_")}


_EXAMPLE = re.compile(r"^(?P<indent>[ ]*)Examples?::[ ]*\n(?:[ ]*\n)+(?P<code>[ ]*)\S", re.M)


def has_example(doc: str | None) -> bool:
    """An ``Example::`` line followed by a blank line and an indented code block."""
    if not doc:
        return False
    return any(
        len(match["code"]) > len(match["indent"])
        for match in _EXAMPLE.finditer(inspect.cleandoc(doc))
    )


def needs_example(obj: object) -> bool:
    """A class or a function of this library (not a module, constant or alias)."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return False
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "resilience"


@pytest.mark.parametrize("name", FACES)
def test_all_is_sorted_and_complete(name: str) -> None:
    module = face(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    assert exported == sorted(exported, key=isort_key), f"{name}.__all__ is not sorted"
    missing = [member for member in exported if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    internal = NOT_EXPORTED.get(name, set())
    public = public_names(module)
    assert internal <= public, f"stale NOT_EXPORTED entries: {sorted(internal - public)}"
    assert not internal & set(exported), f"exported yet NOT_EXPORTED: {sorted(internal)}"
    dunders = {member for member in exported if member.startswith("__")}
    unexported = sorted(public - internal - set(exported))
    assert not unexported, f"{name} binds public names missing from __all__: {unexported}"
    unbound = sorted(set(exported) - dunders - public)
    assert not unbound, (
        f"{name}.__all__ names what the module neither defines nor re-exports: {unbound}"
    )


@pytest.mark.parametrize("name", FACES)
def test_public_names_have_docstrings_with_examples(name: str) -> None:
    module = face(name)
    lacking = [
        f"{name}.{member} ({getattr(module, member).__module__})"
        for member in module.__all__
        if needs_example(getattr(module, member))
        and not has_example(getattr(module, member).__doc__)
    ]
    assert not lacking, "no docstring with an Example:: block:\n" + "\n".join(lacking)


def test_the_example_rule_can_fail() -> None:
    assert has_example("Do it.\n\nExample::\n\n    do_it()\n")
    assert has_example("Do it.\n\n    Example::\n\n        do_it()\n    ")
    assert not has_example(None)
    assert not has_example("Do it.")
    assert not has_example("Example: do_it()")
    assert not has_example("Do it.\n\nExample::\n\nNot code.\n")
    assert not has_example("Do it.\n\nExample::\n    do_it()\n")  # no blank line: no block
    assert needs_example(resilience.Retry)
    assert needs_example(resilience.deadline)
    for exempt in (
        resilience.backoff,  # a module
        resilience.__version__,
        resilience.backoff.Jitter,  # a type alias
        resilience.lowlevel.WAIT,  # a constant
        resilience.lowlevel.running_loop,  # a C function of asyncio
    ):
        assert not needs_example(exempt), exempt


def test_the_export_rule_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "face_under_test.py").write_text(
        "from __future__ import annotations\n"
        "import math\n"
        "from typing import Any\n"
        "from resilience import Retry\n"
        "from resilience._clock import SYSTEM_CLOCK as clock\n"
        "LIMIT: int = 3\n"
        "if math.pi:\n"
        "    def helper() -> Any: ...\n"
        "class _Private: ...\n"
        "__all__ = ['Retry']\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("face_under_test")
    assert public_names(module) == {"LIMIT", "Retry", "clock", "helper"}
    assert "annotations" not in public_names(resilience.events)
    assert "breaker" not in public_names(resilience)  # bound by the import system only
    assert {"backoff", "events", "testing"} <= public_names(resilience)
    # As `ruff check --select RUF022 --fix` orders them:
    assert sorted(["b", "a10", "a2", "X", "WAIT", "__v__", "Ab", "A_B"], key=isort_key) == [
        "A_B",
        "WAIT",
        "Ab",
        "X",
        "__v__",
        "a2",
        "a10",
        "b",
    ]


def test_import_needs_no_optional_dependency() -> None:
    code = (
        "import sys, resilience\n"
        "heavy = {'httpx', 'prometheus_client', 'redis', 'trio', 'tenacity', 'aiobreaker'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
