"""Plain (sync) functions take the same policies: here a retried computation
with a fallback, and a retry budget shared by two call sites.

Run: python examples/sync_client.py
"""

from __future__ import annotations

import time

from resilience import Fallback, Retry, RetryBudget, backoff

budget = RetryBudget(ratio=0.2, min_per_second=1)
attempts = {"read": 0}


@Retry(3, backoff=backoff.fixed(0.01), budget=budget, name="read-config")
def read_config() -> dict[str, str]:
    attempts["read"] += 1
    if attempts["read"] < 3:
        raise OSError("config server busy")
    return {"region": "eu-west"}


@Fallback({}, name="optional-flags") | Retry(2, backoff=backoff.immediate(), budget=budget)
def read_flags() -> dict[str, bool]:
    raise OSError("flag service down")


if __name__ == "__main__":
    print("config:", read_config(), f"after {attempts['read']} attempts")
    print("flags:", read_flags())
    print(f"budget left: {budget.available(time.monotonic()):.1f} retries")
