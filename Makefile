# swiperec: `make demo` runs the main job on the embedded defaults; `make test` runs the tests.
# Both install what they need first (a .venv from setup.py, Deno from the npm registry).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DENO_VERSION := 2.9.6
DENO   := tools/deno/node_modules/.bin/deno
# The dashboard's browser test drives Debian's Chromium through its matching chromedriver.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
DOCKERFILES := images/pipeline.Dockerfile images/serving.Dockerfile

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup deno browser wrk demo test test-cluster lint format compile bench clean

setup: $(STAMP)

$(STAMP): setup.py requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "swiperec needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]' -c requirements/constraints.txt
	@touch $(STAMP)

deno: $(DENO)

$(DENO):
	npm install --silent --no-audit --no-fund --prefix tools/deno deno@$(DENO_VERSION)
	@$(DENO) --version | head -n 1

browser: $(CHROMEDRIVER)

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium chromium-driver

# The serving benchmark loads the Edge Function over HTTP with Debian's wrk.
WRK := /usr/bin/wrk

wrk: $(WRK)

$(WRK):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk

demo: setup deno
	$(BIN)/swiperec demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint $(DOCKERFILES)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per worker at a time, so a
# module's shared set-up (the demo run in test_pipeline.py) happens once; each worker starts its
# own embedded server and session fixtures (the tiny data set's snapshot and transform are made
# once for all of them: `_once_for_all_workers` in tests/conftest.py); the slowest files start
# first (SLOW_FILES_FIRST there); the 15 slowest are listed at the end. `make test
# TEST_WORKERS=0` runs them in this process.
TEST_WORKERS ?= 2
# A marker expression narrows the run: `make test MARKERS="not integration"`. The cluster
# rehearsal stays out of `make test` whatever it says (a `-m` in PYTEST_ARGS would replace the
# whole expression: pytest keeps the last `-m`).
MARKERS ?=

test: setup deno browser lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 \
		-m "not cluster$(if $(MARKERS), and ($(MARKERS)))" $(PYTEST_ARGS)

# The cluster rehearsal (tests marked `cluster`): the Beam steps on PortableRunner with a job
# service and SDK worker processes of their own, checked against the in-process runs. CI runs it
# after `make test`.
test-cluster: setup
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

# A developer's action in this checkout: the pipeline definition -> its committed YAML, which the
# package ships (swiperec/resources/ links to it).
compile: setup
	$(BIN)/python -m pipelines compile

# The performance suite (tests/performance/suite.py) at SCALE = small (minutes), default, large
# (200k videos) or xl (1M videos): tests/performance/results/suite/<scale>.json and .html.
# `make bench BENCH_ARGS=--check` exits 1 on a figure worse than the committed run's noise band.
SCALE ?= small

bench: setup deno wrk
	$(BIN)/python -m tests.performance.suite --scale $(SCALE) $(BENCH_ARGS)

clean:
	-$(BIN)/swiperec db stop
	rm -rf $(VENV) tools .swiperec *.egg-info .pytest_cache .ruff_cache
