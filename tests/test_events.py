from __future__ import annotations

import logging
from typing import Any

import pytest

import resilience.retry
from resilience import Retry, backoff, events
from resilience.events import Event, RetryScheduled


def failing_twice() -> Any:
    state = {"n": 0}

    def fn() -> str:
        state["n"] += 1
        if state["n"] <= 2:
            raise ConnectionError
        return "ok"

    return fn


def test_global_listener_sees_every_policy_and_can_be_removed() -> None:
    seen: list[Event] = []
    events.add_listener(seen.append)
    try:
        Retry(3, backoff=backoff.immediate(), name="one").call_sync(failing_twice())
        Retry(3, backoff=backoff.immediate(), name="two").call_sync(failing_twice())
    finally:
        events.remove_listener(seen.append)
    assert [e.name for e in seen] == ["one", "one", "two", "two"]
    Retry(3, backoff=backoff.immediate()).call_sync(failing_twice())
    assert len(seen) == 4


def test_a_raising_listener_is_logged_and_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retry = Retry(3, backoff=backoff.immediate())
    delivered: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    retry.add_listener(broken)
    retry.add_listener(delivered.append)
    with caplog.at_level(logging.ERROR, logger="resilience"):
        assert retry.call_sync(failing_twice()) == "ok"
    assert len(delivered) == 2  # the later listener still got every event
    assert "listener bug" in caplog.text


def test_no_event_object_is_built_without_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    class Counting(RetryScheduled):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            built.append(args)
            super().__init__(*args)

    monkeypatch.setattr(resilience.retry, "RetryScheduled", Counting)
    retry = Retry(3, backoff=backoff.immediate())
    retry.call_sync(failing_twice())
    assert built == []
    retry.add_listener(lambda event: None)
    retry.call_sync(failing_twice())
    assert len(built) == 2


def test_events_are_frozen_and_slotted() -> None:
    event = RetryScheduled("r", 1, 0.5, None)
    with pytest.raises(AttributeError):
        event.delay = 2  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_listeners_must_be_callable() -> None:
    with pytest.raises(TypeError, match="listener"):
        Retry().add_listener(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener"):
        events.add_listener("x")  # type: ignore[arg-type]
