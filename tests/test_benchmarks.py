"""Smoke test of the benchmarks: every case sets up and runs once, and the runner writes its files.

Not a timing test: it only catches a broken case (or runner) before `make bench` does.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import benchmarks
from benchmarks.cases import ALL_BACKENDS, Case

MODULES = sorted(
    info.name
    for info in pkgutil.iter_modules(benchmarks.__path__)
    if info.name.startswith("cases_")
)


def _all_cases() -> list[tuple[str, Case]]:
    found: list[tuple[str, Case]] = []
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        found.extend((name, case) for case in module.cases())
    return found


CASES = _all_cases()


def test_every_case_module_defines_cases() -> None:
    assert "cases_baseline" in MODULES
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        cases = module.cases()
        assert isinstance(cases, list)
        assert cases, f"{name}.cases() returned no case"
        assert all(isinstance(case, Case) for case in cases)


def test_labels_keys_and_baselines_are_consistent() -> None:
    labels = [case.label for _, case in CASES]
    assert len(labels) == len(set(labels)), "case labels must be unique"
    keys = [case.key for _, case in CASES if case.key]
    assert len(keys) == len(set(keys)), "case keys must be unique"
    for module, case in CASES:
        assert case.baseline in labels, (
            f"{module}: {case.label!r} has unknown baseline {case.baseline!r}"
        )
        assert set(case.backends) <= set(ALL_BACKENDS), f"{module}: {case.label!r}"


@pytest.mark.parametrize(
    ("module", "case"), CASES, ids=[f"{module}:{case.label}" for module, case in CASES]
)
def test_case_runs_once(module: str, case: Case) -> None:
    if case.kind == "sync":
        case.setup()()
        return

    async def main() -> None:
        target = case.setup()
        await target()
        await target()

    # One backend per case, to stay fast: asyncio, or trio for trio-only cases.
    if "asyncio" in case.backends:
        asyncio.run(main())
    else:
        trio = pytest.importorskip("trio")
        trio.run(main)


def test_runner_writes_results(tmp_path: Path) -> None:
    from benchmarks.run import main

    code = main(
        [
            "--filter",
            "baselines",
            "--backends",
            "asyncio",
            "--repeats",
            "2",
            "--batch",
            "0.002",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {(row["backend"], row["label"]): row for row in data["results"]}
    assert rows["asyncio", "await f()"]["overhead"] == 0
    assert len(rows["asyncio", "raise caught"]["us_per_call"]) == 2
    assert ("sync", "g()") in rows
    assert data["meta"]["versions"]["python"]
    assert {t["key"] for t in data["targets"]} >= {"retry.success", "timeout.success"}
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in text
    assert "| baselines | await f() |" in text


def test_memory_module_runs_and_renders() -> None:
    from benchmarks.memory import render_markdown, run

    memory = run(calls=2_000)
    assert memory["bytes_per_policy"]["CircuitBreaker()"] > 0
    assert [point["calls"] for point in memory["soak"]] == [0, 500, 1_000, 2_000]
    assert memory["soak"][-1]["injected_failures"] > 0
    text = render_markdown(memory)
    assert "## Memory" in text
    assert "| 2,000 |" in text


# The two measurement drivers that need tools (wrk, valgrind) are not run by
# the suite; their parsing and arithmetic are.

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000/items/1
  1 threads and 32 connections
  50000 requests in 5.00s, 4.50MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  10000.00
Transfer/sec:      0.90MB
"""


def test_wrk_output_is_parsed_and_judged() -> None:
    from benchmarks import asgi_wrk

    run = asgi_wrk.parse_wrk(WRK_OUTPUT, "bare", 1)
    assert (run.rps, run.requests, run.non_2xx, run.socket_errors) == (10000.0, 50000, 7, 3)
    assert not run.valid
    with pytest.raises(RuntimeError, match="Requests/sec"):
        asgi_wrk.parse_wrk("garbage", "bare", 1)

    def runs(bare_cpu: list[float], middleware_cpu: list[float]) -> list[asgi_wrk.WrkRun]:
        out = []
        for i, (b, m) in enumerate(zip(bare_cpu, middleware_cpu, strict=True)):
            for config, cpu in (("bare", b), ("middleware", m)):
                out.append(
                    asgi_wrk.WrkRun(config, i, 1e6 / cpu, 50000, 0, 0, server_cpu_s=cpu * 0.05)
                )
        return out

    steady = asgi_wrk.summarize(runs([80.0, 80.0, 80.0], [82.0, 82.0, 82.0]))
    assert steady["verdict"] == "PASS"  # 80/82 = 97.6 %
    assert steady["median_extra_cpu_us"] == pytest.approx(2.0)
    costly = asgi_wrk.summarize(runs([80.0, 80.0, 80.0], [90.0, 90.0, 90.0]))
    assert costly["verdict"] == "FAIL"
    noisy = asgi_wrk.summarize(runs([70.0, 80.0, 95.0], [82.0, 84.0, 90.0]))
    assert noisy["verdict"] == "INCONCLUSIVE"


def test_instruction_counts_become_per_call_figures() -> None:
    from benchmarks import instructions

    stderr = "==123== Events    : Ir\n==123== Collected : 4567890\n==123==\n"
    found = instructions.COLLECTED.search(stderr)
    assert found is not None
    assert found.group(1) == "4567890"
    rows = {row.key: row for row in instructions.build_rows()}
    bare, ours = rows["asgi.bare"], rows["asgi.middleware"]
    bare.ir = {2000: 10_000_000, 12000: 60_000_000}  # 5,000 per call
    ours.ir = {2000: 20_000_000, 12000: 120_000_000}  # 10,000 per call
    results = {r["key"]: r for r in instructions.analyse([bare, ours], 2000, 12000)}
    assert results["asgi.middleware"]["instructions_per_call"] == 10_000
    assert results["asgi.middleware"]["extra"] == 5_000
    assert results["asgi.middleware"]["ratio_to_baseline"] == 2.0


def test_a_run_writes_outside_the_tracked_tables_by_default() -> None:
    import subprocess
    from pathlib import Path

    from benchmarks import run

    out = Path(run.parse_args([]).out)
    assert out.name == ".bench"
    tracked = subprocess.run(
        ["git", "ls-files", "--", str(out)],
        cwd=Path(run.__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert tracked == ""  # not the committed benchmarks/RESULTS.md


def test_the_scrape_row_reads_exactly_its_400_policies() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from benchmarks import cases_prometheus

    target = cases_prometheus._scrape_100()
    names = {
        sample.labels.get("name")
        for family in text_string_to_metric_families(target().decode())
        for sample in family.samples
    }
    # 100 breakers and 100 retries named, 100 bulkheads and 100 timeouts
    # with generated names: 400 policies, and no other live policy.
    assert len(names - {None}) == 400
