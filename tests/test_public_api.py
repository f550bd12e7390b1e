from __future__ import annotations

import subprocess
import sys

import resilience


def test_all_is_sorted_and_complete() -> None:
    assert resilience.__all__ == sorted(resilience.__all__)
    for name in resilience.__all__:
        assert hasattr(resilience, name), name


def test_import_needs_no_optional_dependency() -> None:
    code = (
        "import sys, resilience\n"
        "heavy = {'httpx', 'prometheus_client', 'redis', 'trio', 'tenacity', 'aiobreaker'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_have_docstrings_with_examples() -> None:
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if isinstance(obj, type) and obj.__module__.startswith("resilience"):
            assert obj.__doc__, name
