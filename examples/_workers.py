"""Worker processes of a fleet: a module run again with ``--worker``, one OS
process each, told one line at a time on stdin and answering one JSON line
each on stdout. ``examples/redis_fleet.py`` and ``benchmarks/redis_fleet.py``
drive theirs with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

__all__ = ["Workers"]

ROOT = Path(__file__).resolve().parent.parent  # where `python -m examples.X` runs
STOP_GRACE = 5.0  # seconds for a worker to end after its stdin closes


class Workers:
    """``python -m module --worker *argv`` for each ``argv`` in ``argvs``; use
    it in ``with``, which stops them all at the end, on an error too."""

    def __init__(self, module: str, argvs: Iterable[Sequence[str]]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        try:
            for argv in argvs:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module, "--worker", *argv],
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tell(self, line: str) -> None:
        """Send every worker ``line`` (so that they all start at once)."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def read(self) -> list[dict[str, Any]]:
        """Each worker's next JSON line, in order."""
        reports = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"a worker exited with {process.wait()} (its error is above)")
            reports.append(json.loads(line))
        return reports

    def ask(self, line: str) -> list[dict[str, Any]]:
        """``tell(line)``, then ``read()`` every worker's report."""
        self.tell(line)
        return self.read()

    def stop(self) -> None:
        """Close their stdin (a worker's loop ends there), wait, kill the late ones."""
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
