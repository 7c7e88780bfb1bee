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

.PHONY: venv demo test test-slow test-parity soak benchmark clean

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
	$(PY) -m pytest -q $(XDIST) -m "not slow and not parity" $(PYTEST_ARGS) tests

test-slow: venv
	$(PY) -m pytest -q $(XDIST) -m "slow and not parity" $(PYTEST_ARGS) tests

# OpenVLA-OFT import parity (tests/parity_test.py): the torch reference (tests/parity_reference.py:
# timm SigLIP / DINOv2-reg4, transformers Llama) runs in its own venv, $(PARITY_VENV), on Python 3.11
# with requirements-parity.txt (torch/torchvision are large: ~5.7 GB); the JAX side runs in $(VENV).
# Two interpreters because the torch wheels at hand are for 3.11 and the project's venv is 3.12; the
# two sides meet only through the safetensors checkpoint and the reference logits on disk.
PARITY_VENV ?= .venv-parity
PYTHON311 ?= $(shell for p in python3.11 $$HOME/.pyenv/versions/3.11*/bin/python3.11 /usr/local/bin/python3.11 /usr/bin/python3.11; do \
  $$p -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)

$(PARITY_VENV)/.installed: requirements-parity.txt
	@if [ -z "$(PYTHON311)" ]; then echo "error: python3.11 not found (the parity venv's torch wheels are for 3.11); pass PYTHON311=/path/to/python3.11" >&2; exit 1; fi
	$(PYTHON311) -m venv $(PARITY_VENV)
	$(PARITY_VENV)/bin/python -m pip install --quiet -r requirements-parity.txt
	touch $@

test-parity: venv $(PARITY_VENV)/.installed
	PARITY_PYTHON=$(abspath $(PARITY_VENV))/bin/python $(PY) -m pytest -q -m parity $(PYTEST_ARGS) tests/parity_test.py

# A 1,000-step tiny run with host and device memory sampled every 50 steps (flat within 5% after
# warm-up); writes the curve to $(SOAK_OUT).
SOAK_OUT ?= soak.json
soak: venv
	SOAK_OUT=$(abspath $(SOAK_OUT)) $(PY) -m pytest -q -m soak $(PYTEST_ARGS) tests/soak_test.py

benchmark: venv
	$(PY) -m launch.benchmark --config=configs/benchmark.py:what=all

clean:
	rm -rf $(VENV) $(PARITY_VENV) .cache
