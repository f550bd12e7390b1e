"""The base of every event (re-exported by :mod:`resilience.events`), in a
module of its own so that the events of each mechanism can live beside it
without importing the listeners."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event. ``name`` is the emitting policy's name.

    Example::

        def log_event(event: Event) -> None:
            print(f"{event.name}: {event}")

        add_listener(log_event)   # every event of every policy
    """

    name: str
