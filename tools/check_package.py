"""Build the distributions and check them as a user would receive them.

``make package`` (and so ``make test``) runs this. It builds the sdist, and
the wheel from that sdist (so a file missing from the sdist breaks the wheel
here rather than on a user's machine), into ``dist/``; checks the metadata
with ``twine check --strict``; checks what each archive holds (the wheel:
the library alone; the sdist: the tracked files of the source tree that
``make test`` needs); then installs
the wheel with every extra into a fresh virtual environment that sees none of
the project's (no ``--system-site-packages``, no ``--no-deps``: pip resolves
the extras as a user's pip would, from its cache when it can) and imports
every public module there, from outside the work tree.

Usage: python tools/check_package.py
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable
from email.message import Message
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PACKAGE = "resilience"

# Directories of the repository that are not the library: never in a wheel.
NOT_SHIPPED = {"tests", "benchmarks", "examples", "docs", "tools", "__pycache__"}

# Run by the fresh environment's interpreter, in an empty directory with -I
# (no work tree, no user site, no PYTHON* variables on sys.path): every module
# of the package whose dotted name has no private part, each from the venv.
IMPORT_ALL = """
import importlib, importlib.metadata, pkgutil, sys
import resilience
imported = []
for info in pkgutil.walk_packages(resilience.__path__, "resilience."):
    if any(part.startswith("_") for part in info.name.split(".")):
        continue
    module = importlib.import_module(info.name)
    assert module.__file__.startswith(sys.prefix), (info.name, module.__file__)
    imported.append(info.name)
assert resilience.__file__.startswith(sys.prefix), resilience.__file__
version = importlib.metadata.version("resilience-policies")
assert version == resilience.__version__, (version, resilience.__version__)
print(" ".join(["resilience", *imported]))
"""


class PackageError(Exception):
    """A check failed; the message says which and why."""


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    """Run a command, fail with its output if it fails, return its stdout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise PackageError(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def project() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))[
        "project"
    ]
    return table


def version() -> str:
    text = (ROOT / PACKAGE / "_version.py").read_text("utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if found is None:
        raise PackageError(f"no __version__ in {PACKAGE}/_version.py")
    return found[1]


def source_files() -> set[str]:
    """The library's files as a wheel must hold them: its Python files and py.typed."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed")
        if "__pycache__" not in path.parts
    }


def build() -> tuple[Path, Path]:
    for old in DIST.glob("resilience_policies-*"):
        old.unlink()
    run(sys.executable, "-m", "build", "--outdir", DIST, ROOT)
    (sdist,) = DIST.glob("resilience_policies-*.tar.gz")
    (wheel,) = DIST.glob("resilience_policies-*.whl")
    return sdist, wheel


def check_no_strays(names: Iterable[str], archive: Path) -> None:
    strays = sorted(
        name
        for name in names
        if NOT_SHIPPED & set(PurePosixPath(name).parts[:-1]) or name.endswith(".pyc")
    )
    if strays:
        raise PackageError(f"{archive.name} holds what it must not: {strays[:10]}")


def check_wheel(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"resilience_policies-{version()}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    outside = sorted(name for name in names if not name.startswith((f"{PACKAGE}/", f"{info}/")))
    if outside:
        raise PackageError(f"{wheel.name} holds files outside {PACKAGE}/: {outside}")
    check_no_strays(names, wheel)
    shipped = {name for name in names if name.startswith(f"{PACKAGE}/")}
    if f"{PACKAGE}/py.typed" not in shipped:
        raise PackageError(f"{wheel.name} lacks {PACKAGE}/py.typed: type checkers would ignore it")
    if shipped != source_files():
        raise PackageError(
            f"{wheel.name} differs from {PACKAGE}/: missing {sorted(source_files() - shipped)}, "
            f"extra {sorted(shipped - source_files())}"
        )
    if f"{info}/licenses/LICENSE" not in names:
        raise PackageError(f"{wheel.name} lacks the license text")
    return metadata


def check_metadata(metadata: Message) -> None:
    table = project()
    extras = table["optional-dependencies"]
    if not isinstance(extras, dict):
        raise PackageError("pyproject.toml: [project.optional-dependencies] is not a table")
    expected = {
        "Name": [str(table["name"])],
        "Version": [version()],
        "Requires-Python": [str(table["requires-python"])],
        "License-Expression": [str(table["license"])],
        "Provides-Extra": sorted(extras),
    }
    for field, values in expected.items():
        found = sorted(metadata.get_all(field) or [])
        if found != values:
            raise PackageError(f"wheel METADATA {field}: {found}, expected {values}")
    description = metadata.get_payload()
    if not (isinstance(description, str) and description.startswith("# resilience")):
        raise PackageError("wheel METADATA lacks the README as its description")


def check_sdist(sdist: Path) -> None:
    """The sdist holds exactly the tracked files of what pyproject includes."""
    with tarfile.open(sdist) as archive:
        names = {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]
    included: list[str] = tool["hatch"]["build"]["targets"]["sdist"]["include"]
    tracked = set(run("git", "ls-files", "--", *included).split())
    # Files git does not track yet (a new module before its commit) are built in too.
    tracked |= set(
        run("git", "ls-files", "--others", "--exclude-standard", "--", *included).split()
    )
    # Always added by the build backend.
    generated = {"PKG-INFO", "pyproject.toml", ".gitignore"}
    if tracked - names:
        raise PackageError(f"{sdist.name} lacks {sorted(tracked - names)[:10]}")
    if names - tracked - generated:
        raise PackageError(
            f"{sdist.name} holds untracked {sorted(names - tracked - generated)[:10]}"
        )


def install_and_import(wheel: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="resilience-package-") as scratch:
        venv = Path(scratch) / "venv"
        # --without-pip: the project's pip installs into it (--python), which
        # saves bootstrapping a second pip; the environment is no less fresh.
        run(sys.executable, "-m", "venv", "--without-pip", venv)
        python = venv / "bin" / "python"
        pip = (sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check")
        run(*pip, "install", "--quiet", f"{wheel}[all]")
        run(*pip, "check")
        return run(python, "-I", "-c", IMPORT_ALL, cwd=Path(scratch)).split()


def main() -> int:
    started = time.monotonic()
    steps: list[str] = []
    try:
        sdist, wheel = build()
        steps.append(f"built {sdist.name} and {wheel.name}")
        run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
        steps.append("twine check passed")
        check_metadata(check_wheel(wheel))
        check_sdist(sdist)
        steps.append("contents and metadata as expected")
        modules = install_and_import(wheel)
        steps.append(f"installed with [all] in a fresh venv; imported {len(modules)} modules")
    except PackageError as error:
        print(f"package check failed: {error}", file=sys.stderr)
        return 1
    for step in steps:
        print(f"package: {step}")
    print(f"package: {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
