"""Call observers: told each policy's span of each call, at one test per call when there are none.

The compiled runners of :mod:`resilience._plan` run with this module's
namespace as their globals: they read ``_observing`` (whether ``_observers``
is non-empty), ``_observers`` (rebound as a whole on every change, so a call
never sees it change under its feet), ``_notify``, ``_perf`` and ``WAIT``
from here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ._protocol import WAIT, CallObserver

__all__ = ["WAIT", "add_observer", "remove_observer"]

_logger = logging.getLogger("resilience")
_perf = time.perf_counter

_observers: tuple[CallObserver, ...] = ()
# The test every compiled runner makes per call, kept as a bool beside the
# tuple: ``if`` on a bool is a pointer comparison, on a tuple a call of its
# length (about 35 instructions a call more, measured on 3.11).
_observing = False
_observers_lock = threading.Lock()


def add_observer(observer: CallObserver) -> None:
    """Call ``observer(policy, error, seconds)`` for every policy span of every call.

    Example::

        spans = []
        resilience.lowlevel.add_observer(lambda p, e, s: spans.append((p.name, s)))
    """
    global _observers, _observing
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {observer!r}")
    with _observers_lock:
        _observers = (*_observers, observer)
        _observing = True


def remove_observer(observer: CallObserver) -> None:
    """Stop calling an observer added with :func:`add_observer` (a no-op if it is not there).

    Example::

        resilience.lowlevel.remove_observer(log_slow)
    """
    global _observers, _observing
    with _observers_lock:
        # Equality, not identity: each `obj.method` is a new bound method,
        # equal to the one that was added.
        _observers = tuple(o for o in _observers if o != observer)
        _observing = bool(_observers)


def _notify(policy: Any, error: BaseException | None, seconds: float) -> None:
    if policy is None:
        return  # an internal helper's span
    for observer in _observers:
        try:
            observer(policy, error, seconds)
        except Exception:
            _logger.exception("resilience: call observer %r raised", observer)
