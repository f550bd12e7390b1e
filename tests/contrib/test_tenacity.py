from __future__ import annotations

import pytest
import tenacity

from resilience import Retry
from resilience.contrib.tenacity import from_tenacity
from resilience.testing import FakeClock


def test_tenacity_wait_strategies_drive_the_schedule() -> None:
    clock = FakeClock()
    retry = Retry(
        5, backoff=from_tenacity(tenacity.wait_exponential(multiplier=1, max=5)), clock=clock
    )
    with pytest.raises(ConnectionError):
        retry.call_sync(_fail)
    assert clock.sleeps == [1, 2, 4, 5]


def test_combined_and_chained_strategies() -> None:
    schedule = from_tenacity(
        tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(3)) + tenacity.wait_fixed(1)
    )
    assert [schedule.delay(n, 0.0) for n in (1, 2, 3)] == [2, 4, 4]


def test_invalid_strategies_are_refused() -> None:
    with pytest.raises(TypeError, match="wait"):
        from_tenacity(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid delay"):
        from_tenacity(lambda state: -1).delay(1, 0.0)  # type: ignore[arg-type]


def _fail() -> None:
    raise ConnectionError
