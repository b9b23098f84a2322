# Spartan: `make run` sets everything up and runs the default research pipeline offline;
# `make test` runs the test suite in the same environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PARAMS ?= params/daily.yaml

.PHONY: install run test lab bench scale execution clean browser

install: $(STAMP)

# What running research needs; re-installed whenever the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# The test tools (pytest and its plugins, hypothesis, nbval, playwright, aiosmtpd): for `make test` only.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(BIN)/spartan run $(PARAMS)

# The suite runs on TEST_WORKERS processes (each with its own scratch workspace), a test file per worker
# (nbval's notebooks all to one worker, in the chain's order: see tests/conftest.py). The longest are
# handed out first, so that the two workers finish together (pytest drops the repeated paths).
TEST_WORKERS ?= 2
LONGEST_FIRST := notebooks tests/test_scale_smoke.py tests/test_pipeline.py tests/test_compute.py tests/test_soak.py \
                 tests/test_reuse.py tests/test_trade_kill.py tests/test_notebooks.py
test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --cov=research_lib --cov-report=term --cov-fail-under=90 \
	  $(LONGEST_FIRST) tests --nbval-lax

# The dashboard's browser test drives Debian's chromium (no browser download): installed when
# missing and this is root on Debian (as on CI); otherwise that one test is skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium is not installed: the dashboard browser test will be skipped (apt-get install chromium)"; }

# JupyterLab rooted at the workspace (this folder, or $$SPARTAN_HOME when set): notebooks, reports, params
# and data in its file browser, opening on notebooks/. --allow-root: Docker, CI containers and many
# research servers run as root. LAB_PORT=8890 LAB_ARGS=--no-browser to change the port or pass options.
LAB_PORT ?= 8888
WORKSPACE := $(or $(SPARTAN_HOME),$(CURDIR))
lab: $(STAMP)
	@mkdir -p "$(WORKSPACE)/reports" "$(WORKSPACE)/data"
	$(BIN)/jupyter lab --allow-root --ServerApp.root_dir="$(WORKSPACE)" --LabApp.default_url=/lab/tree/notebooks \
	  --ServerApp.port=$(LAB_PORT) $(LAB_ARGS)

# The bench extra (vectorbt, the sweep benchmark's reference) is installed for `make bench` only.
# `make bench` runs every benchmark but scale; `make bench BENCH="sweep pipeline"` runs some;
# `make bench scale` runs the scale benchmark (synthetic 20/100/500 names, Dask 1 vs 2 workers);
# `make bench execution` market, TWAP, VWAP and iceberg on the intraday simulator.
$(BENCH_STAMP): $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python tests/bench/run_bench.py $(BENCH) $(filter scale execution,$(MAKECMDGOALS))

scale execution:
	@: # goals read by `make bench scale` and `make bench execution`

clean:
	rm -rf reports/runs reports/index.html reports/bench data/snapshots
