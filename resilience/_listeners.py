"""What every emitter of events holds: its own listeners, beside the global ones.

Policies, sagas and the idempotency middleware all emit events the same way:
a tuple of listeners of their own, replaced as a whole when one is added or
removed (so a dispatch that is iterating it never sees it change), and an
event object built only when someone listens.
"""

from __future__ import annotations

from .events import Event, Listener, dispatch, global_listeners

__all__ = ["EventSource"]


class EventSource:
    """Listeners of one object, called with each event it emits, and then
    the global listeners (:func:`resilience.events.add_listener`).

    The base of every policy, of :class:`~resilience.saga.Saga`, and of
    anything of your own that emits our events (from
    :mod:`resilience.lowlevel`): ``add_listener`` and ``remove_listener``
    for its users; ``_observed()`` ("does anyone listen?", one test) and
    ``_emit(event)`` for its own code.

    Example::

        class Cache(EventSource):
            __slots__ = ()

            def evicted(self, key: str) -> None:
                if self._observed():  # no listener: no event object
                    self._emit(CacheEvicted("cache", key))

        cache = Cache()
        cache.add_listener(print)
    """

    __slots__ = ("_listeners",)

    _listeners: tuple[Listener, ...]

    def __init__(self) -> None:
        self._listeners = ()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event this object emits.

        Example::

            breaker.add_listener(lambda event: print(event))
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling a listener added with :meth:`add_listener`.

        Example::

            breaker.add_listener(print)
            breaker.remove_listener(print)
        """
        listeners = list(self._listeners)
        listeners.remove(listener)
        self._listeners = tuple(listeners)

    def _observed(self) -> bool:
        """True when some listener would receive an event: build it only then."""
        return bool(self._listeners or global_listeners)

    def _emit(self, event: Event) -> None:
        dispatch(self._listeners, event)
