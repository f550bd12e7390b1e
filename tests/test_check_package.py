"""The wheel checks of tools/check_package.py can fail.

``make package`` runs the whole tool on real archives; this shows, on small
made-up wheels, that each content rule rejects what it is meant to.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_package.py"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_package", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_wheel(tool: ModuleType, path: Path, files: Iterable[str]) -> Path:
    info = f"resilience_policies-{tool.version()}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        for name in files:
            archive.writestr(name, "")
        archive.writestr(f"{info}/METADATA", "Name: resilience-policies\n\n# resilience\n")
        archive.writestr(f"{info}/licenses/LICENSE", "MIT")
    return path


def test_a_wheel_of_the_library_passes(tool: ModuleType, tmp_path: Path) -> None:
    wheel = make_wheel(tool, tmp_path / "good.whl", tool.source_files())
    assert tool.check_wheel(wheel)["Name"] == "resilience-policies"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda files: files | {"tests/test_retry.py"}, "outside resilience/"),
        (lambda files: files | {"resilience/tests/test_x.py"}, "must not"),
        (lambda files: files | {"resilience/__pycache__/retry.cpython-311.pyc"}, "must not"),
        (lambda files: files - {"resilience/py.typed"}, "py.typed"),
        (lambda files: files - {"resilience/retry.py"}, "missing ['resilience/retry.py']"),
    ],
)
def test_a_wrong_wheel_fails(
    tool: ModuleType, tmp_path: Path, change: Callable[[set[str]], set[str]], complaint: str
) -> None:
    wheel = make_wheel(tool, tmp_path / "bad.whl", change(set(tool.source_files())))
    with pytest.raises(tool.PackageError, match=re.escape(complaint)):
        tool.check_wheel(wheel)
