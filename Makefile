# The two commands a newcomer needs: `make run` and `make test`. Only Python 3.11+ and git required.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check bench install clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

## make run: install, migrate, serve on 127.0.0.1:8080 (HOST/PORT override); embedded PostgreSQL when DATABASE_URL is unset
run: $(STAMP)
	$(PY) -m gateway serve

## make test: the whole suite against a real PostgreSQL (embedded, or TEST_DATABASE_URL)
test: $(STAMP)
	$(PY) -m gateway check
	$(PY) -m pytest -q $(PYTEST_ARGS)

check: $(STAMP)
	$(PY) -m gateway check

## make bench: bare aiohttp vs the gateway's gated read and widget exchange, same concurrency
bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
