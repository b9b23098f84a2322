# Spartan: `make run` sets everything up and runs the default research pipeline offline;
# `make test` runs the test suite in the same environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PARAMS ?= params/daily.yaml

.PHONY: install run test lab bench scale clean browser

install: $(STAMP)

# Re-install whenever the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

run: $(STAMP)
	$(BIN)/spartan run $(PARAMS)

# The suite runs on TEST_WORKERS processes (each with its own scratch workspace), a test file per worker.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --cov=research_lib --cov-report=term --cov-fail-under=90 tests notebooks --nbval-lax

# The dashboard's browser test drives Debian's chromium (no browser download): installed when
# missing and this is root on Debian (as on CI); otherwise that one test is skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium is not installed: the dashboard browser test will be skipped (apt-get install chromium)"; }

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

# The bench extra (vectorbt, the sweep benchmark's reference) is installed for `make bench` only.
# `make bench` runs every benchmark but scale; `make bench BENCH="sweep pipeline"` runs some;
# `make bench scale` runs the scale benchmark (synthetic 20/100/500 names, Dask 1 vs 2 workers).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python tests/bench/run_bench.py $(BENCH) $(filter scale,$(MAKECMDGOALS))

scale:
	@: # a goal read by `make bench scale`

clean:
	rm -rf reports/runs reports/index.html reports/bench data/snapshots
