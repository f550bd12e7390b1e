"""A contrib module whose extra is missing says which extra to install.

Each module is imported in a fresh interpreter where the third-party modules
of every extra are blocked (``sys.modules[name] = None`` makes their import
fail as a missing one does), so the test needs no second environment.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import resilience.contrib
from resilience.contrib import _extras

ROOT = Path(__file__).resolve().parent.parent

# Each public contrib module: the third-party module it imports and the extra
# that brings it, or None when it needs nothing beyond anyio.
CONTRIB = {
    "resilience.contrib.aiobreaker": ("aiobreaker", "aiobreaker"),
    "resilience.contrib.asgi": None,
    "resilience.contrib.httpx": ("httpx", "httpx"),
    "resilience.contrib.logging": None,
    "resilience.contrib.prometheus": ("prometheus_client", "prometheus"),
    "resilience.contrib.redis": ("redis", "redis"),
    "resilience.contrib.temporal": ("temporalio", "temporal"),
    "resilience.contrib.tenacity": ("tenacity", "tenacity"),
}

# Every optional third-party module, blocked at once: the modules needing no
# extra must import without any of them (starlette included: the ASGI
# middleware is plain ASGI).
BLOCKED = sorted({entry[0] for entry in CONTRIB.values() if entry} | {"starlette", "trio"})


def present_modules() -> list[str]:
    return sorted(
        f"resilience.contrib.{info.name}"
        for info in pkgutil.iter_modules(resilience.contrib.__path__)
        if not info.name.startswith("_")
    )


def import_blocked(module: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\nimport {module}\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == _extras.DISTRIBUTION
    table: dict[str, list[str]] = project["optional-dependencies"]
    return table


def normalized(distribution: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_every_contrib_module_is_listed() -> None:
    unlisted = sorted(set(present_modules()) - set(CONTRIB))
    assert not unlisted, f"add these to CONTRIB, with the extra each needs: {unlisted}"


@pytest.mark.parametrize("module", sorted(CONTRIB))
def test_missing_extra_names_the_install_command(module: str) -> None:
    if module not in present_modules():
        pytest.skip(f"{module} is not in this tree yet")
    needs = CONTRIB[module]
    result = import_blocked(module)
    if needs is None:
        assert result.returncode == 0, result.stderr
        return
    dependency, extra = needs
    last = result.stderr.strip().splitlines()[-1]
    # The missing module named is the one imported: the package or a submodule of it.
    assert last.startswith(
        f"ModuleNotFoundError: {module} needs the {extra!r} extra ({dependency}"
    ), last
    assert last.endswith(f'is missing): pip install "resilience-policies[{extra}]"'), last


@pytest.mark.parametrize("module", sorted(name for name, needs in CONTRIB.items() if needs))
def test_the_extra_brings_the_module(module: str) -> None:
    needs = CONTRIB[module]
    assert needs is not None
    dependency, extra = needs
    table = extras()
    (everything,) = table["all"]
    assert everything.startswith(f"{_extras.DISTRIBUTION}[")
    assert extra in everything[everything.index("[") + 1 : -1].split(","), f"[all] lacks {extra}"
    required = {normalized(re.split(r"[^A-Za-z0-9_.-]", line)[0]) for line in table[extra]}
    distributions = importlib.metadata.packages_distributions().get(dependency, [])
    assert {normalized(name) for name in distributions} & required, (dependency, table[extra])


def test_the_hint_is_shell_safe_and_keeps_the_cause() -> None:
    assert _extras.install_hint("redis") == 'pip install "resilience-policies[redis]"'
    with pytest.raises(ModuleNotFoundError) as caught, _extras.needs_extra("pkg.mod", "x"):
        import resilience_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert caught.value.name == "resilience_no_such_module"
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert str(caught.value).endswith('pip install "resilience-policies[x]"')
