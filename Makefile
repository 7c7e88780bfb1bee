# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# A working python3.12: pyenv shims can exist without answering, so each candidate is run.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
  $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo $$p; break; }; done)
PYTEST_ARGS ?=
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export XLA_FLAGS ?=

.PHONY: venv demo test test-slow soak benchmark clean

$(VENV)/.installed: requirements.txt setup.py
	@if [ -z "$(PYTHON312)" ]; then echo "error: python3.12 not found (tried python3.12, ~/.pyenv/versions/3.12*/bin, /usr/local/bin, /usr/bin); install Python 3.12 or pass PYTHON312=/path/to/python3.12" >&2; exit 1; fi
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m launch.demo

# Two pytest-xdist workers: one compiles while the other runs compiled code (compilation is mostly
# single-threaded); --dist loadscope keeps each module on one worker, so its module-scoped compiled
# fixtures are built once.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadscope

test: venv
	$(PY) -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS) tests

test-slow: venv
	$(PY) -m pytest -q $(XDIST) -m "slow" $(PYTEST_ARGS) tests

# A 1,000-step tiny run with host and device memory sampled every 50 steps (flat within 5% after
# warm-up); writes the curve to $(SOAK_OUT).
SOAK_OUT ?= soak.json
soak: venv
	SOAK_OUT=$(abspath $(SOAK_OUT)) $(PY) -m pytest -q -m soak $(PYTEST_ARGS) tests/soak_test.py

benchmark: venv
	$(PY) -m launch.benchmark --config=configs/benchmark.py:what=all

clean:
	rm -rf $(VENV) .cache
