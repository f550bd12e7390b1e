"""Every example runs, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))

# What each example must print (every line listed, in this order).
EXPECTED = {
    "quickstart.py": ("stats: RetryStatistics(",),
    "sync_client.py": ("config: {'region': 'eu-west'} after 3 attempts",),
    "demo.py": ("summary:",),
    "starlette_app.py": ("self-test passed",),
    "custom_policy.py": (
        "pipeline: 'in stock' after 3 attempts",
        "pipeline: 2 calls at once -> 'in stock', LimitReached",
        "transport: GET /items -> 200 after 2 attempts",
        "transport: 2 requests at once -> 200, HTTPBulkheadFullError",
        "middleware: GET / -> 200",
        "middleware: 2 requests at once -> 200, 503 (Retry-After: 2)",
        "limit: peak 1 in flight, 3 rejected",
        "custom policy: every check passed",
    ),
}
ARGS = {"demo.py": ["--duration", "2", "--clients", "5"]}


def test_every_example_has_an_expectation() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    module = f"examples.{path.stem}"
    out = subprocess.run(
        [sys.executable, "-m", module, *ARGS.get(path.name, [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    found = [
        next((i for i, line in enumerate(lines) if expected in line), None)
        for expected in EXPECTED[path.name]
    ]
    assert None not in found, (EXPECTED[path.name], out.stdout)
    assert found == sorted(found), (EXPECTED[path.name], out.stdout)
