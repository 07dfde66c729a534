# Two entry points for people: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: run test lint fmt venv clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m bot init --sample-if-empty
	$(PY) -m bot run

test: $(STAMP)
	$(PY) -m pytest -n auto

# The figures of docs/BENCHMARKS.md (long: the national-scale part generates 80,000
# cooperatives with 24 months of reports on SQLite and on PostgreSQL when it is reachable).
# Each script alone: `.venv/bin/python bench/<script>.py --help`.
BENCH_PG ?= postgresql://postgres@127.0.0.1:5432/test

bench: $(STAMP)
	$(PY) bench/updates.py --updates 3000
	$(PY) bench/updates.py --updates 3000 --url $(BENCH_PG)
	$(PY) bench/broadcast.py --recipients 10000 --rate 1000
	$(PY) bench/broadcast.py --recipients 10000 --rate 1000 --url $(BENCH_PG)
	$(PY) bench/broadcast.py --recipients 3000 --rate 30
	$(PY) bench/broadcast.py --recipients 3000 --rate 30 --url $(BENCH_PG)
	$(PY) bench/scale.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
