from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    # Mark coroutine tests before the anyio plugin looks for its marker, so no
    # test module has to repeat `pytestmark = pytest.mark.anyio`.
    if inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)
