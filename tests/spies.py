"""Counting spies for tests that check which path a call took."""

from __future__ import annotations

from typing import Any

import pytest


class CallCount:
    """How many times the spied method was called."""

    def __init__(self) -> None:
        self.calls = 0


def count_async_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> CallCount:
    """Replace the async method ``owner.name`` (for this test) with one that
    counts its calls and then runs the original."""
    original = getattr(owner, name)
    count = CallCount()

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        count.calls += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return count
