"""Which async backend runs this code, answered in one place and cheaply.

asyncio is probed directly (its running loop, its current task); anything
else that runs our async code is trio, imported lazily so that
``import resilience`` never needs it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["current_task", "get_ident", "running_loop", "trio"]

running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop
"""The running asyncio loop of this thread, or None (trio, or no loop).

Example::

    loop = running_loop()
    task = current_task(loop) if loop is not None else None
"""

get_ident = threading.get_ident

current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
"""``current_task(loop)``: the task ``loop`` is running now, or None.

Example::

    loop = running_loop()
    task = current_task(loop) if loop is not None else None
"""
if sys.version_info < (3, 12):
    # asyncio.current_task is Python code on 3.11; this is the dict it reads.
    current_task = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
else:  # pragma: no cover - C from 3.12 on
    current_task = asyncio.current_task

_trio_module: ModuleType | None = None


def trio() -> ModuleType:
    """trio, imported on first use."""
    global _trio_module
    if _trio_module is None:
        import trio as module

        _trio_module = module
    return _trio_module
