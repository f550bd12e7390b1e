# Two commands on a fresh clone: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: demo test lint typecheck docs package examples bench bench-wrk bench-instructions clean redis

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]' --group dev
	touch $(STAMP)

demo: $(STAMP) redis
	$(BIN)/python -m examples.demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check resilience tests benchmarks examples tools
	$(BIN)/ruff format --check resilience tests benchmarks examples tools

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

# The sdist and the wheel as a user gets them: built, twine-checked, their
# contents checked, the wheel installed with every extra in a fresh venv and
# each public module imported there (tools/check_package.py says how).
package: $(STAMP)
	$(BIN)/python tools/check_package.py

test: lint typecheck docs package redis
	$(BIN)/python -m pytest -q $(ARGS)

# redis-server for the state shared on Redis (rate limits, breakers): the
# tests start real servers on free ports, and `make demo ARGS=--fleet` one of
# its own; installed when missing, as the setup contract says.
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

# HTTP throughput under uvicorn, loaded by wrk: bare ASGI app vs ResilienceMiddleware.
bench-wrk: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m benchmarks.asgi_wrk $(ARGS)

# CPU instructions per call under valgrind's callgrind (deterministic): each policy alone,
# the four-policy stack, the ASGI middleware and the httpx transport, with their targets.
bench-instructions: $(STAMP)
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python -m benchmarks.instructions $(ARGS)

clean:
	rm -rf $(VENV) site build dist
